"""Versions of the input datasets wherever they live: local checksums, GCS generations, S3 ETags.

Bucket objects are never read, only their metadata, through the cloud clients.
"""

import os
from pathlib import Path

from risk_model.checksums import local_sha256
from risk_model.digest import digest
from risk_model.input_set import InputError, InputSet


def _bucket_and_key(rest: str, scheme: str, label: str) -> tuple[str, str]:
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise InputError(f"{label} is not a valid object URL: write {scheme}://<bucket>/<key>")
    return bucket, key


def _gcs_generation(bucket: str, key: str, label: str) -> str:
    try:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.cloud import storage
    except ImportError as exc:
        raise InputError(f"{label}: versioning gs:// inputs needs google-cloud-storage: install it ({exc})") from exc
    try:
        blob = storage.Client().bucket(bucket).get_blob(key)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise InputError(
            f"{label} cannot be checked: no Google Cloud credentials ({exc}); set GOOGLE_APPLICATION_CREDENTIALS "
            f"or run `gcloud auth application-default login`"
        ) from exc
    except api_exceptions.GoogleAPIError as exc:
        raise InputError(
            f"{label} cannot be checked ({exc}): check the bucket name and that the credentials may read it"
        ) from exc
    if blob is None:
        raise InputError(f"{label} does not exist: check the URL, or upload the object")
    return f"gcs-generation:{blob.generation}"


def _gdal_s3_endpoint() -> str | None:
    """The endpoint GDAL reads s3:// from, when only GDAL's variables name one.

    boto3 reads ``AWS_ENDPOINT_URL(_S3)`` itself; GDAL (which reads the rasters) uses
    ``AWS_S3_ENDPOINT`` and ``AWS_HTTPS``. Both must look at the same object.
    """
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    host = os.environ.get("AWS_S3_ENDPOINT")
    if not host:
        return None
    if "://" in host:
        return host
    insecure = os.environ.get("AWS_HTTPS", "YES").upper() in {"NO", "FALSE", "OFF", "0"}
    return f"{'http' if insecure else 'https'}://{host}"


def _s3_etag(bucket: str, key: str, label: str) -> str:
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:
        raise InputError(f"{label}: versioning s3:// inputs needs boto3: install it ({exc})") from exc
    try:
        # A new session per call: the environment (credentials, endpoint) is read now, not cached.
        client = boto3.session.Session().client("s3", endpoint_url=_gdal_s3_endpoint())
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}:
            raise InputError(f"{label} does not exist: check the bucket and key, or upload the object") from exc
        raise InputError(f"{label} cannot be checked ({exc}): check that the credentials may read the bucket") from exc
    except BotoCoreError as exc:  # no credentials, endpoint unreachable...
        raise InputError(
            f"{label} cannot be checked ({exc}): check the AWS credentials and endpoint (AWS_ENDPOINT_URL)"
        ) from exc
    etag = str(head["ETag"]).strip('"')  # S3 returns it quoted
    return f"s3-etag:{etag}"


def _local_version(path: Path, label: str, cache: Path | None) -> str:
    """A local file's SHA-256, or for a folder (a Zarr store) a hash of every file's path and SHA-256."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise InputError(f"{label} is an empty folder: point it at the dataset")
        tree = {str(p.relative_to(path)): local_sha256(p, f"{label} ({p.relative_to(path)})", cache) for p in files}
        return f"sha256-tree:{digest(tree, length=64)}"
    return local_sha256(path, label, cache)


def input_version(url: str, *, name: str | None = None, cache: Path | None = None) -> str:
    """The version of one input dataset: changes when its content changes.

    Parameters
    ----------
    url
        A local path (or ``file://`` URL) of a file or a folder (a Zarr store: every file in it
        is hashed), ``gs://bucket/key`` or ``s3://bucket/key``; GDAL's
        ``/vsigs/bucket/key`` and ``/vsis3/bucket/key`` are accepted too.
    name
        The input's role (``burn_probability``...), for error messages.
    cache
        Optional JSON file caching local files' checksums by path, size, mtime, ctime and
        inode. Without it every call reads the whole file: a multi-GB GeoTIFF takes seconds
        to minutes, on every observation. Files changed in the last 2 seconds are not cached
        (a later write could leave those stat values unchanged); a cache that cannot be read
        or written is ignored.

    Returns
    -------
    str
        ``sha256:<hex>`` of a local file's bytes (read in 8 MiB blocks); ``sha256-tree:<hex>`` of a
        local folder's files (relative paths and checksums); ``gcs-generation:<n>``
        of a Cloud Storage object (it changes on every overwrite, even with equal bytes);
        ``s3-etag:<etag>`` of an S3 object (MD5-based; a multipart upload's ETag also depends
        on the part size). Bucket objects are not read, only their metadata.

    Raises
    ------
    InputError
        If the file or object does not exist or cannot be read (the message names the input
        and what to do), if a local file changed while it was hashed, or if the URL scheme
        is not one of the above.
    """
    label = f"{name} input {url}" if name else f"input {url}"
    for prefix, scheme in (("gs://", "gs"), ("/vsigs/", "gs"), ("s3://", "s3"), ("/vsis3/", "s3")):
        if url.startswith(prefix):
            bucket, key = _bucket_and_key(url.removeprefix(prefix), scheme, label)
            return _gcs_generation(bucket, key, label) if scheme == "gs" else _s3_etag(bucket, key, label)
    if url.startswith("file://"):
        return _local_version(Path(url.removeprefix("file://")), label, cache)
    if "://" in url or url.startswith("/vsi"):
        raise InputError(
            f"{label}: cannot version this kind of URL: use a local path, gs://bucket/key or s3://bucket/key"
        )
    return _local_version(Path(url), label, cache)


def input_versions(inputs: InputSet, *, cache: Path | None = None) -> dict[str, str]:
    """The version of every input dataset, by name.

    Parameters
    ----------
    inputs
        The input locations.
    cache
        Optional checksum cache of local files (see :func:`input_version`).

    Returns
    -------
    dict
        ``burn_probability``, ``conditional_risk`` and ``wind_direction`` (or ``wind_hourly``)
        to their versions.

    Raises
    ------
    InputError
        If an input does not exist or cannot be read; the message names it.
    """
    return {role: input_version(str(getattr(inputs, role)), name=role, cache=cache) for role in inputs.roles}

"""Versions of the input datasets wherever they live: local checksums, GCS generations, S3 ETags.

Bucket objects are never read, only their metadata, through the cloud clients.
"""

from pathlib import Path

from resources.objects import ObjectURL, object_version, parse_object_url
from risk_model.checksums import local_sha256
from risk_model.digest import digest
from risk_model.input_set import InputError, InputSet


def _object_version(obj: ObjectURL, label: str) -> str:
    version = object_version(obj, label)
    if version is None:
        raise InputError(f"{label} does not exist: check the bucket and key, or upload the object")
    return version


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
    obj = parse_object_url(url, label)
    if obj is not None:
        return _object_version(obj, label)
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

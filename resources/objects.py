"""Bucket objects (``s3://`` and ``gs://``) through their cloud clients, and the endpoint variables
that make those clients and GDAL look at the same bucket.

boto3 reads ``AWS_ENDPOINT_URL(_S3)``, GDAL (which reads rasters) ``AWS_S3_ENDPOINT``, ``AWS_HTTPS``
and ``AWS_VIRTUAL_HOSTING``; google-cloud-storage reads ``STORAGE_EMULATOR_HOST``, GDAL
``CPL_GS_ENDPOINT``. A deployment may set either family: :func:`boto3_s3_endpoint` derives boto3's
endpoint from GDAL's variables, :func:`gdal_endpoint_options` GDAL's from the clients'. Unset, both
look at the real services.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from risk_model.errors import StoreUnavailableError
from risk_model.input_set import InputError

ObjectScheme = Literal["s3", "gs"]
_ObjectError = InputError | StoreUnavailableError
#: Bucket names both services accept: 3 to 63 lowercase letters, digits, dots, hyphens and (GCS)
#: underscores, starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_INSECURE = {"NO", "FALSE", "OFF", "0"}


#: S3 error codes of a busy or failing service, not of a wrong request: retry later.
_S3_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed"}


class ObjectUnreachableError(StoreUnavailableError):
    """A bucket's service did not answer or answered "busy" (connection refused, timeout, 5xx).

    Unlike :class:`~risk_model.input_set.InputError` (no such bucket, no credentials, access
    denied), nothing is wrong with what the user gave: the same run may succeed later. It is
    reported as a service to check and retry, not as bad input; region steps still fail without
    their retry policy, which is for lost pods (``risk_assets.assets``).
    """


@dataclass(frozen=True)
class ObjectURL:
    """One object in a bucket: ``scheme://bucket/key``."""

    scheme: ObjectScheme
    bucket: str
    key: str

    @property
    def url(self) -> str:
        """The ``s3://`` or ``gs://`` URL."""
        return f"{self.scheme}://{self.bucket}/{self.key}"

    @property
    def gdal_path(self) -> str:
        """GDAL's name of the object (``/vsis3/bucket/key`` or ``/vsigs/bucket/key``)."""
        return f"/vsi{self.scheme}/{self.bucket}/{self.key}"


def parse_object_url(url: str, label: str) -> ObjectURL | None:
    """The object ``url`` names, or None if it is not an ``s3://`` / ``gs://`` (or ``/vsis3/``, ``/vsigs/``) URL.

    Raises
    ------
    InputError
        If it has one of those schemes but no valid bucket name or no key.
    """
    for prefix, scheme in (("gs://", "gs"), ("/vsigs/", "gs"), ("s3://", "s3"), ("/vsis3/", "s3")):
        if url.startswith(prefix):
            bucket, _, key = url.removeprefix(prefix).partition("/")
            if not key or not _BUCKET.fullmatch(bucket):
                raise InputError(f"{label} is not a valid object URL: write {scheme}://<bucket>/<key>")
            return ObjectURL(scheme="gs" if scheme == "gs" else "s3", bucket=bucket, key=key)
    return None


def boto3_s3_endpoint() -> str | None:
    """The endpoint boto3 must use when only GDAL's variables name one (else boto3 reads its own)."""
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    host = os.environ.get("AWS_S3_ENDPOINT")
    if not host:
        return None
    if "://" in host:
        return host
    insecure = os.environ.get("AWS_HTTPS", "YES").upper() in _INSECURE
    return f"{'http' if insecure else 'https'}://{host}"


def gdal_endpoint_options() -> dict[str, str]:
    """GDAL configuration options for the endpoints that only the cloud clients' variables name.

    ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) becomes ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and
    path-style addressing (``AWS_VIRTUAL_HOSTING=FALSE``, what boto3 uses for a custom endpoint);
    ``STORAGE_EMULATOR_HOST`` (an emulator, which takes no credentials) becomes ``CPL_GS_ENDPOINT``
    with unsigned requests. GDAL's own variables, when set, win: nothing is derived for that service.
    Pass the result to ``rasterio.Env``.
    """
    options: dict[str, str] = {}
    s3 = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if s3 and not os.environ.get("AWS_S3_ENDPOINT"):
        parts = urlsplit(s3)
        options["AWS_S3_ENDPOINT"] = parts.netloc + parts.path.rstrip("/")
        options["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator and not os.environ.get("CPL_GS_ENDPOINT"):
        options["CPL_GS_ENDPOINT"] = emulator.rstrip("/") + "/"
        options["GS_NO_SIGN_REQUEST"] = "YES"
    return options


def _s3_client() -> Any:  # boto3 clients are untyped here
    import boto3

    # A new session per call: the environment (credentials, endpoint) is read now, not cached.
    return boto3.session.Session().client("s3", endpoint_url=boto3_s3_endpoint())


def _s3_busy(exc: Any) -> bool:  # a botocore ClientError
    """Whether an S3 error answer means "busy or failing, retry" rather than "wrong request"."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in _S3_BUSY or (isinstance(status, int) and status >= 500)


def _s3_transport_error(exc: Exception, what: str) -> _ObjectError:
    """The error for a request that got no answer: missing credentials are the user's to fix,
    anything else (connection refused, timeout, reset) is an unreachable service."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return InputError(f"{what} ({exc}): set the AWS credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
    return ObjectUnreachableError(
        f"{what} ({exc}): the endpoint did not answer; check it (AWS_ENDPOINT_URL) and the network, then retry"
    )


def _gcs_api_error(exc: Exception, what: str, advice: str) -> _ObjectError:
    """The error for a GCS error answer: 5xx and 429 are a busy service, the rest the request's fault."""
    from google.api_core import exceptions as api_exceptions

    if isinstance(exc, api_exceptions.ServerError | api_exceptions.TooManyRequests | api_exceptions.RetryError):
        return ObjectUnreachableError(f"{what} now ({exc}): retry later")
    return InputError(f"{what} ({exc}): {advice}")


def _gcs_bucket(obj: ObjectURL, label: str, doing: str) -> Any:  # the client is untyped here
    try:
        from google.auth import exceptions as auth_exceptions
        from google.cloud import storage
    except ImportError as exc:
        raise InputError(f"{label}: {doing} gs:// objects needs google-cloud-storage: install it ({exc})") from exc
    try:
        return storage.Client().bucket(obj.bucket)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise InputError(
            f"{label} cannot be reached for {doing}: no Google Cloud credentials ({exc}); set "
            "GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`"
        ) from exc


def object_version(obj: ObjectURL, label: str) -> str | None:
    """The version of an object: ``s3-etag:<etag>`` or ``gcs-generation:<n>``; None if it does not exist.

    Only the object's metadata is read.

    Raises
    ------
    InputError
        If the bucket cannot be read for a reason the user must fix (no such bucket, no
        credentials, access denied); the message names the object and what to check.
    ObjectUnreachableError
        If the service did not answer (endpoint down, timeout) or answered busy (5xx, slow down).
    """
    if obj.scheme == "gs":
        return _gcs_generation(obj, label)
    try:
        import boto3  # noqa: F401  # only to give a clear error when it is missing
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError as URLLib3Error
    except ImportError as exc:
        raise InputError(f"{label}: reading s3:// objects needs boto3: install it ({exc})") from exc
    try:
        head = _s3_client().head_object(Bucket=obj.bucket, Key=obj.key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound"}:
            return None
        if code == "NoSuchBucket":
            raise InputError(f"{label}: bucket {obj.bucket!r} does not exist: check the bucket and key") from exc
        if _s3_busy(exc):
            raise ObjectUnreachableError(f"{label} cannot be checked now ({exc}): retry later") from exc
        raise InputError(f"{label} cannot be checked ({exc}): check that the credentials may read the bucket") from exc
    except (BotoCoreError, URLLib3Error) as exc:  # no credentials, endpoint unreachable, connection reset
        raise _s3_transport_error(exc, f"{label} cannot be checked") from exc
    return f"s3-etag:{str(head['ETag']).strip(chr(34))}"  # S3 returns the ETag quoted


def _gcs_generation(obj: ObjectURL, label: str) -> str | None:
    from google.api_core import exceptions as api_exceptions

    bucket = _gcs_bucket(obj, label, "reading")
    try:
        # None for a missing object, and for a missing bucket too (the client hides the difference).
        found = bucket.get_blob(obj.key)
    except api_exceptions.GoogleAPIError as exc:
        raise _gcs_api_error(
            exc, f"{label} cannot be checked", "check the bucket name and that the credentials may read it"
        ) from exc
    except OSError as exc:  # connection refused, DNS: requests' errors are OSErrors
        raise ObjectUnreachableError(
            f"{label} cannot be checked ({exc}): the endpoint did not answer; check it (STORAGE_EMULATOR_HOST) "
            "and the network, then retry"
        ) from exc
    return None if found is None else f"gcs-generation:{found.generation}"


def put_file(path: Path, obj: ObjectURL, label: str, *, content_type: str = "application/octet-stream") -> str:
    """Upload a local file whole as ``obj``; readers see the old object or the new one, never a part.

    S3: one ``PutObject`` of the whole file (an object appears only when its PUT completes). GCS:
    google-cloud-storage's upload (a single request up to 8 MiB, a resumable session above); the
    object's new generation appears only when the upload is finalized.

    Returns
    -------
    str
        The new object's version (:func:`object_version`'s form).

    Raises
    ------
    InputError
        If the bucket cannot be written for a reason the user must fix (no such bucket, no
        credentials, access denied); the message names the object and what to check.
    ObjectUnreachableError
        If the service did not answer or answered busy.
    """
    if obj.scheme == "gs":
        from google.api_core import exceptions as api_exceptions

        blob = _gcs_bucket(obj, label, "writing").blob(obj.key)
        try:
            blob.upload_from_filename(str(path), content_type=content_type)
        except api_exceptions.GoogleAPIError as exc:
            raise _gcs_api_error(
                exc, f"{label} cannot be written", "check the bucket name and that the credentials may write it"
            ) from exc
        except OSError as exc:
            raise ObjectUnreachableError(
                f"{label} cannot be written ({exc}): the endpoint did not answer; check it (STORAGE_EMULATOR_HOST) "
                "and the network, then retry"
            ) from exc
        return f"gcs-generation:{blob.generation}"
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError as URLLib3Error

    try:
        with path.open("rb") as body:
            answer = _s3_client().put_object(Bucket=obj.bucket, Key=obj.key, Body=body, ContentType=content_type)
    except ClientError as exc:
        if _s3_busy(exc):
            raise ObjectUnreachableError(f"{label} cannot be written now ({exc}): retry later") from exc
        raise InputError(
            f"{label} cannot be written ({exc}): check the bucket name and that the credentials may write it"
        ) from exc
    except (BotoCoreError, URLLib3Error) as exc:
        raise _s3_transport_error(exc, f"{label} cannot be written") from exc
    return f"s3-etag:{str(answer['ETag']).strip(chr(34))}"

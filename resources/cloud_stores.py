"""The repository in a bucket: S3-compatible stores and Google Cloud Storage.

Cloud clients are imported inside the methods that use them: only deployments on that
cloud need them at run time.
"""

import os
import posixpath
import threading
from typing import TYPE_CHECKING, Any

from pydantic import Field

from resources.lease_objects import LeaseIOError
from resources.store import IcechunkStore

if TYPE_CHECKING:
    import icechunk  # imported where a repository is opened (see resources.store)

# Answers of a conditional S3 request that lost (412, 409) or found nothing (404): not failures.
_S3_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"})
# S3 clients by (process, settings): see S3IcechunkStore._client.
_CLIENTS: dict[tuple[object, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


class S3IcechunkStore(IcechunkStore):
    """A repository in an S3-compatible bucket (AWS, MinIO, moto...).

    Concurrent commits are safe: Icechunk uses the store's conditional writes.
    """

    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None
    allow_http: bool = False
    force_path_style: bool = False
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def storage(self) -> "icechunk.Storage":
        """S3 storage; without explicit keys, credentials come from the environment."""
        import icechunk

        explicit = self.access_key_id is not None
        return icechunk.s3_storage(
            bucket=self.bucket,
            prefix=self.prefix,
            region=self.region,
            endpoint_url=self.endpoint_url,
            allow_http=self.allow_http,
            force_path_style=self.force_path_style,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            from_env=None if explicit else True,
        )

    def location(self) -> str:
        """``s3://bucket/prefix`` (plus the endpoint when not AWS)."""
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    def _release_key(self, tag: str, name: str) -> str:
        return posixpath.join(posixpath.dirname(self.prefix.rstrip("/")), "releases", tag, name)

    def _client(self) -> Any:
        settings = (
            os.getpid(),  # a client's connections must not cross a fork
            self.endpoint_url,
            self.region,
            self.access_key_id,
            self.secret_access_key,
            self.request_max_tries,
        )
        # One client per process and settings: making one costs 7 ms (140 ms the first time), and
        # batch commits make many small requests (the pending forks). Clients are thread-safe;
        # boto3's default session, which makes them, is not: hence the lock.
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(settings)
            if client is None:
                client = _CLIENTS[settings] = self._new_client()
        return client

    def _new_client(self) -> Any:
        import boto3  # only deployments on S3 need it at run time
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            # The lease objects ride out what Icechunk's requests ride out (see request_max_tries).
            config=Config(retries={"mode": "standard", "total_max_attempts": self.request_max_tries}),
        )

    def write_release_file(self, tag: str, name: str, data: bytes) -> str:
        """Put the object ``releases/<tag>/<name>`` beside the repository's prefix."""
        key = self._release_key(tag, name)
        self._client().put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def read_release_file(self, tag: str, name: str) -> bytes:
        """Get the object (``FileNotFoundError`` if it does not exist)."""
        client = self._client()
        try:
            body = client.get_object(Bucket=self.bucket, Key=self._release_key(tag, name))["Body"]
        except client.exceptions.NoSuchKey as err:
            raise FileNotFoundError(f"s3://{self.bucket}/{self._release_key(tag, name)}") from err
        return bytes(body.read())

    # Lease objects (resources.lease_objects), with the same conditional writes Icechunk commits with.

    def _lease_key(self, name: str) -> str:
        # A sibling of the repository's prefix: Icechunk's layout under the prefix stays its own.
        return f"{self.prefix.rstrip('/')}.leases/{name}"

    def lease_location(self) -> str:
        """``s3://bucket/<prefix>.leases/``."""
        return f"s3://{self.bucket}/{self._lease_key('')}"

    def _lease_call(self, name: str, method: str, **kwargs: Any) -> Any:
        """The S3 client's ``method`` on lease object ``name``; ``None`` if a condition failed or it is absent."""
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError as URLLib3Error

        try:
            answer = getattr(self._client(), method)(Bucket=self.bucket, Key=self._lease_key(name), **kwargs)
            if "Body" in answer:
                answer["Body"] = answer["Body"].read()
            return answer
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _S3_LOST_RACE_CODES:
                return None
            raise LeaseIOError(f"{method} of {self.lease_location()}{name} failed: {err}") from err
        except (BotoCoreError, URLLib3Error) as err:
            # urllib3's: a connection reset while botocore reads an answer's body reaches us
            # unwrapped once its retries are spent (seen in the store-outage test).
            raise LeaseIOError(f"{method} of {self.lease_location()}{name} failed: {err}") from err

    def create_lease_object(self, name: str, data: bytes) -> str | None:
        """``PutObject`` with ``If-None-Match: *``: the ETag, or ``None`` if the object exists."""
        answer = self._lease_call(name, "put_object", Body=data, IfNoneMatch="*")
        return None if answer is None else str(answer["ETag"])

    def read_lease_object(self, name: str) -> tuple[bytes, str] | None:
        """``GetObject``: the body and ETag, or ``None`` if absent."""
        answer = self._lease_call(name, "get_object")
        return None if answer is None else (bytes(answer["Body"]), str(answer["ETag"]))

    def replace_lease_object(self, name: str, data: bytes, version: str) -> str | None:
        """``PutObject`` with ``If-Match: <ETag>``: the new ETag, or ``None`` if it changed or vanished."""
        answer = self._lease_call(name, "put_object", Body=data, IfMatch=version)
        return None if answer is None else str(answer["ETag"])

    def delete_lease_object(self, name: str) -> None:
        """``DeleteObject`` (S3 answers success for an absent key)."""
        self._lease_call(name, "delete_object")

    def list_lease_objects(self) -> list[str]:
        """``ListObjectsV2`` under the lease prefix, all pages."""
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError as URLLib3Error

        prefix = self._lease_key("")
        try:
            pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [str(item["Key"])[len(prefix) :] for page in pages for item in page.get("Contents", [])]
        except (BotoCoreError, ClientError, URLLib3Error) as err:
            raise LeaseIOError(f"listing {self.lease_location()} failed: {err}") from err


class GCSIcechunkStore(IcechunkStore):
    """A repository in a Google Cloud Storage bucket.

    By default Icechunk authenticates with application default credentials: on GKE those come
    from Workload Identity and no key file is configured. With :attr:`service_account_file`
    it uses that key file instead; a key file may also name another API endpoint
    (``gcs_base_url``, with ``disable_oauth``), which is how the tests point this class at
    fake-gcs-server on 127.0.0.1 (``tests/_gcs.py``). Release files go through
    google-cloud-storage, which uses application default credentials too (or
    ``STORAGE_EMULATOR_HOST`` when set).

    What the emulator serves is tested in ``tests/test_gcs_emulator.py``: Icechunk reads a
    repository there, release files, input generations and Dagster's compute logs work.
    Icechunk cannot write there: fake-gcs-server 1.54 has no route for the XML API's plain
    object ``PUT`` that Icechunk's storage layer uses (it answers ``400 invalid uploadType``),
    so repository writes and concurrent commits on GCS remain tested on S3 (moto) only.
    ``docs/deploy.md`` ("GCS emulator") has the exact error.
    """

    bucket: str
    prefix: str
    service_account_file: str | None = Field(
        default=None,
        description=(
            "Path of a service-account JSON key file for Icechunk. Unset (the default, and on GKE): "
            "application default credentials. The file may carry `gcs_base_url` and `disable_oauth` "
            "to reach another endpoint, such as an emulator."
        ),
    )

    def storage(self) -> "icechunk.Storage":
        """GCS storage with the key file if one is configured, else application default credentials."""
        import icechunk

        if self.service_account_file is not None:
            return icechunk.gcs_storage(
                bucket=self.bucket, prefix=self.prefix, service_account_file=self.service_account_file
            )
        return icechunk.gcs_storage(bucket=self.bucket, prefix=self.prefix, from_env=True)

    def location(self) -> str:
        """``gs://bucket/prefix``."""
        return f"gs://{self.bucket}/{self.prefix}"

    # Lease objects (resources.lease_objects): generation preconditions are GCS's conditional writes.

    def _lease_key(self, name: str) -> str:
        # A sibling of the repository's prefix: Icechunk's layout under the prefix stays its own.
        return f"{self.prefix.rstrip('/')}.leases/{name}"

    def lease_location(self) -> str:
        """``gs://bucket/<prefix>.leases/``."""
        return f"gs://{self.bucket}/{self._lease_key('')}"

    def _lease_blob(self, name: str) -> Any:
        from google.cloud import storage  # from dagster-gcp; only GCS deployments need it

        return storage.Client().bucket(self.bucket).blob(self._lease_key(name))

    def _lease_upload(self, name: str, data: bytes, generation: int) -> str | None:
        """Upload if the object is at ``generation`` (0: absent); its new generation, or ``None``."""
        from google.api_core.exceptions import GoogleAPICallError, NotFound, PreconditionFailed

        blob = self._lease_blob(name)
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=generation)
        except (PreconditionFailed, NotFound):
            return None
        except GoogleAPICallError as err:
            raise LeaseIOError(f"writing {self.lease_location()}{name} failed: {err}") from err
        return str(blob.generation)

    def create_lease_object(self, name: str, data: bytes) -> str | None:
        """Upload with ``if_generation_match=0``: the generation, or ``None`` if the object exists."""
        return self._lease_upload(name, data, 0)

    def read_lease_object(self, name: str) -> tuple[bytes, str] | None:
        """Download: the body and generation, or ``None`` if absent."""
        from google.api_core.exceptions import GoogleAPICallError, NotFound

        blob = self._lease_blob(name)
        try:
            data = bytes(blob.download_as_bytes())
        except NotFound:
            return None
        except GoogleAPICallError as err:
            raise LeaseIOError(f"reading {self.lease_location()}{name} failed: {err}") from err
        return data, str(blob.generation)

    def replace_lease_object(self, name: str, data: bytes, version: str) -> str | None:
        """Upload with ``if_generation_match=<generation>``: the new generation, or ``None``."""
        return self._lease_upload(name, data, int(version))

    def delete_lease_object(self, name: str) -> None:
        """Delete; an absent object is fine."""
        from google.api_core.exceptions import GoogleAPICallError, NotFound

        try:
            self._lease_blob(name).delete()
        except NotFound:
            pass
        except GoogleAPICallError as err:
            raise LeaseIOError(f"deleting {self.lease_location()}{name} failed: {err}") from err

    def list_lease_objects(self) -> list[str]:
        """The object names under the lease prefix."""
        from google.api_core.exceptions import GoogleAPICallError
        from google.cloud import storage

        prefix = self._lease_key("")
        try:
            return [str(b.name)[len(prefix) :] for b in storage.Client().list_blobs(self.bucket, prefix=prefix)]
        except GoogleAPICallError as err:
            raise LeaseIOError(f"listing {self.lease_location()} failed: {err}") from err

    def _blob(self, tag: str, name: str) -> Any:
        from google.cloud import storage  # from dagster-gcp; only GCS deployments need it

        key = posixpath.join(posixpath.dirname(self.prefix.rstrip("/")), "releases", tag, name)
        return storage.Client().bucket(self.bucket).blob(key)

    def write_release_file(self, tag: str, name: str, data: bytes) -> str:
        """Upload the object ``releases/<tag>/<name>`` beside the repository's prefix."""
        blob = self._blob(tag, name)
        blob.upload_from_string(data)
        return f"gs://{self.bucket}/{blob.name}"

    def read_release_file(self, tag: str, name: str) -> bytes:
        """Download the object (``FileNotFoundError`` if it does not exist)."""
        from google.api_core.exceptions import NotFound

        blob = self._blob(tag, name)
        try:
            return bytes(blob.download_as_bytes())
        except NotFound as err:
            raise FileNotFoundError(f"gs://{self.bucket}/{blob.name}") from err

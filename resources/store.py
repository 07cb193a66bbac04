"""Where the Icechunk repository lives: local disk, an S3-compatible store, or GCS.

One resource class per kind of storage, all subclasses of :class:`IcechunkStore`: the
deployment picks a class by configuration, the code never branches on an environment name.
Everything that opens the repository goes through :meth:`IcechunkStore.repository`, so an
unreachable or missing store fails the same way everywhere, with a message naming it.
"""

import fcntl
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import icechunk
from dagster import ConfigurableResource
from pydantic import Field


class StoreError(RuntimeError):
    """The repository cannot be opened or created: the message says which and what to do."""


class IcechunkStore(ConfigurableResource, ABC):  # type: ignore[type-arg]  # generic only for typing
    """Base of the Icechunk storage resources.

    Subclasses say where the repository is (:meth:`storage`, :meth:`location`) and whether
    commits need an outside lock (:meth:`commit_guard`).
    """

    branch: str = Field(default="main", description="Branch that region commits go to.")
    rebase_tries: int = Field(
        default=50,
        ge=1,
        le=1000,
        description=(
            "Rebase attempts inside one commit when other writers committed first. Icechunk's "
            "default is 1,000 with no backoff; we bound it and let Dagster retry the step instead."
        ),
    )

    @abstractmethod
    def storage(self) -> icechunk.Storage:
        """The Icechunk storage object for this location."""

    @abstractmethod
    def location(self) -> str:
        """A human-readable address of the repository, for messages and metadata."""

    @contextmanager
    def commit_guard(self) -> Iterator[None]:
        """Held around every ``commit()``; object stores rely on their conditional writes."""
        yield

    def repository(self, create: bool = False) -> icechunk.Repository:
        """Open the repository, creating it first if ``create`` is true.

        Raises
        ------
        StoreError
            If the repository does not exist (and ``create`` is false) or the storage cannot
            be reached.
        """
        try:
            if create:
                return icechunk.Repository.open_or_create(self.storage())
            return icechunk.Repository.open(self.storage())
        except icechunk.RepositoryNotFoundError as err:
            raise StoreError(
                f"no Icechunk repository at {self.location()}: materialize the raster_template "
                "asset first (or run `risk build`), or point the store configuration at the "
                "existing repository"
            ) from err
        except icechunk.IcechunkError as err:
            raise StoreError(
                f"cannot open the Icechunk repository at {self.location()}: {err}. Check that the "
                "location exists, is reachable from here, and that credentials allow access."
            ) from err


class LocalIcechunkStore(IcechunkStore):
    """A repository on the local filesystem.

    Icechunk's local storage is not safe for concurrent commits: in our measurements 2 to 10
    of 64 concurrent commits were silently lost, every worker having been handed a snapshot
    id. Serialising only ``commit()`` with an OS file lock made every run correct, so that is
    what :meth:`commit_guard` does. Writing chunks stays fully parallel.
    """

    path: str = Field(description="Directory of the repository.")

    def storage(self) -> icechunk.Storage:
        """Local filesystem storage at :attr:`path`."""
        # Icechunk warns on every open that local storage is unsafe for concurrent commits;
        # commit_guard is our answer to that, so the warning is noise here.
        icechunk.set_logs_filter("warn,icechunk_arrow_object_store=error")
        return icechunk.local_filesystem_storage(str(Path(self.path).resolve()))

    def location(self) -> str:
        """The repository's absolute path."""
        return str(Path(self.path).resolve())

    @property
    def lock_path(self) -> Path:
        """The lock file: beside the repository, so it is never part of it."""
        repo = Path(self.path).resolve()
        return repo.with_name(repo.name + ".commit-lock")

    @contextmanager
    def commit_guard(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on :attr:`lock_path` for the duration of a commit.

        ``flock`` is released by the kernel when the holder dies, so a killed worker never
        leaves the lock held.
        """
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor drops the lock


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

    def storage(self) -> icechunk.Storage:
        """S3 storage; without explicit keys, credentials come from the environment."""
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


class GCSIcechunkStore(IcechunkStore):
    """A repository in a Google Cloud Storage bucket, with application default credentials.

    On GKE those come from Workload Identity; no key file is ever configured. This class is
    deliberately thin: no GCS emulator speaks the API Icechunk uses, so it cannot be tested
    end to end offline.
    """

    bucket: str
    prefix: str

    def storage(self) -> icechunk.Storage:
        """GCS storage using the environment's application default credentials."""
        return icechunk.gcs_storage(bucket=self.bucket, prefix=self.prefix, from_env=True)

    def location(self) -> str:
        """``gs://bucket/prefix``."""
        return f"gs://{self.bucket}/{self.prefix}"

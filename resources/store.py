"""Where the Icechunk repository lives: local disk, an S3-compatible store, or GCS.

One resource class per kind of storage, all subclasses of :class:`IcechunkStore`: the
deployment picks a class by configuration, the code never branches on an environment name.
Everything that opens the repository goes through :meth:`IcechunkStore.repository`, so an
unreachable or missing store fails the same way everywhere, with a message naming it.
"""

import fcntl
import os
import posixpath
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import icechunk
from dagster import ConfigurableResource
from pydantic import Field

from resources import leases
from resources.leases import Lease, LeaseIOError
from resources.leases import MaintenanceActiveError as MaintenanceActiveError
from resources.leases import WritersActiveError as WritersActiveError
from risk_model.errors import BadInputError, StoreUnavailableError

# Answers of a conditional S3 request that lost (412, 409) or found nothing (404): not failures.
_S3_LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"})


class StoreError(StoreUnavailableError):
    """The repository cannot be opened or created: the message says which and what to do."""


class StoreLocationError(BadInputError):
    """The configured location cannot hold the repository: it is a file, holds something else, or is
    not writable. Retrying cannot help: point the store elsewhere or fix the location."""


class StoreFullError(BadInputError):
    """The store's file system is full (or over quota): every further write would fail the same way,
    so nothing is retried; free space, then build again."""


#: OS errors, as Icechunk words them, that mean the store's disk is full: ENOSPC and EDQUOT.
_DISK_FULL = ("(os error 28)", "(os error 122)")


def disk_full_error(store: "IcechunkStore", err: BaseException, doing: str) -> StoreFullError | None:
    """A :class:`StoreFullError` for ``err`` if it says the store's disk is full, else ``None``.

    Parameters
    ----------
    store
        The store being written.
    err
        What Icechunk (or the OS) raised.
    doing
        What was being written, for the message (e.g. "writing region y0_x1").
    """
    text = str(err)
    if not (isinstance(err, OSError) and err.errno in (28, 122)) and not any(code in text for code in _DISK_FULL):
        return None
    return StoreFullError(
        f"the store {store.location()} is out of space ({icechunk_reason(err).split(': ')[-1]}) while {doing}: "
        "nothing of it was committed, and regions committed before are kept. Free space on that disk (or "
        "move the store to a larger one), then run `risk build` again"
    )


def icechunk_reason(err: BaseException) -> str:
    """Icechunk's message without the trace of Rust frames it appends (``context: ...``)."""
    return str(err).split("\n\ncontext:")[0].strip() or type(err).__name__


@contextmanager
def _flock(path: Path, operation: int) -> Iterator[None]:
    """Hold ``fcntl.flock(operation)`` on ``path`` (created if needed) for the duration.

    The kernel drops the lock when the descriptor closes or its holder dies, so a killed
    process never leaves it held. ``LOCK_NB`` makes a held lock raise ``BlockingIOError``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)


class IcechunkStore(ConfigurableResource, ABC):  # type: ignore[type-arg]  # generic only for typing
    """Base of the Icechunk storage resources.

    Subclasses say where the repository is (:meth:`storage`, :meth:`location`) and whether
    commits need an outside lock (:meth:`commit_guard`). Writers and maintenance exclude each
    other through :meth:`writer_lease` and :meth:`maintenance_lock`: here, for object stores,
    through lease objects beside the repository (:mod:`resources.leases`), on the five
    ``*_lease_object`` operations that each object store implements.
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
    writer_lease_ttl_s: float = Field(
        default=1800,
        gt=0,
        description=(
            "Object stores: a writer lease expires this many seconds after its last renewal (renewed every "
            "third of it while the writer lives), so a dead writer blocks maintenance at most this long."
        ),
    )
    maintenance_lock_ttl_s: float = Field(
        default=600,
        gt=0,
        description=(
            "Object stores: the maintenance lock expires this many seconds after its last renewal, so a "
            "dead maintenance blocks writers at most this long."
        ),
    )
    lease_wait_s: float = Field(
        default=900,
        ge=0,
        description=(
            "Object stores: how long a writer waits, backing off, while maintenance holds its lock, "
            "before it gives up with MaintenanceActiveError (retry later)."
        ),
    )

    # Riding out a store that is gone for a few seconds (a restart, a network blip): both knobs
    # apply to Icechunk's own storage requests and, on object stores, to the lease objects' too.
    # Measured against the S3 emulator behind a proxy refusing connections (tests/test_store_outage.py):
    # Icechunk's defaults (10 tries from 100 ms, doubling, full jitter) gave up after 26-27 s of outage
    # and rode out 25 s once, but with full jitter a short run of small draws can end the tries
    # within a few seconds; botocore's default ("legacy", 5 attempts) failed the lease objects'
    # requests within a 5 s outage, failing 11 of 16 region writes. The defaults below retry for
    # tens of seconds with the longest waits capped, so outages of a few seconds are transparent.
    request_max_tries: int = Field(
        default=16,
        ge=1,
        le=100,
        description=(
            "Tries of each storage request (Icechunk's StorageRetriesSettings.max_tries; on object stores "
            "also the lease objects' requests, botocore 'standard' retry mode), including the first. 1 "
            "disables retries. Waits double from 100 ms, with full jitter, up to request_max_backoff_ms."
        ),
    )
    request_max_backoff_ms: int = Field(
        default=10_000,
        ge=100,
        description="Longest wait between two tries of a storage request (Icechunk's max_backoff_ms).",
    )

    @abstractmethod
    def storage(self) -> icechunk.Storage:
        """The Icechunk storage object for this location."""

    def repository_config(self) -> icechunk.RepositoryConfig:
        """The repository settings this resource opens the repository with: its storage retries."""
        retries = icechunk.StorageRetriesSettings(
            max_tries=self.request_max_tries, initial_backoff_ms=100, max_backoff_ms=self.request_max_backoff_ms
        )
        return icechunk.RepositoryConfig(storage=icechunk.StorageSettings(retries=retries))

    @abstractmethod
    def location(self) -> str:
        """A human-readable address of the repository, for messages and metadata."""

    @contextmanager
    def commit_guard(self) -> Iterator[None]:
        """Held around every ``commit()``; object stores rely on their conditional writes."""
        yield

    @contextmanager
    def writer_lease(self) -> Iterator[None]:
        """Held by a region writer from before it opens its session until after its commit.

        Maintenance (:mod:`resources.maintenance`) cannot start while any unexpired lease is
        held, and a new writer waits while maintenance holds its lock. Here, for object
        stores, the lease is an object beside the repository (:mod:`resources.leases`, built
        on the ``*_lease_object`` methods); local stores override this with a file lock.

        Raises
        ------
        MaintenanceActiveError
            If maintenance held its lock for longer than :attr:`lease_wait_s`.
        """
        with leases.writer_lease(self, ttl_s=self.writer_lease_ttl_s, wait_s=self.lease_wait_s):
            yield

    @contextmanager
    def maintenance_lock(self, wait_for_writers_s: float = 0.0) -> Iterator[None]:
        """Held by maintenance (snapshot expiry, garbage collection) for its whole duration.

        Here, for object stores: the ``maintenance`` lock object of :mod:`resources.leases`,
        taken only while no unexpired writer lease exists; local stores override this with a
        file lock.

        Parameters
        ----------
        wait_for_writers_s
            How long to hold the lock waiting for live writers to finish (new writers wait
            meanwhile) before refusing; 0 refuses at once.

        Raises
        ------
        WritersActiveError
            If any writer holds an unexpired lease (or another maintenance holds the lock).
        """
        with leases.maintenance_lock(self, ttl_s=self.maintenance_lock_ttl_s, wait_for_writers_s=wait_for_writers_s):
            yield

    def live_writer_leases(self) -> list[Lease]:
        """The unexpired writer leases, oldest first: maintenance keeps its GC cut-off older than them.

        Raises
        ------
        LeaseIOError
            If the lease objects cannot be listed or read.
        """
        return leases.live_writer_leases(self)

    # The object operations of resources.leases.LeaseObjects. Object stores implement them;
    # local stores lock with flock instead and never call them.

    def lease_location(self) -> str:
        """Where the lease objects are, for messages."""
        return f"{self.location()}.leases"

    def create_lease_object(self, name: str, data: bytes) -> str | None:
        """Create lease object ``name`` only if absent; its version, or ``None`` if it existed."""
        raise NotImplementedError(f"{type(self).__name__} keeps no lease objects")

    def read_lease_object(self, name: str) -> tuple[bytes, str] | None:
        """The body and version of lease object ``name``, or ``None`` if absent."""
        raise NotImplementedError(f"{type(self).__name__} keeps no lease objects")

    def replace_lease_object(self, name: str, data: bytes, version: str) -> str | None:
        """Overwrite lease object ``name`` only if still at ``version``; the new version, or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no lease objects")

    def delete_lease_object(self, name: str) -> None:
        """Delete lease object ``name`` (no error if absent)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no lease objects")

    def list_lease_objects(self) -> list[str]:
        """Names of the lease objects."""
        raise NotImplementedError(f"{type(self).__name__} keeps no lease objects")

    @abstractmethod
    def write_release_file(self, tag: str, name: str, data: bytes) -> str:
        """Write ``name`` (a manifest, a picture) of release ``tag`` next to the repository.

        Returns
        -------
        str
            The file's address, for metadata and messages.
        """

    @abstractmethod
    def read_release_file(self, tag: str, name: str) -> bytes:
        """Read back a file written by :meth:`write_release_file` (``FileNotFoundError`` if absent)."""

    def exists(self) -> bool:
        """Whether the location holds an Icechunk repository.

        Raises
        ------
        StoreError
            If the storage cannot be reached.
        """
        try:
            return bool(icechunk.Repository.exists(self.storage()))
        except icechunk.IcechunkError as err:
            raise StoreError(
                f"cannot reach the Icechunk repository at {self.location()}: {icechunk_reason(err)}. Check "
                "that the location exists, is reachable from here, and that credentials allow access."
            ) from err

    def check_location(self) -> None:
        """Refuse, before anything is written, a location that cannot hold the repository.

        Object stores check nothing here: their access fails, with its reason, on first use.

        Raises
        ------
        StoreLocationError
            If the location cannot hold the repository (see the local store).
        """

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
                return icechunk.Repository.open_or_create(self.storage(), config=self.repository_config())
            return icechunk.Repository.open(self.storage(), config=self.repository_config())
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

    def check_location(self) -> None:
        """Refuse a path that is a file, a folder holding something other than a repository, or not writable.

        Writability is tried, not inferred from permission bits (root ignores them): a file is
        created and removed in the repository's folder, or in its nearest existing ancestor when
        the folder does not exist yet (nothing is created there otherwise).

        Raises
        ------
        StoreLocationError
            Naming the path, what is wrong and what to do.
        StoreError
            If Icechunk cannot tell whether the folder holds a repository.
        """
        path = Path(self.path).resolve()
        fix = "point the store at a new or empty folder (RISK_STORE or the project folder's var/store)"
        if path.exists() and not path.is_dir():
            raise StoreLocationError(
                f"store path {path} is a file, not an Icechunk repository: {fix}, or move the file away"
            )
        if path.is_dir() and any(path.iterdir()) and not self.exists():
            held = ", ".join(sorted(p.name for p in path.iterdir())[:5])
            raise StoreLocationError(
                f"store path {path} holds something that is not an Icechunk repository ({held}): {fix}, "
                "or move its contents away; nothing was written"
            )
        probe_dir = path
        while not probe_dir.exists() and probe_dir != probe_dir.parent:
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise StoreLocationError(f"store path {path} cannot be created: {probe_dir} is a file, not a folder: {fix}")
        try:
            fd, probe = tempfile.mkstemp(prefix=".risk-write-probe-", dir=probe_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise StoreLocationError(
                f"store path {path} is not writable ({probe_dir}: {err.strerror}): make it writable "
                f"(for a read-only mount, remount it read-write) or {fix}; nothing was written"
            ) from err

    @property
    def releases_dir(self) -> Path:
        """Release manifests and pictures: ``releases/<tag>/`` beside the repository."""
        return Path(self.path).resolve().parent / "releases"

    def write_release_file(self, tag: str, name: str, data: bytes) -> str:
        """Write the file atomically (a temporary file renamed into place)."""
        target = self.releases_dir / tag / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)
        return str(target)

    def read_release_file(self, tag: str, name: str) -> bytes:
        """The file's bytes."""
        return (self.releases_dir / tag / name).read_bytes()

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
        with _flock(self.lock_path, fcntl.LOCK_EX):
            yield

    @property
    def writers_lock_path(self) -> Path:
        """The lease file of writers and maintenance: beside the repository, never part of it."""
        repo = Path(self.path).resolve()
        return repo.with_name(repo.name + ".writers-lock")

    @contextmanager
    def writer_lease(self) -> Iterator[None]:
        """Hold a shared ``flock`` on :attr:`writers_lock_path` for the duration.

        Any number of writers hold it at once. While maintenance holds the exclusive lock,
        a new writer waits here until maintenance is done; the kernel releases the lease of
        a writer that dies.
        """
        with _flock(self.writers_lock_path, fcntl.LOCK_SH):
            yield

    @contextmanager
    def maintenance_lock(self, wait_for_writers_s: float = 0.0) -> Iterator[None]:
        """Hold an exclusive ``flock`` on :attr:`writers_lock_path`, without blocking on it.

        While it is held, new writers wait in :meth:`writer_lease`.

        Parameters
        ----------
        wait_for_writers_s
            How long to keep trying while writers hold leases. Best effort: unlike on object
            stores, new writers are not held back meanwhile.

        Raises
        ------
        WritersActiveError
            If any region writer holds a lease (or other maintenance holds the lock).
        """
        refusal = (
            f"refusing maintenance of {self.location()}: region writers hold leases on it "
            f"({self.writers_lock_path}). Wait for the running region writers to finish, or "
            "stop them, then run maintenance again; nothing was changed"
        )
        self.writers_lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.writers_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait_for_writers_s
            delay = 0.25
            # Bounded by the deadline; the range only makes a bound visible.
            for _ in range(100_000):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as err:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WritersActiveError(refusal) from err
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 5.0)
            else:
                raise WritersActiveError(refusal)
            yield
        finally:
            # Closing the descriptor releases the lock.
            os.close(fd)

    def live_writer_leases(self) -> list[Lease]:
        """None: while maintenance holds the exclusive lock, no writer can hold a lease."""
        return []


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

    def _release_key(self, tag: str, name: str) -> str:
        return posixpath.join(posixpath.dirname(self.prefix.rstrip("/")), "releases", tag, name)

    def _client(self) -> Any:
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

    # Lease objects (resources.leases), with the same conditional writes Icechunk commits with.

    def _lease_key(self, name: str) -> str:
        # A sibling of the repository's prefix: Icechunk's layout under the prefix stays its own.
        return f"{self.prefix.rstrip('/')}.leases/{name}"

    def lease_location(self) -> str:
        """``s3://bucket/<prefix>.leases/``."""
        return f"s3://{self.bucket}/{self._lease_key('')}"

    def _lease_call(self, name: str, method: str, **kwargs: Any) -> Any:
        """The S3 client's ``method`` on lease object ``name``; ``None`` if a condition failed or it is absent."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = getattr(self._client(), method)(Bucket=self.bucket, Key=self._lease_key(name), **kwargs)
            if "Body" in answer:
                answer["Body"] = answer["Body"].read()
            return answer
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _S3_LOST_RACE_CODES:
                return None
            raise LeaseIOError(f"{method} of {self.lease_location()}{name} failed: {err}") from err
        except BotoCoreError as err:
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

        prefix = self._lease_key("")
        try:
            pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [str(item["Key"])[len(prefix) :] for page in pages for item in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as err:
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

    def storage(self) -> icechunk.Storage:
        """GCS storage with the key file if one is configured, else application default credentials."""
        if self.service_account_file is not None:
            return icechunk.gcs_storage(
                bucket=self.bucket, prefix=self.prefix, service_account_file=self.service_account_file
            )
        return icechunk.gcs_storage(bucket=self.bucket, prefix=self.prefix, from_env=True)

    def location(self) -> str:
        """``gs://bucket/prefix``."""
        return f"gs://{self.bucket}/{self.prefix}"

    # Lease objects (resources.leases): generation preconditions are GCS's conditional writes.

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

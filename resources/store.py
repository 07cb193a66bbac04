"""Where the Icechunk repository lives: the resource every kind of storage subclasses.

One class per kind of storage, all subclasses of :class:`IcechunkStore`
(:mod:`resources.local_store`, :mod:`resources.cloud_stores`): the
deployment picks a class by configuration, the code never branches on an environment name.
Everything that opens the repository goes through :meth:`IcechunkStore.repository`, so an
unreachable or missing store fails the same way everywhere, with a message naming it.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from resources import lease_objects, leases
from resources.lease_objects import Lease
from resources.leases import MaintenanceActiveError as MaintenanceActiveError
from resources.leases import WritersActiveError as WritersActiveError
from risk_model.errors import BadInputError, StoreUnavailableError

if TYPE_CHECKING:
    # Imported where a repository is opened: Icechunk (with Zarr) is about half a second to import,
    # and `risk build` decides that nothing is to run without it when it can (refs_digest below).
    import icechunk


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


class IcechunkStore(BaseModel, ABC):
    """Base of the Icechunk storage resources.

    A plain pydantic model, not a Dagster ``ConfigurableResource``: ``risk build`` decides a rerun
    with nothing to do, and region writer processes commit, without importing Dagster (about a
    second). The code location passes it to Dagster as a resource object, which its assets ask
    for as ``ResourceParam[IcechunkStore]``.

    Subclasses say where the repository is (:meth:`storage`, :meth:`location`) and whether
    commits need an outside lock (:meth:`commit_guard`). Writers and maintenance exclude each
    other through :meth:`writer_lease` and :meth:`maintenance_lock`: here, for object stores,
    through lease objects beside the repository (:mod:`resources.leases`), on the five
    ``*_lease_object`` operations that each object store implements.
    """

    # Frozen, and no unknown fields: as Dagster's configurable resources are.
    model_config = ConfigDict(frozen=True, extra="forbid")

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

    commit_protocol: Literal["batch", "direct"] = Field(
        default="batch",
        description=(
            "How region writers commit. 'batch': a writer writes its region into a fork of a session, "
            "hands the fork over as a pending object beside the repository, and whichever writer holds "
            "the commit lease commits every pending fork in one commit (resources/batch_handoff.py; "
            "docs/scale.md: no rebases, commit p50 0.31 of direct at 16 writers on the S3 emulator). "
            "'direct': each writer commits its own region, rebasing over the others."
        ),
    )
    commit_lease_ttl_s: float = Field(
        default=60,
        gt=0,
        description=(
            "Batch commits: the commit lease expires this many seconds after its last renewal (renewed "
            "every third of it while its holder lives), so a dead committer holds the others back at most "
            "this long."
        ),
    )
    commit_wait_s: float = Field(
        default=900,
        gt=0,
        description=(
            "Batch commits: how long a writer waits for its region's commit (committing itself whenever "
            "it gets the commit lease) before it gives up with CommitWaitTimeoutError; its pending fork "
            "stays for the next committer."
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
    def storage(self) -> "icechunk.Storage":
        """The Icechunk storage object for this location."""

    def repository_config(self) -> "icechunk.RepositoryConfig":
        """The repository settings this resource opens the repository with: its storage retries."""
        import icechunk

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
    def writer_lease(self) -> Iterator[Lease | None]:
        """Held by a region writer from before it opens its session until after its commit.

        Maintenance (:mod:`resources.maintenance`) cannot start while any unexpired lease is
        held, and a new writer waits while maintenance holds its lock. Here, for object
        stores, the lease is an object beside the repository (:mod:`resources.leases`, built
        on the ``*_lease_object`` methods); local stores override this with a file lock.

        Yields
        ------
        Lease | None
            The lease object as first written (``None`` where the lease is not an object).

        Raises
        ------
        MaintenanceActiveError
            If maintenance held its lock for longer than :attr:`lease_wait_s`.
        """
        with leases.writer_lease(self, ttl_s=self.writer_lease_ttl_s, wait_s=self.lease_wait_s) as lease:
            yield lease

    def writer_alive(self, lease_name: str | None, host: str, pid: int) -> bool:
        """Whether the writer that took lease ``lease_name`` (on ``host``, as ``pid``) still holds it.

        Here, for object stores: its lease object exists and has not expired.

        Raises
        ------
        LeaseIOError
            If the lease object cannot be read.
        """
        if lease_name is None:
            return False
        found = self.read_lease_object(lease_name)
        return found is not None and not Lease.decode(lease_name, found[0]).expired()

    @contextmanager
    def commit_lease(self) -> Iterator[bool]:
        """Try once, without waiting, to become the batch committer; yields whether this process is.

        Here, for object stores: the ``commit`` lock object (create-only, expiring
        :attr:`commit_lease_ttl_s` after its last renewal, renewed while held), released at
        the end. A holder killed mid-commit holds the others back until it expires.

        Raises
        ------
        LeaseIOError
            If the lock object cannot be created or read.
        """
        # Waiters ask often: one read when the lease is held, instead of a refused create and a read.
        held = self.read_lease_object(leases.COMMIT_LOCK)
        if held is not None and not Lease.decode(leases.COMMIT_LOCK, held[0]).expired():
            yield False
            return
        taken = lease_objects.try_take_lock(self, leases.COMMIT_LOCK, "commit", self.commit_lease_ttl_s)
        if not isinstance(taken, tuple):
            yield False
            return
        lease, version = taken
        try:
            with lease_objects.renewed(self, lease, version, self.commit_lease_ttl_s):
                yield True
        finally:
            lease_objects.release_lock(self, leases.COMMIT_LOCK, lease.owner)

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

    # The object operations of resources.lease_objects.LeaseObjects. Object stores implement them;
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

    def refs_digest(self) -> str | None:
        """A digest of the repository's refs (every branch and tag) read without opening it; ``None`` here.

        Equal digests mean the same commit log, so a decision made from one holds for the other
        (``risk build``'s rerun with nothing to do, :mod:`risk_assets.record_stamp`). Object stores
        return ``None``: reading an object needs its cloud client, which costs what skipping
        Icechunk's import saves.
        """
        return None

    def exists(self) -> bool:
        """Whether the location holds an Icechunk repository.

        Raises
        ------
        StoreError
            If the storage cannot be reached.
        """
        import icechunk

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

    def repository(self, create: bool = False) -> "icechunk.Repository":
        """Open the repository, creating it first if ``create`` is true.

        Raises
        ------
        StoreError
            If the repository does not exist (and ``create`` is false) or the storage cannot
            be reached.
        """
        import icechunk

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

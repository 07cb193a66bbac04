"""Forks handed over to the batch committer: the objects ``pending/<region>.<fork_id>`` beside the repository.

A region writer (:mod:`resources.batch_handoff`) stores its fork here with create-only semantics,
on the same object layer as the writer leases (:mod:`resources.leases`: local folder, S3, GCS);
a committer round (:mod:`resources.commit_round`) lists and commits them and deletes each once its
region is committed; maintenance keeps its GC cut-off older than every pending fork's writing
(:func:`pending_since`).
"""

import logging
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from resources.batch_commit import RegionFork
from resources.leases import PENDING_PREFIX
from resources.store import IcechunkStore, StoreError

log = logging.getLogger(__name__)

#: The provenance field naming the fork a region was committed from: tells a writer whether the
#: commit of its region is its own (``written``) or another writer's (``skipped``).
FORK_ID = "fork_id"
#: Threads reading and deleting pending objects in a committer round.
IO_THREADS = 8


@dataclass(frozen=True)
class PendingFork:
    """A region's fork as handed over to the committer: the object ``pending/<region>.<fork_id>``.

    Attributes
    ----------
    fork
        The region's fork (:func:`~resources.batch_commit.write_region_fork`).
    branch
        The branch to commit it to.
    fork_id
        A random id, also in the region's commit metadata (:data:`FORK_ID`).
    writer_lease
        The name of its writer's lease object (``None`` on stores whose lease is no object).
    host, pid
        Where its writer runs.
    written_since
        When its writer started writing its chunks: garbage collection must keep objects
        from then on while the fork is pending.
    handed_at
        When it was handed over.
    """

    fork: RegionFork
    branch: str
    fork_id: str
    writer_lease: str | None
    host: str
    pid: int
    written_since: datetime
    handed_at: datetime

    @property
    def name(self) -> str:
        """Its object's name under the lease prefix."""
        return f"{PENDING_PREFIX}{self.fork.region}.{self.fork_id}"

    def encode(self) -> bytes:
        """The object's body."""
        return pickle.dumps(self)

    @classmethod
    def decode(cls, data: bytes) -> "PendingFork":
        """Read an object's body back.

        Raises
        ------
        ValueError
            If the body is not a pending fork written by this code.
        """
        try:
            pending = pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as err:
            raise ValueError(f"not a pending fork ({type(err).__name__}: {err})") from err
        if not isinstance(pending, cls):
            raise ValueError(f"not a pending fork but a {type(pending).__name__}")
        return pending


def hand_off(store: IcechunkStore, pending: PendingFork) -> str:
    """Store ``pending`` as its create-only object; its name.

    Raises
    ------
    LeaseIOError
        If the object cannot be written.
    """
    data = pending.encode()
    if store.create_lease_object(pending.name, data) is None:
        # The name holds a fresh uuid: it exists only if this very create landed and the client
        # retried it after losing the answer. Ours, then.
        found = store.read_lease_object(pending.name)
        if found is None or found[0] != data:
            raise StoreError(f"pending fork {pending.name} already exists at {store.lease_location()}")
    return pending.name


def read_pending(store: IcechunkStore) -> tuple[list[PendingFork], list[str]]:
    """Every readable pending fork, and the names of unreadable objects (logged and left alone).

    Raises
    ------
    LeaseIOError
        If the pending objects cannot be listed or read.
    """
    names = [name for name in store.list_lease_objects() if name.startswith(PENDING_PREFIX)]
    # Small objects, one request each: read them side by side (a batch of 400 would otherwise
    # wait on 400 round trips).
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        bodies = list(pool.map(store.read_lease_object, names))
    found: list[PendingFork] = []
    unreadable: list[str] = []
    for name, body in zip(names, bodies, strict=True):
        if body is None:
            continue  # committed and deleted by another committer since the listing
        try:
            found.append(PendingFork.decode(body[0]))
        except ValueError as err:
            log.error("pending object %s%s is unreadable (%s): delete it by hand", store.lease_location(), name, err)
            unreadable.append(name)
    return found, unreadable


def pending_since(store: IcechunkStore) -> list[datetime]:
    """When each pending fork's writer started writing its chunks: GC must keep objects from then on.

    Raises
    ------
    LeaseIOError
        If the pending objects cannot be listed or read.
    """
    return [pending.written_since for pending in read_pending(store)[0]]

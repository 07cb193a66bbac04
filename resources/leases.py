"""Writer leases and the maintenance lock on object stores, kept as objects beside the repository.

Garbage collection with a cut-off newer than a running writer deletes that writer's objects
while its commit still succeeds (``FIELD-NOTES.md``), so maintenance must never run while a
writer is between opening its session and committing. Object stores have no lock service,
but they have atomic conditional writes (create-only, replace-if-unchanged) and strongly
consistent listings; this module builds the two-sided check on those alone.

Layout: one object per lease under ``<prefix>.leases/`` (a sibling of the repository's
prefix, never inside Icechunk's own layout): ``writer-<uuid>`` per writer, ``maintenance``
for the maintenance lock, ``commit`` for the batch committer's lock. Each holds JSON: kind,
owner, host, pid, started_at, expires_at. Batch commits also keep the forks handed over to the
committer there, under ``pending/`` (:mod:`resources.pending_forks`).

Protocol:

- A writer creates its ``writer-<uuid>`` object, *then* reads ``maintenance``. If that lock
  exists and has not expired, the writer deletes its lease and waits (backing off, bounded
  by the store's ``lease_wait_s``), then tries again; past the bound it raises
  :class:`MaintenanceActiveError`. Otherwise it opens its session, writes, commits, and
  deletes its lease (in a ``finally``).
- Maintenance creates ``maintenance`` with create-only semantics (replacing it only if the
  existing one has expired), *then* lists the writer leases. If any has not expired it
  releases the lock and raises :class:`WritersActiveError` naming the writers (or, when
  asked to, holds the lock and waits for them to finish first: new writers back off).

Why it is race-free on a strongly consistent store: each side writes its own object before
reading the other's. If the writer's create comes first, maintenance's later listing sees
the lease and refuses; otherwise maintenance's create precedes the writer's read, and the
writer backs off. Both may back off at once; neither can proceed unseen.

The lease objects themselves (their JSON, the object operations a store provides, their renewal
while held, taking and releasing a lock) are :mod:`resources.lease_objects`.
"""

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from resources.lease_objects import Lease, LeaseIOError, LeaseObjects, read_lease, release_lock, renewed, try_take_lock
from risk_model.errors import StoreUnavailableError

log = logging.getLogger(__name__)

WRITER_PREFIX = "writer-"
MAINTENANCE_LOCK = "maintenance"
#: The batch committer's lock (see :mod:`resources.batch_handoff`).
COMMIT_LOCK = "commit"
#: Names of the forks handed over to the batch committer start with this.
PENDING_PREFIX = "pending/"

# Backoff of a writer waiting for maintenance, and of maintenance draining writers: short first
# (maintenance of a small repository takes seconds), capped so waiters notice a release soon.
_FIRST_BACKOFF_S = 0.25
_MAX_BACKOFF_S = 2.0
# A hard bound on loop iterations besides the deadlines (which are the real bound).
_MAX_ROUNDS = 100_000


class WritersActiveError(StoreUnavailableError):
    """Maintenance refused: region writers hold leases on the repository right now."""


class MaintenanceActiveError(StoreUnavailableError):
    """A writer gave up waiting: maintenance held the repository's lock for too long. Retry later."""


def _writer_leases(objects: LeaseObjects) -> list[Lease]:
    names = [name for name in objects.list_lease_objects() if name.startswith(WRITER_PREFIX)]
    # A lease that vanished between the listing and the read was released meanwhile: skip it.
    found = [lease for name in names if (lease := read_lease(objects, name)) is not None]
    return sorted((lease for lease, _ in found), key=lambda lease: lease.started_at)


def live_writer_leases(objects: LeaseObjects) -> list[Lease]:
    """The unexpired writer leases, oldest first.

    Parameters
    ----------
    objects
        The store.

    Returns
    -------
    list[Lease]
        Leases whose ``expires_at`` is still ahead.
    """
    now = datetime.now(UTC)
    return [lease for lease in _writer_leases(objects) if not lease.expired(now)]


@contextmanager
def writer_lease(objects: LeaseObjects, *, ttl_s: float, wait_s: float) -> Iterator[Lease]:
    """Hold a writer lease: create ``writer-<uuid>``, check the maintenance lock, renew, delete at the end.

    Parameters
    ----------
    objects
        The store.
    ttl_s
        Lifetime of the lease without renewal (how long a dead writer blocks maintenance).
    wait_s
        How long to wait, in total, while maintenance holds its lock.

    Yields
    ------
    Lease
        The lease as first written.

    Raises
    ------
    MaintenanceActiveError
        If maintenance still held its lock after ``wait_s`` seconds (no lease is left behind).
    LeaseIOError
        If the store cannot be reached to take the lease (failing to delete it at the end is only
        logged: it expires by itself).
    """
    deadline = time.monotonic() + wait_s
    delay = _FIRST_BACKOFF_S
    for _ in range(_MAX_ROUNDS):
        lease = Lease.new(f"{WRITER_PREFIX}{uuid.uuid4().hex}", "writer", ttl_s)
        version = objects.create_lease_object(lease.name, lease.encode())
        if version is None:
            # The name is a fresh uuid: it exists only if this very create landed and the client
            # retried it after losing the answer (seen in a 5 s store outage). Ours, then: take it.
            found = objects.read_lease_object(lease.name)
            if found is None or found[0] != lease.encode():
                raise LeaseIOError(f"lease object {lease.name} already exists at {objects.lease_location()}")
            version = found[1]
        lock = read_lease(objects, MAINTENANCE_LOCK)
        if lock is None or lock[0].expired():
            break
        # Withdraw first, then wait: a lease left while waiting would block maintenance forever.
        objects.delete_lease_object(lease.name)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MaintenanceActiveError(
                f"maintenance of the repository holds its lock at {objects.lease_location()} "
                f"({lock[0].describe()}); waited {wait_s:.0f} s. Retry when it is done; nothing was written"
            )
        log.info("maintenance holds %s (%s): waiting %.2f s", objects.lease_location(), lock[0].describe(), delay)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_BACKOFF_S)
    else:
        raise MaintenanceActiveError(f"gave up taking a writer lease at {objects.lease_location()}")
    try:
        with renewed(objects, lease, version, ttl_s):
            yield lease
    finally:
        try:
            objects.delete_lease_object(lease.name)
        except LeaseIOError as err:
            # The writer's work is done (or failed with its own error, which must not be masked):
            # a lease left behind only holds maintenance off until it expires, ttl_s from its last
            # renewal. Raising here would report a committed region as failed (an outage test
            # saw exactly that).
            log.warning("could not delete writer lease %s (it expires in %.0f s): %s", lease.name, ttl_s, err)


def _take_lock(objects: LeaseObjects, ttl_s: float) -> tuple[Lease, str]:
    """Create the maintenance lock, or replace it if it expired; refuse if another holds it."""
    taken = try_take_lock(objects, MAINTENANCE_LOCK, "maintenance", ttl_s)
    if isinstance(taken, Lease):
        raise WritersActiveError(
            f"refusing maintenance: another maintenance holds the lock at {objects.lease_location()} "
            f"({taken.describe()}). Wait for it to finish; nothing was changed"
        )
    if taken is None:
        raise WritersActiveError(
            f"refusing maintenance: the lock at {objects.lease_location()} kept changing hands; nothing was changed"
        )
    return taken


def _release_lock(objects: LeaseObjects, owner: str) -> None:
    release_lock(objects, MAINTENANCE_LOCK, owner)


def _drain(objects: LeaseObjects, wait_s: float) -> None:
    """Return once no unexpired writer lease remains; refuse after ``wait_s`` seconds.

    New writers back off while the lock is held, so only those that started before can
    still be writing. Expired leases (dead writers) are deleted on the way.
    """
    deadline = time.monotonic() + wait_s
    delay = _FIRST_BACKOFF_S
    for _ in range(_MAX_ROUNDS):
        now = datetime.now(UTC)
        live = []
        for lease in _writer_leases(objects):
            if lease.expired(now):
                log.warning("deleting the expired lease of a writer presumed dead: %s", lease.describe())
                objects.delete_lease_object(lease.name)
            else:
                live.append(lease)
        if not live:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            listing = "; ".join(lease.describe() for lease in live)
            raise WritersActiveError(
                f"refusing maintenance: {len(live)} region writer(s) hold leases at {objects.lease_location()}: "
                f"{listing}. Wait for the running region writers to finish, or stop them (a dead writer's lease "
                "expires by itself), then run maintenance again; nothing was changed"
            )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_BACKOFF_S)
    raise WritersActiveError(f"refusing maintenance: writers kept their leases at {objects.lease_location()}")


@contextmanager
def maintenance_lock(objects: LeaseObjects, *, ttl_s: float, wait_for_writers_s: float = 0.0) -> Iterator[Lease]:
    """Hold the maintenance lock while no writer holds a lease.

    Parameters
    ----------
    objects
        The store.
    ttl_s
        Lifetime of the lock without renewal (how long a dead maintenance blocks writers).
    wait_for_writers_s
        How long to hold the lock waiting for live writers to finish (new writers wait
        meanwhile); 0 refuses at once.

    Yields
    ------
    Lease
        The lock as first written.

    Raises
    ------
    WritersActiveError
        If another maintenance holds the lock, or writers still held leases after
        ``wait_for_writers_s`` seconds (the lock is released).
    LeaseIOError
        If the store cannot be reached.
    """
    lease, version = _take_lock(objects, ttl_s)
    try:
        with renewed(objects, lease, version, ttl_s):
            _drain(objects, wait_for_writers_s)
            yield lease
    finally:
        _release_lock(objects, lease.owner)

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
committer there, under ``pending/`` (:mod:`resources.batch_handoff`).

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

A holder that dies stops renewing: a background thread renews every lease and lock every
third of its TTL (Icechunk releases the GIL during commits and garbage collection, so it
keeps running through them), so a lease outlives its holder by at most its TTL, and a long
write or a long collection never loses its lease while its process lives. Expiry times are
written and compared in UTC by different machines: keep their clocks synchronised (NTP);
the TTLs are minutes, so seconds of skew do not matter.
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

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
# Reads whose start time or expiry cannot be parsed: treated as held by a live writer forever,
# so a damaged lease blocks maintenance (naming the object) instead of being silently ignored.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = datetime(9999, 1, 1, tzinfo=UTC)


class WritersActiveError(StoreUnavailableError):
    """Maintenance refused: region writers hold leases on the repository right now."""


class MaintenanceActiveError(StoreUnavailableError):
    """A writer gave up waiting: maintenance held the repository's lock for too long. Retry later."""


class LeaseIOError(StoreUnavailableError):
    """A lease object could not be created, read, replaced, deleted or listed."""


@dataclass(frozen=True)
class Lease:
    """One lease object's content.

    Attributes
    ----------
    name
        The object's name under the lease prefix (``writer-<uuid>`` or ``maintenance``).
    kind
        ``"writer"`` or ``"maintenance"`` (``"unreadable"`` for an object that is not a lease).
    owner
        A random id of the holder, so a holder recognises its own lock.
    host, pid
        Where the holder runs, for messages.
    started_at
        When the holder took it (UTC).
    expires_at
        After this (UTC) the lease no longer counts: its holder is presumed dead.
    """

    name: str
    kind: str
    owner: str
    host: str
    pid: int
    started_at: datetime
    expires_at: datetime

    @classmethod
    def new(cls, name: str, kind: str, ttl_s: float) -> "Lease":
        """A lease held by this process from now for ``ttl_s`` seconds."""
        now = datetime.now(UTC)
        return cls(name, kind, uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now + timedelta(seconds=ttl_s))

    def renewed(self, ttl_s: float) -> "Lease":
        """The same lease, expiring ``ttl_s`` seconds from now."""
        return replace(self, expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s))

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the lease no longer counts at ``now`` (default: now)."""
        return (now or datetime.now(UTC)) >= self.expires_at

    def encode(self) -> bytes:
        """The object's JSON body."""
        return json.dumps(
            {
                "kind": self.kind,
                "owner": self.owner,
                "host": self.host,
                "pid": self.pid,
                "started_at": self.started_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
            }
        ).encode()

    @classmethod
    def decode(cls, name: str, data: bytes) -> "Lease":
        """Parse an object's body; one that does not parse counts as a live lease that never expires."""
        try:
            raw = json.loads(data)
            return cls(
                name,
                str(raw["kind"]),
                str(raw["owner"]),
                str(raw["host"]),
                int(raw["pid"]),
                datetime.fromisoformat(raw["started_at"]).astimezone(UTC),
                datetime.fromisoformat(raw["expires_at"]).astimezone(UTC),
            )
        except (ValueError, KeyError, TypeError):
            return cls(name, "unreadable", "", "?", -1, _EPOCH, _NEVER)

    def describe(self) -> str:
        """One line for messages."""
        if self.kind == "unreadable":
            return f"{self.name} (not a lease this code wrote: delete it if no writer is running)"
        return (
            f"{self.name} (host {self.host}, pid {self.pid}, since {self.started_at.isoformat(timespec='seconds')}, "
            f"expires {self.expires_at.isoformat(timespec='seconds')})"
        )


class LeaseObjects(Protocol):
    """The object operations the protocol needs, on the objects under a store's lease prefix.

    Implemented by :class:`~resources.cloud_stores.S3IcechunkStore` and
    :class:`~resources.cloud_stores.GCSIcechunkStore`. Every method raises :class:`LeaseIOError` when
    the store cannot be reached.
    """

    def lease_location(self) -> str:
        """The lease prefix's address, for messages."""
        ...

    def create_lease_object(self, name: str, data: bytes) -> str | None:
        """Create ``name`` only if it does not exist; its version, or ``None`` if it existed."""
        ...

    def read_lease_object(self, name: str) -> tuple[bytes, str] | None:
        """The body and version of ``name``, or ``None`` if it does not exist."""
        ...

    def replace_lease_object(self, name: str, data: bytes, version: str) -> str | None:
        """Overwrite ``name`` only if it is still at ``version``; the new version, or ``None``."""
        ...

    def delete_lease_object(self, name: str) -> None:
        """Delete ``name``; no error if it does not exist."""
        ...

    def list_lease_objects(self) -> list[str]:
        """The names of all objects under the lease prefix."""
        ...


class _Renewal:
    """Renews a lease object every third of its TTL on a daemon thread, until stopped.

    Renewal is a conditional replace, so a lease that someone else removed or took over
    (after it had expired) is not silently recreated: the holder is told, once, in the log.
    """

    def __init__(self, objects: LeaseObjects, lease: Lease, version: str, ttl_s: float) -> None:
        self.lease = lease
        self._objects = objects
        self._version = version
        self._ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"renew {lease.name}", daemon=True)

    def __enter__(self) -> "_Renewal":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # Bounded by the stop event: the holder sets it when it lets the lease go.
        while not self._stop.wait(self._ttl_s / 3):
            renewed = self.lease.renewed(self._ttl_s)
            try:
                version = self._objects.replace_lease_object(self.lease.name, renewed.encode(), self._version)
                if version is None:
                    # A renewal may have succeeded with its answer lost: adopt it if it is still ours.
                    current = self._objects.read_lease_object(self.lease.name)
                    if current is not None and Lease.decode(self.lease.name, current[0]).owner == self.lease.owner:
                        self._version = current[1]
                        continue
                    log.error(
                        "lease %s at %s was removed or taken over after it expired: this process is no longer "
                        "protected from maintenance",
                        self.lease.name,
                        self._objects.lease_location(),
                    )
                    return
            except LeaseIOError as err:
                # Transient: the lease is still valid until it expires; try again next period.
                log.warning("could not renew lease %s: %s", self.lease.name, err)
                continue
            self.lease, self._version = renewed, version


def _read(objects: LeaseObjects, name: str) -> tuple[Lease, str] | None:
    found = objects.read_lease_object(name)
    return None if found is None else (Lease.decode(name, found[0]), found[1])


def _writer_leases(objects: LeaseObjects) -> list[Lease]:
    names = [name for name in objects.list_lease_objects() if name.startswith(WRITER_PREFIX)]
    # A lease that vanished between the listing and the read was released meanwhile: skip it.
    found = [lease for name in names if (lease := _read(objects, name)) is not None]
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
        lock = _read(objects, MAINTENANCE_LOCK)
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
        with _Renewal(objects, lease, version, ttl_s):
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


def try_take_lock(objects: LeaseObjects, name: str, kind: str, ttl_s: float) -> tuple[Lease, str] | Lease | None:
    """Create lock object ``name``, or replace it if its holder's lease expired.

    Parameters
    ----------
    objects
        The store.
    name, kind
        The lock object's name under the lease prefix, and the kind recorded in it.
    ttl_s
        Lifetime of the lock without renewal.

    Returns
    -------
    tuple[Lease, str] | Lease | None
        ``(lock, version)`` if taken; the holder's :class:`Lease` if another holds it unexpired;
        ``None`` if it kept changing hands while we looked (try again later).
    """
    for _ in range(3):  # a lock released or replaced between our steps: look again, a few times
        lease = Lease.new(name, kind, ttl_s)
        version = objects.create_lease_object(name, lease.encode())
        if version is not None:
            return lease, version
        found = _read(objects, name)
        if found is None:
            continue
        holder, current = found
        if not holder.expired():
            return holder
        version = objects.replace_lease_object(name, lease.encode(), current)
        if version is not None:
            log.warning("took over the expired lock %s", holder.describe())
            return lease, version
    return None


def release_lock(objects: LeaseObjects, name: str, owner: str) -> None:
    """Delete lock object ``name`` if ``owner`` still holds it (after ours expired, another may have taken it)."""
    found = _read(objects, name)
    if found is not None and found[0].owner == owner:
        objects.delete_lease_object(name)


@contextmanager
def renewed(objects: LeaseObjects, lease: Lease, version: str, ttl_s: float) -> Iterator[Lease]:
    """Renew ``lease`` (taken with :func:`try_take_lock`) every third of ``ttl_s`` for the duration."""
    with _Renewal(objects, lease, version, ttl_s):
        yield lease


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
        with _Renewal(objects, lease, version, ttl_s):
            _drain(objects, wait_for_writers_s)
            yield lease
    finally:
        _release_lock(objects, lease.owner)

"""Lease objects beside the repository: their content, the operations on them, renewal, locks.

The building blocks of the writer leases and the maintenance lock (:mod:`resources.leases`, which
describes the layout and the protocol) and of the batch committer's lock
(:meth:`~resources.store.IcechunkStore.commit_lease`): a lease is a small JSON object, created
with create-only semantics and renewed with replace-if-unchanged ones, the atomic conditional
writes every object store has.

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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from risk_model.errors import StoreUnavailableError

log = logging.getLogger(__name__)

# Reads whose start time or expiry cannot be parsed: treated as held by a live writer forever,
# so a damaged lease blocks maintenance (naming the object) instead of being silently ignored.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = datetime(9999, 1, 1, tzinfo=UTC)


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


def read_lease(objects: LeaseObjects, name: str) -> tuple[Lease, str] | None:
    """The lease object ``name`` and its version, or ``None`` if it does not exist."""
    found = objects.read_lease_object(name)
    return None if found is None else (Lease.decode(name, found[0]), found[1])


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
        found = read_lease(objects, name)
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
    found = read_lease(objects, name)
    if found is not None and found[0].owner == owner:
        objects.delete_lease_object(name)


@contextmanager
def renewed(objects: LeaseObjects, lease: Lease, version: str, ttl_s: float) -> Iterator[Lease]:
    """Renew ``lease`` (a writer lease, or a lock from :func:`try_take_lock`) every third of ``ttl_s``."""
    with _Renewal(objects, lease, version, ttl_s):
        yield lease

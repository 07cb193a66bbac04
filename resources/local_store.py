"""The repository on the local filesystem: the local default's store."""

import errno
import fcntl
import hashlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from resources.lease_objects import Lease
from resources.leases import WritersActiveError
from resources.store import IcechunkStore, StoreLocationError

if TYPE_CHECKING:
    import icechunk  # imported where a repository is opened (see resources.store)

#: Icechunk 2.x's repository info file at the repository's root: its branches, tags and snapshots.
REPO_INFO_FILE = "repo"


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


class LocalIcechunkStore(IcechunkStore):
    """A repository on the local filesystem.

    Icechunk's local storage is not safe for concurrent commits: in our measurements 2 to 10
    of 64 concurrent commits were silently lost, every worker having been handed a snapshot
    id. Serialising only ``commit()`` with an OS file lock made every run correct, so that is
    what :meth:`commit_guard` does. Writing chunks stays fully parallel.
    """

    path: str = Field(description="Directory of the repository.")
    # Measured in docs/scale.md (section 2, local filesystem): see there why this default.
    commit_protocol: Literal["batch", "direct"] = Field(
        default="direct",
        description=(
            "How region writers commit ('batch' or 'direct', see IcechunkStore.commit_protocol). On local "
            "disk commits already take turns through a file lock and cost milliseconds."
        ),
    )

    def storage(self) -> "icechunk.Storage":
        """Local filesystem storage at :attr:`path`."""
        import icechunk

        # Icechunk warns on every open that local storage is unsafe for concurrent commits;
        # commit_guard is our answer to that, so the warning is noise here.
        icechunk.set_logs_filter("warn,icechunk_arrow_object_store=error")
        return icechunk.local_filesystem_storage(str(Path(self.path).resolve()))

    def refs_digest(self) -> str | None:
        """SHA-256 of Icechunk's repository info file; ``None`` if there is none (no repository yet).

        That one file holds every branch and tag (and the snapshots they reach); Icechunk 2.x
        rewrites it on every commit, branch and tag change, and never for a read. A layout
        without it gives ``None``, and the caller opens the repository as usual.
        """
        try:
            data = (Path(self.path) / REPO_INFO_FILE).read_bytes()
        except OSError:
            return None
        return hashlib.sha256(data).hexdigest()

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

    # Objects beside the repository for batch commits (resources.batch_handoff): the pending
    # forks. Files under `<repo>.leases/`, with the same create-only and replace-if-unchanged
    # semantics as the object stores' conditional writes.

    @property
    def lease_dir(self) -> Path:
        """The folder of the lease objects: beside the repository, never part of it."""
        repo = Path(self.path).resolve()
        return repo.with_name(repo.name + ".leases")

    def lease_location(self) -> str:
        """The folder of the lease objects."""
        return f"{self.lease_dir}/"

    def _object_path(self, name: str) -> Path:
        path = (self.lease_dir / name).resolve()
        if self.lease_dir.resolve() not in path.parents:
            raise ValueError(f"lease object name {name!r} leaves {self.lease_dir}")
        return path

    @staticmethod
    def _version(data: bytes) -> str:
        # Content-addressed versions: every body this code writes differs (times, uuids).
        return hashlib.sha256(data).hexdigest()[:24]

    def _staged(self, target: Path, data: bytes) -> Path:
        """``data`` in a temporary file next to ``target``: linked or renamed into place whole."""
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".tmp-{uuid.uuid4().hex}")
        staged.write_bytes(data)
        return staged

    def create_lease_object(self, name: str, data: bytes) -> str | None:
        """Create the file only if absent (a hard link of a complete temporary file: atomic)."""
        target = self._object_path(name)
        staged = self._staged(target, data)
        try:
            os.link(staged, target)
        except FileExistsError:
            return None
        finally:
            staged.unlink()
        return self._version(data)

    def read_lease_object(self, name: str) -> tuple[bytes, str] | None:
        """The file's bytes and version, or ``None`` if absent."""
        try:
            data = self._object_path(name).read_bytes()
        except FileNotFoundError:
            return None
        return data, self._version(data)

    def replace_lease_object(self, name: str, data: bytes, version: str) -> str | None:
        """Overwrite the file if still at ``version``, under a lock that every replace and delete takes."""
        target = self._object_path(name)
        with _flock(self.lease_dir / ".replace-lock", fcntl.LOCK_EX):
            current = self.read_lease_object(name)
            if current is None or current[1] != version:
                return None
            os.replace(self._staged(target, data), target)
        return self._version(data)

    def delete_lease_object(self, name: str) -> None:
        """Delete the file (no error if absent)."""
        with _flock(self.lease_dir / ".replace-lock", fcntl.LOCK_EX):
            self._object_path(name).unlink(missing_ok=True)

    def list_lease_objects(self) -> list[str]:
        """The names of the lease objects (temporary files left out)."""
        if not self.lease_dir.is_dir():
            return []
        return sorted(
            str(path.relative_to(self.lease_dir))
            for path in self.lease_dir.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    def writer_alive(self, lease_name: str | None, host: str, pid: int) -> bool:
        """Whether process ``pid`` on ``host`` still runs: a local writer's lease (a file lock) dies with it.

        A writer on another host (a shared network folder) is presumed alive.
        """
        if host != socket.gethostname():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists, under another user
        return True

    @property
    def committer_lock_path(self) -> Path:
        """The batch committer's lock file: beside the repository."""
        repo = Path(self.path).resolve()
        return repo.with_name(repo.name + ".committer-lock")

    @contextmanager
    def commit_lease(self) -> Iterator[bool]:
        """Try once to take an exclusive ``flock`` on :attr:`committer_lock_path`; yields whether taken.

        The kernel drops it when its holder dies: no expiry to wait for after a killed committer.
        """
        self.committer_lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.committer_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                yield False
                return
            yield True
        finally:
            os.close(fd)

"""The repository on the local filesystem: the local default's store."""

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import icechunk
from pydantic import Field

from resources.leases import Lease, WritersActiveError
from resources.store import IcechunkStore, StoreLocationError


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

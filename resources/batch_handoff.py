"""Batch commits across processes and pods: forks handed over as objects, committed by whoever holds the lease.

The production form of :mod:`resources.batch_commit` (the store's ``commit_protocol: "batch"``).
A region writer (:func:`write_region_batched`), holding its writer lease throughout:

1. writes its region's chunks and mark into a fork of a session (:func:`write_region_fork`);
2. hands the fork over: a create-only object ``pending/<region>.<uuid>`` beside the repository,
   on the same object layer as the writer leases (:mod:`resources.leases`: local folder, S3,
   GCS), holding the pickled :class:`~resources.pending_forks.PendingFork` (about 2 kB: the
   chunks are already stored; :mod:`resources.pending_forks`);
3. tries, without waiting, to take the commit lease (:meth:`~resources.store.IcechunkStore.commit_lease`).
   The holder is the committer for one round (:func:`~resources.commit_round.commit_pending`):
   it lists every pending fork, commits them with :func:`~resources.batch_commit.commit_batch`
   (one commit per branch), deletes the pending objects whose region is now committed for their
   key, and lets the lease go;
4. reads its pending object (one small request). Once it is gone (a committer deletes it only after
   the region is committed), it reads its region's mark at the branch tip and looks up the commit
   (the snapshot id its Dagster materialization records): ``written`` if that commit carries its
   fork's id, ``skipped`` if another writer's fork of the region won. Otherwise it backs off
   (bounded) and goes back to 3, until :attr:`~resources.store.IcechunkStore.commit_wait_s` has
   passed: then :class:`CommitWaitTimeoutError`, and the pending fork stays for the next committer.

Per-region guarantees: exactly one commit per (region, build key) comes from the region marks,
as in :mod:`resources.batch_commit` (a fork of a region already committed for its key is skipped,
also when a committer died between its commit and deleting the pending objects); the lease is
only for efficiency (two committers at once stay correct: they conflict on a mark and rebuild).
A writer killed before step 2 leaves unreferenced chunks only (nothing visible; a rerun writes the
region again). A writer killed after step 2 leaves its pending fork, which the next committer
commits once.

Garbage collection: a pending fork's chunks are referenced by no snapshot until its commit.
While its writer lives, the writer lease keeps maintenance out. Once the writer is gone,
maintenance keeps its GC cut-off older than every pending fork's writing
(:func:`~resources.pending_forks.pending_since`, used by :func:`~resources.maintenance.maintain`);
and a committer drops, without committing it, a
pending fork whose writer lease is gone and that is older than the writer lease TTL (its chunks
may have been collected by a maintenance that predates this rule, or on another deployment's
clock): its region stays missing, and the missing-region sensor or a backfill rebuilds it.
"""

import logging
import os
import random
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Literal

import icechunk
import xarray as xr

from resources.batch_commit import write_region_fork
from resources.commit_round import CommitRound, commit_pending
from resources.ledger import CommitRecord, find_commit, marked_key
from resources.pending_forks import FORK_ID, hand_off

# Also reachable here under its old module: pending objects handed over before it moved to
# resources.pending_forks name resources.batch_handoff.PendingFork in their pickle.
from resources.pending_forks import PendingFork as PendingFork
from resources.region_write import WriteResult, write_region
from resources.store import IcechunkStore, StoreError, disk_full_error, icechunk_reason
from risk_model.alignment import check_alignment
from risk_model.errors import CommitConflictError
from risk_model.grid import GridSpec, Region
from risk_model.versions import BuildKey

log = logging.getLogger(__name__)

# A waiting writer polls its region's mark and the commit lease: first soon (a batch commit
# takes a fraction of a second alone), then less often so that many waiters do not load the store
# (docs/scale.md: waiters polling every 5-100 ms made a commit lease the slowest protocol).
_FIRST_POLL_S = 0.2
_MAX_POLL_S = 1.0
# A hard bound on loop iterations besides the deadline (which is the real bound).
_MAX_ROUNDS = 100_000


class CommitWaitTimeoutError(CommitConflictError):
    """A writer's region was not committed within the store's ``commit_wait_s``: retry later.

    Nothing is lost: the pending fork stays for the next committer, and a rerun of the region
    either finds it committed or hands it over again.
    """


def _committed(repo: icechunk.Repository, branch: str, region: Region, key: BuildKey) -> CommitRecord | None:
    """The region's commit for ``key`` at the branch tip, once its mark there holds ``key``."""
    if marked_key(repo, region.id, branch=branch) != key:
        return None
    return find_commit(repo, branch, region.id, key)


def write_region_batched(
    store: IcechunkStore,
    grid: GridSpec,
    region: Region,
    ds: xr.Dataset,
    *,
    key: BuildKey,
    run_id: str,
    branch: str | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> WriteResult:
    """Write one region, hand it to the batch committer and return once it is committed.

    Same contract as :func:`~resources.region_write.write_region` (see the module for the
    protocol): ``written`` with the snapshot that committed this writer's fork, or ``skipped``
    with the commit that holds the region for ``key`` already.

    Parameters
    ----------
    store, grid, region, ds, key, run_id, branch, extra_metadata
        As for :func:`~resources.region_write.write_region`.

    Returns
    -------
    WriteResult
        ``seconds_committing`` is the wait from hand-off to the region's commit.

    Raises
    ------
    MisalignedRegionError
        If ``ds`` is not exactly ``region`` (checked before any write).
    TemplateMissingError
        If the branch has no template of this grid.
    CommitWaitTimeoutError
        If the region was not committed within the store's ``commit_wait_s``; its fork stays pending.
    StoreError
        If the store could not be reached within its storage retries: retry later.
    LeaseIOError
        If the lease or pending objects could not be written or read: retry later.
    StoreFullError
        If the store's disk is full (or over quota): nothing of the region was committed.
    """
    check_alignment(grid, ds, expected=region)
    branch = branch or store.branch
    fork_id = uuid.uuid4().hex
    with store.writer_lease() as lease:
        try:
            since = datetime.now(UTC)
            started = time.perf_counter()
            fork = write_region_fork(
                store,
                grid,
                region,
                ds,
                key=key,
                run_id=run_id,
                branch=branch,
                extra_metadata={**(extra_metadata or {}), FORK_ID: fork_id},
            )
            repo = store.repository()
            if fork is None:
                existing = find_commit(repo, branch, region.id, key)
                if existing is None:
                    raise CommitConflictError(
                        f"region {region.id}: its mark named this build when the fork was opened, but the branch "
                        f"{branch!r} moved on meanwhile; nothing was written: run the region again"
                    )
                return WriteResult("skipped", region.id, existing.snapshot_id, existing)
            pending = PendingFork(
                fork,
                branch,
                fork_id,
                None if lease is None else lease.name,
                socket.gethostname(),
                os.getpid(),
                since,
                datetime.now(UTC),
            )
            handed = time.perf_counter()
            hand_off(store, pending)
            record = _await_commit(store, repo, pending, region, key)
        except icechunk.StorageError as err:
            raise StoreError(
                f"region {region.id}: the store at {store.location()} could not be reached "
                f"({icechunk_reason(err)}). Write the region again once the store is back: a region already "
                "committed is skipped, not committed twice"
            ) from err
        except (icechunk.IcechunkError, OSError) as err:
            # A full disk fails every region the same way: say so once, and never retry it.
            full = disk_full_error(store, err, f"writing region {region.id}")
            if full is None:
                raise
            raise full from err
    status: Literal["written", "skipped"] = "written" if record.metadata.get(FORK_ID) == fork_id else "skipped"
    return WriteResult(
        status,
        region.id,
        record.snapshot_id,
        record,
        seconds_writing=handed - started,
        seconds_committing=time.perf_counter() - handed,
        bytes_written=fork.bytes_written if status == "written" else 0,
    )


def _await_commit(
    store: IcechunkStore, repo: icechunk.Repository, pending: PendingFork, region: Region, key: BuildKey
) -> CommitRecord:
    """Commit (as the lease holder) or wait until ``pending``'s region is committed for ``key``."""
    deadline = time.monotonic() + store.commit_wait_s
    delay = _FIRST_POLL_S
    rounds = 0
    for _ in range(_MAX_ROUNDS):
        done: CommitRound | None = None
        with store.commit_lease() as committer:
            if committer:
                rounds += 1
                done = commit_pending(store)
                log.info(
                    "committer round: %d regions committed, %d skipped, %d dropped, %d left in %.2f s",
                    len(done.committed),
                    len(done.skipped),
                    len(done.dropped),
                    len(done.left),
                    done.seconds,
                )
        if done is not None and pending.name in done.records:
            # This writer's own round committed (or found) its region: no need to read it back.
            return done.records[pending.name]
        # While its pending object exists the region is not committed (a committer deletes it only
        # after the commit): one small read, instead of opening a session at the tip, per poll.
        if store.read_lease_object(pending.name) is None:
            record = _committed(repo, pending.branch, region, key)
            if record is None:
                raise CommitConflictError(
                    f"region {region.id}: its pending fork {store.lease_location()}{pending.name} was deleted "
                    f"but the region is not committed to {pending.branch!r} for this build (deleted by hand, or "
                    "by a lifecycle rule?); run the region again"
                )
            return record
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # Jitter, so that writers handing over together do not poll together.
        time.sleep(min(delay * random.uniform(0.5, 1.0), remaining))
        delay = min(delay * 2, _MAX_POLL_S)
    raise CommitWaitTimeoutError(
        f"region {region.id}: not committed to {pending.branch!r} within {store.commit_wait_s:.0f} s "
        f"(commit_wait_s; {rounds} committer rounds of our own). Its fork stays pending at "
        f"{store.lease_location()}{pending.name} for the next committer: run the region again later"
    )


def write_region_by_protocol(
    store: IcechunkStore,
    grid: GridSpec,
    region: Region,
    ds: xr.Dataset,
    *,
    key: BuildKey,
    run_id: str,
    branch: str | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> WriteResult:
    """Write and commit one region with the store's ``commit_protocol``: batch or direct.

    Parameters and result as for :func:`~resources.region_write.write_region`; with
    ``"batch"``, :func:`write_region_batched`.
    """
    write = write_region_batched if store.commit_protocol == "batch" else write_region
    return write(store, grid, region, ds, key=key, run_id=run_id, branch=branch, extra_metadata=extra_metadata)

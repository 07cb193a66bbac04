"""One committer round: commit every pending fork, one batch commit per branch, and delete them.

Run by whichever region writer holds the commit lease (:mod:`resources.batch_handoff`, which
describes the whole protocol) over the forks handed over as pending objects
(:mod:`resources.pending_forks`).
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from resources.batch_commit import commit_batch
from resources.ledger import CommitRecord
from resources.pending_forks import FORK_ID, IO_THREADS, PendingFork, read_pending
from resources.store import IcechunkStore
from risk_model.errors import CommitConflictError

log = logging.getLogger(__name__)


@dataclass
class CommitRound:
    """What one committer round (:func:`commit_pending`) did."""

    committed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The commit now holding each pending fork's region for its key, by pending object name.
    records: dict[str, CommitRecord] = field(default_factory=dict)


def _stale(store: IcechunkStore, pending: PendingFork, now: datetime) -> bool:
    """Whether ``pending``'s writer lease is gone and it is older than the writer lease TTL."""
    if now - pending.handed_at <= timedelta(seconds=store.writer_lease_ttl_s):
        return False
    return not store.writer_alive(pending.writer_lease, pending.host, pending.pid)


def commit_pending(store: IcechunkStore) -> CommitRound:
    """One committer round: commit every pending fork, one batch commit per branch, and delete them.

    Call it only while holding :meth:`~resources.store.IcechunkStore.commit_lease` (correctness
    does not depend on it, the load on the store does). A pending fork is deleted once its region
    is committed for its key (by this batch or an earlier commit); a stale one (see
    :mod:`resources.batch_handoff`) is deleted without being committed; a fork of a batch that
    could not be committed stays.

    Returns
    -------
    CommitRound
        Regions committed, skipped (already committed), dropped (stale), left pending.

    Raises
    ------
    LeaseIOError
        If the pending objects cannot be listed, read or deleted.
    StoreError
        If the repository cannot be opened.
    """
    started = time.perf_counter()
    round_ = CommitRound()
    now = datetime.now(UTC)
    by_branch: dict[str, list[PendingFork]] = {}
    found, round_.unreadable = read_pending(store)
    for pending in found:
        if _stale(store, pending, now):
            log.warning(
                "dropping pending fork %s without committing it: its writer (host %s, pid %d) is gone and it was "
                "handed over at %s, longer ago than the writer lease TTL, so its chunks may have been garbage "
                "collected; region %s stays missing and is rebuilt by the next build of missing regions",
                pending.name,
                pending.host,
                pending.pid,
                pending.handed_at.isoformat(timespec="seconds"),
                pending.fork.region,
            )
            store.delete_lease_object(pending.name)
            round_.dropped.append(pending.fork.region)
            continue
        by_branch.setdefault(pending.branch, []).append(pending)
    for branch, forks in sorted(by_branch.items()):
        try:
            result = commit_batch(store, [pending.fork for pending in forks], branch=branch)
        except CommitConflictError as err:
            # Left pending: the next round (this writer's or another's) tries again.
            log.warning("batch of %d regions on %s not committed this round: %s", len(forks), branch, err)
            round_.left.extend(pending.fork.region for pending in forks)
            continue
        if result.snapshot_id is not None:
            round_.snapshots.append(result.snapshot_id)
        done: list[PendingFork] = []
        for pending in forks:
            outcome = result.outcomes.get(pending.fork.region)
            if outcome is None or outcome.commit is None or outcome.commit.key != pending.fork.key:
                # Another fork of the region for another key went first: commit this one next round.
                round_.left.append(pending.fork.region)
                continue
            done.append(pending)
            round_.records[pending.name] = outcome.commit
            ours = outcome.status == "written" and outcome.commit.metadata.get(FORK_ID) == pending.fork_id
            (round_.committed if ours else round_.skipped).append(pending.fork.region)
        with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
            list(pool.map(store.delete_lease_object, [pending.name for pending in done]))
    round_.seconds = time.perf_counter() - started
    return round_

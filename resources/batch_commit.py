"""Batch commits: region writers write chunks in forked sessions, one committer commits many regions at once.

Why: on an object store a commit costs ``(1 + rebase attempts) x flush``, and rebase attempts
grow with the number of writers committing at once (``docs/scale.md``: 12 rebases per commit
on average at 16 writers). Only one commit lands per flush time whatever the number of
writers, so direct commits queue up at ``n_writers x flush``. Here a writer does everything
but the commit: it writes its region's chunks and mark into a fork of a writable session
(:func:`write_region_fork`) and hands the pickled fork (a few kB: the chunks themselves are
already in storage) to a committer, which merges every fork it holds and commits them in one
commit (:func:`commit_batch`). One flush then serves a whole batch.

What stays per region:

- provenance: the batch commit's metadata (kind ``"regions"``) maps each region id to the
  same fields a single region commit carries (:func:`~resources.region_write.region_provenance`);
  :func:`~resources.ledger.iter_region_commits` yields one record per region of a batch, so the
  ledger, reconciliation, lineage and completeness read a batch as that many region commits;
- exactly one commit per (region, build key): every fork writes its region's mark; the
  committer drops a fork whose region's mark at the batch's base already holds its key
  (reported ``skipped``) and a second fork of one region in the same batch; a concurrent
  committer of the same region conflicts on the mark chunk (the batch is then rebuilt over
  the winner, a bounded number of times);
- a writer killed before its fork is committed leaves only unreferenced chunk objects, as
  with direct commits: nothing is visible to readers, and a rerun writes the region again.

Maintenance must not collect the forks' chunks before their commit: writers hold their
writer lease until their region is committed, and the committer holds one while it commits.
"""

import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import icechunk
import xarray as xr
from icechunk.xarray import to_icechunk

from resources.ledger import (
    BATCH_KIND,
    BATCH_REGIONS,
    CommitRecord,
    find_commit,
    marked_key,
    marked_keys,
    region_records,
)
from resources.region_write import check_store_chunks, mark_region, region_provenance, require_template
from resources.store import IcechunkStore
from risk_model.alignment import check_alignment
from risk_model.errors import CommitConflictError
from risk_model.grid import GridSpec, Region
from risk_model.versions import BuildKey

#: How many times a batch is rebuilt over a concurrent committer that won a region of it.
BATCH_REBUILDS = 5


@dataclass(frozen=True)
class RegionFork:
    """One region's chunks, written in a fork session and not yet committed.

    Attributes
    ----------
    region
        The region id.
    key
        The build key the region was computed for.
    fork
        The pickled :class:`icechunk.ForkSession` holding the region's chunk references and mark.
    provenance
        The region's entry in the batch commit's metadata.
    seconds_writing
        Time spent writing the chunks and mark.
    bytes_written
        Uncompressed size of the region's arrays.
    """

    region: str
    key: BuildKey
    fork: bytes
    provenance: dict[str, Any]
    seconds_writing: float = 0.0
    bytes_written: int = 0


@dataclass(frozen=True)
class RegionOutcome:
    """What a batch did with one region."""

    region: str
    status: Literal["written", "skipped"]
    snapshot_id: str
    commit: CommitRecord | None


@dataclass(frozen=True)
class BatchResult:
    """What :func:`commit_batch` did."""

    snapshot_id: str | None
    outcomes: dict[str, RegionOutcome]
    seconds_committing: float = 0.0
    rebase_attempts: int = 0
    rebuilds: int = 0
    written: list[str] = field(default_factory=list)


def write_region_fork(
    store: IcechunkStore,
    grid: GridSpec,
    region: Region,
    ds: xr.Dataset,
    *,
    key: BuildKey,
    run_id: str,
    branch: str | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> RegionFork | None:
    """Write one region's chunks and mark into a fork session, for :func:`commit_batch`.

    Parameters
    ----------
    store, grid, region, ds, key, run_id, branch, extra_metadata
        As for :func:`~resources.region_write.write_region`.

    Returns
    -------
    RegionFork | None
        The fork to hand to the committer, or ``None`` if the branch's tip already holds the
        region for ``key`` (nothing written).

    Raises
    ------
    MisalignedRegionError
        If ``ds`` is not exactly ``region`` (checked before any write).
    TemplateMissingError
        If the branch has no template of this grid.
    """
    check_alignment(grid, ds, expected=region)
    branch = branch or store.branch
    repo = store.repository()
    require_template(store, repo, grid, branch)
    session = repo.writable_session(branch)
    # The mark at this session's base: a region already there for this key is not written again.
    # (The committer checks again at its own base, which may be newer.)
    if marked_key(repo, region.id, snapshot_id=session.snapshot_id) == key:
        return None
    fork = session.fork()
    check_store_chunks(fork, grid, ds)
    payload = ds.drop_attrs(deep=True)
    started = time.perf_counter()
    to_icechunk(payload, fork, region="auto")
    mark_region(fork, region, key, run_id)
    return RegionFork(
        region=region.id,
        key=key,
        fork=pickle.dumps(fork),
        provenance=region_provenance(grid, region, key, run_id, extra_metadata),
        seconds_writing=time.perf_counter() - started,
        bytes_written=int(sum(v.nbytes for v in payload.data_vars.values())),
    )


def commit_batch(store: IcechunkStore, forks: Sequence[RegionFork], *, branch: str | None = None) -> BatchResult:
    """Commit many regions' forks in one commit, each region once, with per-region provenance.

    A region whose mark at the batch's base already holds its key is reported ``skipped``
    with the existing commit; so is a second fork of a region already in the batch. If a
    concurrent committer wins one of the batch's regions (a conflict on its mark), the batch
    is rebuilt over the new tip, where that region is then skipped.

    Parameters
    ----------
    store
        The repository's storage resource.
    forks
        The regions' forks, from :func:`write_region_fork` (in any process).
    branch
        The branch to commit to; the store's by default.

    Returns
    -------
    BatchResult
        The commit's snapshot (``None`` if every region was skipped) and each region's outcome.

    Raises
    ------
    CommitConflictError
        If the batch could not be committed within the store's ``rebase_tries`` rebases and
        :data:`BATCH_REBUILDS` rebuilds; nothing of it was committed: hand the forks again.
    """
    branch = branch or store.branch
    repo = store.repository()
    started = time.perf_counter()
    for rebuild in range(BATCH_REBUILDS + 1):
        session = repo.writable_session(branch)
        base = session.snapshot_id
        chosen: dict[str, RegionFork] = {}
        outcomes: dict[str, RegionOutcome] = {}
        marked = marked_keys(repo, sorted({fork.region for fork in forks}), snapshot_id=base)
        for fork in forks:
            if fork.region in chosen or fork.region in outcomes:
                continue
            if marked[fork.region] == fork.key:
                existing = find_commit(repo, None, fork.region, fork.key, snapshot_id=base)
                if existing is not None:
                    outcomes[fork.region] = RegionOutcome(fork.region, "skipped", existing.snapshot_id, existing)
                    continue
            chosen[fork.region] = fork
        if not chosen:
            return BatchResult(None, outcomes, time.perf_counter() - started, 0, rebuild)
        session.merge(*(pickle.loads(fork.fork) for fork in chosen.values()))
        metadata = {
            "kind": BATCH_KIND,
            BATCH_REGIONS: {region: fork.provenance for region, fork in sorted(chosen.items())},
        }
        try:
            with store.commit_guard():
                snapshot_id = session.commit(
                    f"{len(chosen)} regions",
                    metadata=metadata,
                    rebase_with=icechunk.ConflictDetector(),
                    rebase_tries=store.rebase_tries,
                )
        except icechunk.ConflictError:
            # Usually a concurrent committer of one of these regions: rebuild over its commit.
            continue
        info = repo.lookup_snapshot(snapshot_id)
        for record in region_records(info):
            outcomes[record.region] = RegionOutcome(record.region, "written", snapshot_id, record)
        rebases = int((info.metadata or {}).get("__icechunk", {}).get("rebase_attempts", 0))
        return BatchResult(
            snapshot_id, outcomes, time.perf_counter() - started, rebases, rebuild, written=sorted(chosen)
        )
    raise CommitConflictError(
        f"a batch of {len(forks)} regions could not be committed to {branch!r} within {BATCH_REBUILDS} rebuilds "
        f"of {store.rebase_tries} rebase tries; nothing was committed: hand the forks to the committer again"
    )

"""Write one region into its version's branch and commit it, unless that build is already there.

The commit is the last step: a worker killed before it leaves only unreferenced chunk objects,
which no reader ever sees. The IO manager, the command line, the benchmarks and the racing
process tests all share :func:`write_region`.

Exactly one commit per (region, build key), by construction: every region commit also writes
that region's mark, a one-element array ``_region_commits/<region>``, so two writers of one
region always touch the same node, and the later commit is refused by Icechunk's conflict
detector even when the region's data is all fill value (no data chunk written). The loser
looks again and reports the winner's commit as ``skipped``. A writer also re-checks the
commits made between its first look and the base of its session, which a rebase would not
see as conflicting.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import icechunk
import xarray as xr
import zarr
from icechunk.xarray import to_icechunk

from resources.branches import branch_exists
from resources.ledger import REGION_KIND, REGION_MARKS, CommitRecord, find_commit
from resources.store import IcechunkStore, StoreError, disk_full_error
from resources.template import TemplateMissingError, template_attrs
from risk_model.alignment import MisalignedRegionError, check_alignment
from risk_model.errors import CommitConflictError
from risk_model.grid import GridSpec, Region
from risk_model.versions import BuildKey


@dataclass(frozen=True)
class WriteResult:
    """What :func:`write_region` did."""

    status: Literal["written", "skipped"]
    region: str
    snapshot_id: str
    commit: CommitRecord | None
    seconds_writing: float = 0.0
    seconds_committing: float = 0.0
    bytes_written: int = 0


def require_template(store: IcechunkStore, repo: icechunk.Repository, grid: GridSpec, branch: str) -> None:
    """Refuse to write a region unless ``branch`` exists and holds the template of ``grid``.

    Raises
    ------
    TemplateMissingError
        If the branch is missing or its template is absent or of another grid.
    """
    if not branch_exists(repo, branch):
        raise TemplateMissingError(f"{store.location()} has no branch {branch!r}: materialize raster_template first")
    template = template_attrs(repo, branch)
    if template is None or template.get("grid_fingerprint") != grid.fingerprint:
        raise TemplateMissingError(
            f"branch {branch!r} of {store.location()} has no template of grid {grid.name!r}: "
            "materialize raster_template first"
        )


def region_provenance(
    grid: GridSpec, region: Region, key: BuildKey, run_id: str, extra_metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    """What a commit records about one region: id, window, build key, run, time.

    A region commit carries it as its metadata; a batch commit (:mod:`resources.batch_commit`)
    carries one per region under ``regions``.
    """
    west, south, east, north = region.bounds
    return {
        "region": region.id,
        "grid": grid.name,
        "params_version": key.params_version,
        "inputs_version": key.inputs_version,
        "code_version": key.code_version,
        "run_id": run_id,
        # JSON has no datetime: icechunk rejects one in metadata with a confusing TypeError.
        "written_at": datetime.now(UTC).isoformat(),
        "bounds": [west, south, east, north],
        "rows": [region.rows.start, region.rows.stop],
        "cols": [region.cols.start, region.cols.stop],
        **(extra_metadata or {}),
    }


def check_store_chunks(session: icechunk.Session | icechunk.ForkSession, grid: GridSpec, ds: xr.Dataset) -> None:
    """Refuse to write unless the store's arrays are chunked like the grid says."""
    group = zarr.open_group(session.store, mode="r")
    for name in ds.data_vars:
        try:
            array = group[str(name)]
        except KeyError as err:
            raise TemplateMissingError(
                f"variable {name!r} is not in the template on this branch: materialize raster_template"
            ) from err
        if not isinstance(array, zarr.Array) or tuple(array.chunks) != tuple(grid.chunks):
            raise MisalignedRegionError(
                f"the store's {name!r} is chunked {getattr(array, 'chunks', None)}, not {grid.chunks} as "
                f"grid {grid.name!r} says; nothing was written"
            )


def write_region(
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
    """Write one region into a branch and commit it, unless it is already there.

    The commit is the last step: a worker killed before it leaves only unreferenced chunk
    objects, which no reader ever sees. A region whose newest commit has the same build key
    is skipped: nothing is written and no commit is made.

    Parameters
    ----------
    store
        The repository's storage resource.
    grid
        The grid the template was made from.
    region
        The region ``ds`` must cover exactly.
    ds
        The region's data, coordinates equal to the template's.
    key
        Parameters, inputs and code version of ``ds``: recorded in the commit metadata, and
        decides whether the write is needed.
    run_id
        The Dagster run (or other process) that produced ``ds``, for lineage.
    branch
        The branch to commit to; the store's branch by default. It must exist and hold the
        template (see :func:`ensure_branch`).
    extra_metadata
        More JSON-able string fields for the commit metadata.

    Returns
    -------
    WriteResult
        ``status="written"`` with the new snapshot, or ``status="skipped"`` with the
        existing commit.

    Raises
    ------
    MisalignedRegionError
        If ``ds`` is not exactly ``region`` (checked before any write).
    TemplateMissingError
        If the branch has no template of this grid.
    CommitConflictError
        If the commit could not be rebased over concurrent commits within the store's
        ``rebase_tries``: retry (the region is rebased over the winners).
    StoreError
        If the store could not be reached within its storage retries: retry later.
    LeaseIOError
        If the writer lease objects could not be written or read: retry later.
    StoreFullError
        If the store's disk is full (or over quota): nothing of the region was committed.
    """
    check_alignment(grid, ds, expected=region)
    # The lease covers every read of the history too, not only the session: maintenance
    # expiring and collecting under the reads below would fail them ("object not found").
    with store.writer_lease():
        try:
            return _write_if_needed(store, grid, region, ds, key, run_id, branch or store.branch, extra_metadata)
        except icechunk.StorageError as err:
            # The store stayed unreachable for longer than the storage retries (the store's
            # request_max_tries): a "retry later", not a bug. The commit may have landed just
            # before the connection was lost; the next write of the region then skips it.
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StoreError(
                f"region {region.id}: the store at {store.location()} could not be reached ({first_line}). "
                "Write the region again once the store is back: if this attempt's commit landed, the region "
                "is skipped, not committed twice"
            ) from err


def _write_if_needed(
    store: IcechunkStore,
    grid: GridSpec,
    region: Region,
    ds: xr.Dataset,
    key: BuildKey,
    run_id: str,
    branch: str,
    extra_metadata: dict[str, str] | None,
) -> WriteResult:
    """The checks, write and commit of :func:`write_region`, under the store's writer lease."""
    repo = store.repository()
    require_template(store, repo, grid, branch)
    seen_tip = repo.lookup_branch(branch)
    existing = find_commit(repo, branch, region.id, key, snapshot_id=seen_tip)
    if existing is not None:
        return _skipped(existing)
    session = repo.writable_session(branch)
    # A writer of this region may have committed between the look above and this session's
    # base: the rebase cannot see that (it is in the base), so look again, at just the
    # commits in between.
    if session.snapshot_id != seen_tip:
        existing = find_commit(repo, None, region.id, key, snapshot_id=session.snapshot_id, stop_at=seen_tip)
        if existing is not None:
            return _skipped(existing)
    try:
        return _write_and_commit(store, repo, session, branch, grid, region, ds, key, run_id, extra_metadata)
    except (icechunk.IcechunkError, OSError) as err:
        # A full disk fails every region the same way: say so once, and never retry it.
        full = disk_full_error(store, err, f"writing region {region.id}")
        if full is None:
            raise
        raise full from err


def _skipped(existing: CommitRecord) -> WriteResult:
    return WriteResult("skipped", existing.region, existing.snapshot_id, existing)


def mark_region(session: icechunk.Session | icechunk.ForkSession, region: Region, key: BuildKey, run_id: str) -> None:
    """Write ``region``'s mark, the node every writer of that region touches (see the module)."""
    root = zarr.open_group(session.store, mode="r+")
    marks = root.require_group(REGION_MARKS)
    if region.id in marks:
        mark = marks[region.id]
        assert isinstance(mark, zarr.Array), f"{REGION_MARKS}/{region.id} is not an array"
    else:
        mark = marks.create_array(region.id, shape=(1,), chunks=(1,), dtype="int64", fill_value=0)
    # Only the mark's attributes change, never a chunk: two sessions updating one array's
    # metadata conflict just as two writing one chunk do, and metadata lives in the snapshot,
    # while a chunk would cost every commit one manifest per region marked (measured: a batch
    # of 64 regions committed in 0.48 s with chunk marks, 0.15 s without any mark). The time
    # makes every update a change, also a rewrite for the same key by the same run.
    mark.attrs.update({**key._asdict(), "run_id": run_id, "marked_at_ns": str(time.time_ns())})


def _write_and_commit(
    store: IcechunkStore,
    repo: icechunk.Repository,
    session: icechunk.Session,
    branch: str,
    grid: GridSpec,
    region: Region,
    ds: xr.Dataset,
    key: BuildKey,
    run_id: str,
    extra_metadata: dict[str, str] | None,
) -> WriteResult:
    """The write and commit of :func:`write_region`, in ``session``."""
    check_store_chunks(session, grid, ds)
    payload = ds.drop_attrs(deep=True)
    started = time.perf_counter()
    to_icechunk(payload, session, region="auto")
    mark_region(session, region, key, run_id)
    written = time.perf_counter()
    metadata = {"kind": REGION_KIND, **region_provenance(grid, region, key, run_id, extra_metadata)}
    try:
        with store.commit_guard():
            snapshot_id = session.commit(
                f"region {region.id} (params {key.params_version}, inputs {key.inputs_version}, "
                f"code {key.code_version})",
                metadata=metadata,
                rebase_with=icechunk.ConflictDetector(),
                rebase_tries=store.rebase_tries,
            )
    except icechunk.ConflictError as err:
        # The usual cause: another writer committed this region first. Then it is done.
        winner = find_commit(repo, branch, region.id, key)
        if winner is not None:
            return _skipped(winner)
        raise CommitConflictError(
            f"region {region.id}: could not rebase over concurrent commits in {store.rebase_tries} "
            f"tries ({err}); nothing was committed"
        ) from err
    committed = time.perf_counter()
    record = CommitRecord.from_snapshot(repo.lookup_snapshot(snapshot_id))
    nbytes = int(sum(v.nbytes for v in payload.data_vars.values()))
    return WriteResult(
        "written",
        region.id,
        snapshot_id,
        record,
        seconds_writing=written - started,
        seconds_committing=committed - written,
        bytes_written=nbytes,
    )

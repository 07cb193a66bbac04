"""The commit log as the manifest: write a region and commit it, read back what is done.

Every region commit carries structured metadata (:class:`CommitRecord`); the set of regions
that are done for a parameters and code version is read from that metadata, never from
commit messages. These functions know nothing of Dagster, so the IO manager, the command
line, the benchmarks and the racing-process tests all share them.
"""

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import icechunk
import numpy as np
import xarray as xr
import zarr
from icechunk.xarray import to_icechunk

from resources.store import IcechunkStore
from risk_assets.grid import GridSpec, Region
from risk_assets.schema import VARIABLES, encoding, template_dataset

REGION_KIND = "region"
TEMPLATE_KIND = "template"
#: Commit metadata key of a ledger table: a commit carrying one (a release's pyramid commit, a
#: maintenance checkpoint) records the newest commit of every region at that point, so readers
#: stop walking history there. It is what keeps the ledger whole after ``expire_snapshots``,
#: which drops the metadata of the region commits themselves.
LEDGER_KEY = "ledger"
#: Field order of one ledger table entry (compact: 10,000 regions stay a few hundred kB).
LEDGER_FIELDS = ("snapshot_id", "params_version", "inputs_version", "code_version", "run_id", "written_at")


class BuildKey(NamedTuple):
    """What a region's data depends on: a region committed for the same key is not built again.

    Attributes
    ----------
    params_version
        Content hash of the region's effective parameters (global parameters with the
        region's override applied).
    inputs_version
        Hash of the input datasets' versions (checksums or object generations).
    code_version
        The model code version.
    """

    params_version: str
    inputs_version: str
    code_version: str


class MisalignedRegionError(ValueError):
    """A region write that does not cover exactly whole chunks of the template."""


class TemplateMissingError(RuntimeError):
    """The branch holds no template (or a template of another grid)."""


class CommitConflictError(RuntimeError):
    """Other writers kept winning: the commit could not be rebased within the allowed tries.

    The only error worth retrying: the caller may run the region again.
    """


@dataclass(frozen=True)
class CommitRecord:
    """One region commit, as read back from the commit log."""

    snapshot_id: str
    region: str
    params_version: str
    code_version: str
    run_id: str
    written_at: datetime
    metadata: dict[str, Any] = field(repr=False)
    inputs_version: str = ""

    @property
    def key(self) -> BuildKey:
        """The build key the region was committed for."""
        return BuildKey(self.params_version, self.inputs_version, self.code_version)

    @classmethod
    def from_snapshot(cls, info: icechunk.SnapshotInfo) -> "CommitRecord | None":
        """The record of a region commit, or ``None`` for any other snapshot."""
        meta = dict(info.metadata or {})
        if meta.get("kind") != REGION_KIND:
            return None
        return cls(
            snapshot_id=info.id,
            region=str(meta["region"]),
            params_version=str(meta["params_version"]),
            code_version=str(meta["code_version"]),
            run_id=str(meta.get("run_id", "")),
            written_at=info.written_at,
            metadata=meta,
            inputs_version=str(meta.get("inputs_version", "")),
        )

    def ledger_entry(self) -> list[str]:
        """This record as one entry of a ledger table (see :data:`LEDGER_FIELDS`)."""
        return [
            self.snapshot_id,
            self.params_version,
            self.inputs_version,
            self.code_version,
            self.run_id,
            self.written_at.isoformat(),
        ]

    @classmethod
    def from_ledger_entry(cls, region: str, entry: list[str]) -> "CommitRecord":
        """A record read back from a ledger table."""
        values = dict(zip(LEDGER_FIELDS, entry, strict=True))
        return cls(
            snapshot_id=values["snapshot_id"],
            region=region,
            params_version=values["params_version"],
            code_version=values["code_version"],
            run_id=values["run_id"],
            written_at=datetime.fromisoformat(values["written_at"]),
            metadata={"kind": REGION_KIND, "region": region, **values, "from_ledger": True},
            inputs_version=values["inputs_version"],
        )


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


def iter_region_commits(
    repo: icechunk.Repository,
    branch: str | None = None,
    *,
    snapshot_id: str | None = None,
    use_ledger: bool = True,
) -> Iterator[CommitRecord]:
    """Region commits of ``branch`` (or from ``snapshot_id``), newest first.

    History is walked down to the first commit that carries a ledger table; the regions not
    seen above it are then read from the table (each region once, as its newest commit
    there) and the walk stops. Records from a table have ``metadata["from_ledger"]`` set.
    With ``use_ledger=False`` the whole history is walked and tables are ignored (to check
    a table against the commits it summarises).
    """
    ancestry = repo.ancestry(snapshot_id=snapshot_id) if snapshot_id else repo.ancestry(branch=branch)
    seen: set[str] = set()
    for info in ancestry:
        meta = info.metadata or {}
        table = meta.get(LEDGER_KEY)
        if use_ledger and isinstance(table, dict):
            for region, entry in table.items():
                if region not in seen:
                    yield CommitRecord.from_ledger_entry(region, entry)
            return
        record = CommitRecord.from_snapshot(info)
        if record is not None:
            seen.add(record.region)
            yield record


def committed_regions(
    repo: icechunk.Repository,
    branch: str | None = None,
    *,
    snapshot_id: str | None = None,
    use_ledger: bool = True,
) -> dict[str, CommitRecord]:
    """The newest commit of every region on ``branch`` (or from ``snapshot_id``; see :func:`iter_region_commits`)."""
    latest: dict[str, CommitRecord] = {}
    for record in iter_region_commits(repo, branch, snapshot_id=snapshot_id, use_ledger=use_ledger):
        latest.setdefault(record.region, record)
    return latest


def ledger_table(records: dict[str, CommitRecord]) -> dict[str, list[str]]:
    """The ledger table of ``records`` (region -> newest commit), for commit metadata."""
    return {region: records[region].ledger_entry() for region in sorted(records)}


def find_commit(repo: icechunk.Repository, branch: str, region: str, key: BuildKey) -> CommitRecord | None:
    """The newest commit of ``region`` on ``branch``, if it was made for ``key``."""
    for record in iter_region_commits(repo, branch):
        if record.region == region:
            return record if record.key == key else None
    return None


def branch_exists(repo: icechunk.Repository, branch: str) -> bool:
    """Whether ``branch`` exists."""
    return branch in repo.list_branches()


def ensure_branch(repo: icechunk.Repository, branch: str, start: str = "main") -> str:
    """Create ``branch`` at the tip of ``start`` unless it exists; return its tip.

    Safe when several workers race to create it: the losers find it created.
    """
    if not branch_exists(repo, branch):
        # Another worker may create it first: same starting point, same branch.
        with contextlib.suppress(icechunk.AlreadyExistsError):
            repo.create_branch(branch, repo.lookup_branch(start))
    return repo.lookup_branch(branch)


def template_attrs(repo: icechunk.Repository, branch: str) -> dict[str, Any] | None:
    """The root attributes of the template on ``branch``, or ``None`` if it has no template.

    Read from the branch tip (one small read), not by walking the history.
    """
    session = repo.readonly_session(branch=branch)
    try:
        group = zarr.open_group(session.store, mode="r")
    except FileNotFoundError:
        return None
    attrs = dict(group.attrs)
    return attrs if attrs.get("kind") == TEMPLATE_KIND else None


def ensure_template(store: IcechunkStore, grid: GridSpec, attrs: dict[str, str]) -> tuple[str, bool]:
    """Create the repository if needed and commit the metadata-only template once.

    Idempotent: if the branch already holds the template of ``grid``, nothing is written.

    Returns
    -------
    tuple[str, bool]
        The snapshot id holding the template and whether this call committed it.

    Raises
    ------
    TemplateMissingError
        If the branch holds a template of another grid.
    """
    repo = store.repository(create=True)
    existing = template_attrs(repo, store.branch)
    if existing is not None:
        if existing.get("grid_fingerprint") != grid.fingerprint:
            raise TemplateMissingError(
                f"{store.location()} already holds a template of grid {existing.get('grid')!r} "
                f"(fingerprint {existing.get('grid_fingerprint')}), not of grid {grid.name!r}: "
                "use another store path for this grid"
            )
        return repo.lookup_branch(store.branch), False
    session = repo.writable_session(store.branch)
    root_attrs = {"kind": TEMPLATE_KIND, "grid": grid.name, "grid_fingerprint": grid.fingerprint, **attrs}
    ds = template_dataset(grid, root_attrs)
    # compute=False: metadata and coordinates only; no chunk of data is written.
    ds.to_zarr(session.store, compute=False, encoding=encoding(grid), mode="w-", consolidated=False)
    with store.commit_guard():
        snapshot_id = session.commit(
            f"template of grid {grid.name}",
            metadata={
                "kind": TEMPLATE_KIND,
                "grid": grid.name,
                "grid_fingerprint": grid.fingerprint,
                **attrs,
            },
            rebase_with=icechunk.ConflictDetector(),
            rebase_tries=store.rebase_tries,
        )
    return snapshot_id, True


def _window_of(coord: np.ndarray[Any, Any], full_origin: float, step: float, full: np.ndarray[Any, Any]) -> slice:
    """Index window of ``coord`` inside the full coordinate ``full``, checked bit for bit."""
    start = round((float(coord[0]) - full_origin) / step - 0.5)
    stop = start + coord.size
    if start < 0 or stop > full.size or not np.array_equal(full[start:stop], coord):
        raise MisalignedRegionError(
            "the region's coordinates are not the template's: region writes need coordinates equal "
            "to the grid's bit for bit (build them with risk_assets.schema.coordinates)"
        )
    return slice(start, stop)


def check_alignment(grid: GridSpec, ds: xr.Dataset, expected: Region | None = None) -> tuple[slice, slice]:
    """Locate ``ds`` in ``grid`` and refuse it unless it covers whole chunks exactly.

    xarray checks chunk alignment only for dask arrays: a misaligned numpy write silently
    rewrites part of a neighbour's chunk. This check runs before anything is written.

    Parameters
    ----------
    grid
        The grid of the template.
    ds
        The region's dataset, with ``latitude`` and ``longitude`` coordinates.
    expected
        If given, the region that ``ds`` must be exactly.

    Returns
    -------
    tuple[slice, slice]
        The row and column windows of ``ds`` in the grid.

    Raises
    ------
    MisalignedRegionError
        If the window does not start and end on chunk boundaries (or the grid's edge), or is
        not ``expected``.
    """
    rows = _window_of(ds["latitude"].values, grid.transform[5], grid.transform[4], grid.latitude())
    cols = _window_of(ds["longitude"].values, grid.transform[2], grid.transform[0], grid.longitude())
    for name, window, chunk, size in (
        ("rows", rows, grid.chunks[0], grid.shape[0]),
        ("columns", cols, grid.chunks[1], grid.shape[1]),
    ):
        end_ok = window.stop % chunk == 0 or window.stop == size
        if window.start % chunk != 0 or not end_ok or window.stop - window.start > chunk:
            raise MisalignedRegionError(
                f"refusing a misaligned region write: {name} {window.start}:{window.stop} do not match "
                f"exactly one chunk of {chunk} on grid {grid.name!r}; nothing was written"
            )
    if expected is not None and (rows, cols) != (expected.rows, expected.cols):
        raise MisalignedRegionError(
            f"the dataset covers rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}, "
            f"but region {expected.id} is rows {expected.rows.start}:{expected.rows.stop}, columns "
            f"{expected.cols.start}:{expected.cols.stop}; nothing was written"
        )
    return rows, cols


def _check_store_chunks(session: icechunk.Session, grid: GridSpec, ds: xr.Dataset) -> None:
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
        ``rebase_tries``: the only error worth retrying.
    """
    check_alignment(grid, ds, expected=region)
    branch = branch or store.branch
    repo = store.repository()
    if not branch_exists(repo, branch):
        raise TemplateMissingError(f"{store.location()} has no branch {branch!r}: materialize raster_template first")
    template = template_attrs(repo, branch)
    if template is None or template.get("grid_fingerprint") != grid.fingerprint:
        raise TemplateMissingError(
            f"branch {branch!r} of {store.location()} has no template of grid {grid.name!r}: "
            "materialize raster_template first"
        )
    existing = find_commit(repo, branch, region.id, key)
    if existing is not None:
        return WriteResult("skipped", region.id, existing.snapshot_id, existing)
    with store.writer_lease():
        return _write_and_commit(store, repo, branch, grid, region, ds, key, run_id, extra_metadata)


def _write_and_commit(
    store: IcechunkStore,
    repo: icechunk.Repository,
    branch: str,
    grid: GridSpec,
    region: Region,
    ds: xr.Dataset,
    key: BuildKey,
    run_id: str,
    extra_metadata: dict[str, str] | None,
) -> WriteResult:
    """The write and commit of :func:`write_region`, under the store's writer lease."""
    session = repo.writable_session(branch)
    _check_store_chunks(session, grid, ds)
    payload = ds.drop_attrs(deep=True)
    started = time.perf_counter()
    to_icechunk(payload, session, region="auto")
    written = time.perf_counter()
    west, south, east, north = region.bounds
    metadata: dict[str, Any] = {
        "kind": REGION_KIND,
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


def regions_with_chunks(
    repo: icechunk.Repository, branch: str | None = None, *, snapshot_id: str | None = None
) -> dict[str, set[str]]:
    """For each variable, the chunk keys (``"iy/ix"``) that exist on the branch tip (or snapshot).

    Read from the snapshot's manifests, independent of any commit message or metadata.
    """
    session = repo.readonly_session(snapshot_id=snapshot_id) if snapshot_id else repo.readonly_session(branch=branch)
    store = session.store

    async def collect(name: str) -> set[str]:
        prefix = f"{name}/c/"
        return {key[len(prefix) :] async for key in store.list_prefix(name) if key.startswith(prefix)}

    async def collect_all() -> dict[str, set[str]]:
        return {v.name: await collect(v.name) for v in VARIABLES}

    return asyncio.run(collect_all())

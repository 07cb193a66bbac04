"""The commit log as the manifest: read back which regions are done, and for what.

Every region commit carries structured metadata (:class:`CommitRecord`); the set of regions
that are done for a build key is read from that metadata, never from commit messages. A
ledger table (a release's pyramid commit, a maintenance checkpoint) summarises every region's
newest commit so readers stop walking history there. Nothing here knows Dagster.
"""

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import icechunk
import zarr

from risk_model.versions import BuildKey

REGION_KIND = "region"
#: Commit metadata kind of a batch commit: many regions in one commit (see
#: :mod:`resources.batch_commit`). Its ``regions`` field maps each region id to that region's
#: own provenance (the fields a single region commit carries), so every region keeps its record.
BATCH_KIND = "regions"
#: The field of a batch commit's metadata holding its per-region provenance.
BATCH_REGIONS = "regions"
#: The group of region marks: one small array per region, written by every commit of that
#: region so that two writers of one region always conflict (see :mod:`resources.region_write`).
REGION_MARKS = "_region_commits"
#: Commit metadata key of a ledger table: a commit carrying one (a release's pyramid commit, a
#: maintenance checkpoint) records the newest commit of every region at that point, so readers
#: stop walking history there. It is what keeps the ledger whole after ``expire_snapshots``,
#: which drops the metadata of the region commits themselves.
LEDGER_KEY = "ledger"
#: Field order of one ledger table entry (compact: 10,000 regions stay a few hundred kB).
LEDGER_FIELDS = ("snapshot_id", "params_version", "inputs_version", "code_version", "run_id", "written_at")


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

    @classmethod
    def from_batch_entry(cls, info: icechunk.SnapshotInfo, region: str, entry: dict[str, Any]) -> "CommitRecord":
        """The record of one region of a batch commit (see :data:`BATCH_KIND`)."""
        meta = {
            **entry,
            "kind": REGION_KIND,
            "region": region,
            "batch": True,
            # The batch's rebase count, for the commit statistics that read it per region.
            "__icechunk": dict((info.metadata or {}).get("__icechunk", {})),
        }
        return cls(
            snapshot_id=info.id,
            region=region,
            params_version=str(entry["params_version"]),
            code_version=str(entry["code_version"]),
            run_id=str(entry.get("run_id", "")),
            written_at=info.written_at,
            metadata=meta,
            inputs_version=str(entry.get("inputs_version", "")),
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


def region_records(info: icechunk.SnapshotInfo) -> list[CommitRecord]:
    """The region records of one snapshot: one for a region commit, one per region of a batch commit.

    Parameters
    ----------
    info
        A snapshot of the repository's history.

    Returns
    -------
    list[CommitRecord]
        Empty for snapshots that commit no region (template, pyramid, checkpoint), sorted by
        region id for a batch commit.
    """
    meta = info.metadata or {}
    if meta.get("kind") == BATCH_KIND:
        regions = meta.get(BATCH_REGIONS)
        if not isinstance(regions, dict):
            return []
        return [CommitRecord.from_batch_entry(info, region, regions[region]) for region in sorted(regions)]
    record = CommitRecord.from_snapshot(info)
    return [] if record is None else [record]


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
        for record in region_records(info):
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


def inputs_checked(records: Iterable[CommitRecord], inputs_version: str, code_version: str) -> bool:
    """Whether some region was committed from inputs of ``inputs_version`` by code of ``code_version``.

    A region run checks its inputs (``validate_inputs``) before it computes a region, so such a
    commit says that inputs with exactly these contents (an inputs version is made of
    checksums, object generations or ETags) passed the checks of this code: checking them
    again would read every input to the same answer.
    """
    return any(r.inputs_version == inputs_version and r.code_version == code_version for r in records)


def ledger_table(records: dict[str, CommitRecord]) -> dict[str, list[str]]:
    """The ledger table of ``records`` (region -> newest commit), for commit metadata."""
    return {region: records[region].ledger_entry() for region in sorted(records)}


def find_commit(
    repo: icechunk.Repository,
    branch: str | None,
    region: str,
    key: BuildKey,
    *,
    snapshot_id: str | None = None,
    stop_at: str | None = None,
) -> CommitRecord | None:
    """The newest commit of ``region`` on ``branch`` (or from ``snapshot_id``), if it was made for ``key``.

    With ``stop_at``, only the commits above that snapshot are looked at (the walk stops
    there): what was committed since an earlier look. Without it, the region's mark in the
    snapshot is read first (:func:`marked_key`): a region never committed, or last committed
    for another key (the usual answers while building), is answered from that one node,
    without walking history. Only a region whose mark says ``key`` is looked up in history,
    for its commit's snapshot id.
    """
    if stop_at is None:
        marked = marked_key(repo, region, branch=branch, snapshot_id=snapshot_id)
        if marked is not _NO_MARKS and marked != key:
            return None
    ancestry = repo.ancestry(snapshot_id=snapshot_id) if snapshot_id else repo.ancestry(branch=branch)
    if stop_at is not None:
        for info in ancestry:
            if info.id == stop_at:
                return None
            for record in region_records(info):
                if record.region == region:
                    return record if record.key == key else None
        return None
    for record in iter_region_commits(repo, branch, snapshot_id=snapshot_id):
        if record.region == region:
            return record if record.key == key else None
    return None


class _NoMarks:
    """The answer of :func:`marked_key` for a snapshot older than region marks."""


_NO_MARKS = _NoMarks()


def marked_key(
    repo: icechunk.Repository, region: str, *, branch: str | None = None, snapshot_id: str | None = None
) -> BuildKey | _NoMarks | None:
    """The build key of ``region``'s newest commit, read from its mark in one snapshot.

    Every region commit writes the region's mark (``_region_commits/<region>``, see
    :mod:`resources.region_write`) in the same commit as its data, with the build key in the
    mark's attributes; so the mark at a snapshot names the key of the region's newest commit
    below it. Reading it costs a few small reads, however long the history is.

    Returns
    -------
    BuildKey | None
        The key, or ``None`` if the region was never committed. A snapshot without the marks
        group (a template older than region marks) returns a sentinel that callers treat as
        "unknown": walk the history instead.
    """
    return marked_keys(repo, [region], branch=branch, snapshot_id=snapshot_id)[region]


def marked_keys(
    repo: icechunk.Repository, regions: list[str], *, branch: str | None = None, snapshot_id: str | None = None
) -> dict[str, BuildKey | _NoMarks | None]:
    """:func:`marked_key` of many regions, read from one session of the snapshot."""
    session = repo.readonly_session(snapshot_id=snapshot_id) if snapshot_id else repo.readonly_session(branch=branch)
    root = zarr.open_group(session.store, mode="r")
    try:
        marks = root[REGION_MARKS]
    except KeyError:
        return dict.fromkeys(regions, _NO_MARKS)
    if not isinstance(marks, zarr.Group):
        return dict.fromkeys(regions, _NO_MARKS)
    return {region: _mark_key(marks, region) for region in regions}


def _mark_key(marks: zarr.Group, region: str) -> BuildKey | _NoMarks | None:
    try:
        mark = marks[region]
    except KeyError:
        return None
    attrs = mark.attrs
    try:
        return BuildKey(str(attrs["params_version"]), str(attrs["inputs_version"]), str(attrs["code_version"]))
    except KeyError:
        # A mark without a key (never written by this code): unknown, walk the history.
        return _NO_MARKS


def regions_with_chunks(
    repo: icechunk.Repository, branch: str | None = None, *, snapshot_id: str | None = None
) -> dict[str, set[str]]:
    """For each variable, the chunk keys (``"iy/ix"``) that exist on the branch tip (or snapshot).

    Read from the snapshot's manifests, independent of any commit message or metadata.
    """
    # Imported here: the schema loads xarray and dask, which reading the commit log never needs.
    from risk_model.schema import VARIABLES

    session = repo.readonly_session(snapshot_id=snapshot_id) if snapshot_id else repo.readonly_session(branch=branch)
    store = session.store

    async def collect(name: str) -> set[str]:
        prefix = f"{name}/c/"
        return {key[len(prefix) :] async for key in store.list_prefix(name) if key.startswith(prefix)}

    async def collect_all() -> dict[str, set[str]]:
        return {v.name: await collect(v.name) for v in VARIABLES}

    return asyncio.run(collect_all())

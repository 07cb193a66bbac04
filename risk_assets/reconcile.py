"""Reconcile Dagster's records with the Icechunk commit log: the decision and its inputs.

The commit log is the truth about which regions are done. Dagster's materialization
records can drift from it: a worker commits and dies before Dagster records it, a branch
is reset, a commit is lost. :func:`reconcile` decides what to do about each region from
three inputs — the desired regions, Dagster's latest record per region and the newest
commit per region — and is a pure function. :class:`ReconcileState` carries both maps
between sensor ticks in the cursor, so a tick reads only what is new: commits above the
last tip seen (or the whole history when that tip is no longer an ancestor: a reset), and
materialization records above the last storage id seen.
"""

import base64
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import icechunk
from dagster import AssetKey, AssetMaterialization, AssetRecordsFilter, DagsterInstance

from resources.ledger import LEDGER_KEY, CommitRecord, region_records
from risk_model.versions import BuildKey

#: Records fetched per call; Dagster caps one fetch at 10,000.
RECORDS_PAGE = 10_000
#: Layout version of the sensor cursor.
CURSOR_VERSION = 3


@dataclass(frozen=True)
class CommitEntry:
    """The newest commit of one region, as far as reconciliation needs it."""

    snapshot_id: str
    params_version: str
    code_version: str
    run_id: str
    committed_at: str
    inputs_version: str = ""

    @property
    def key(self) -> BuildKey:
        """The build key the region was committed for."""
        return BuildKey(self.params_version, self.inputs_version, self.code_version)

    @classmethod
    def of(cls, record: CommitRecord) -> "CommitEntry":
        """From a commit-log record."""
        return cls(
            record.snapshot_id,
            record.params_version,
            record.code_version,
            record.run_id,
            record.written_at.isoformat(),
            record.inputs_version,
        )


@dataclass(frozen=True)
class RecordEntry:
    """Dagster's latest materialization record of one region."""

    snapshot_id: str | None
    params_version: str | None
    storage_id: int


@dataclass(frozen=True)
class Actions:
    """What one reconciliation decides, region by region (each list sorted)."""

    #: committed for the current version but not recorded by Dagster: report a runless materialization
    report: list[tuple[str, CommitEntry]] = field(default_factory=list)
    #: recorded by Dagster but absent from the commit log: request a repair run, fail the check
    repair: list[tuple[str, RecordEntry]] = field(default_factory=list)
    #: committed under another build key: automation rebuilds these (counted, not requested here)
    stale: list[tuple[str, CommitEntry]] = field(default_factory=list)


def reconcile(
    desired: Iterable[str],
    keys: Mapping[str, BuildKey],
    records: Mapping[str, RecordEntry],
    commits: Mapping[str, CommitEntry],
) -> Actions:
    """Decide, for every desired region, how Dagster must follow the commit log.

    Parameters
    ----------
    desired
        Region ids that should exist (the registry).
    keys
        The current build key of every desired region.
    records
        Dagster's latest materialization record per region.
    commits
        The newest commit per region on the branch.

    Returns
    -------
    Actions
        Regions to report, repair and rebuild. A region
        that is neither committed nor recorded is simply missing: a backfill of missing
        partitions builds it, so no action is taken here.
    """
    actions = Actions()
    for region in sorted(desired):
        commit = commits.get(region)
        record = records.get(region)
        if commit is not None:
            if commit.key != keys[region]:
                actions.stale.append((region, commit))
            elif record is None or record.snapshot_id != commit.snapshot_id:
                actions.report.append((region, commit))
        elif record is not None:
            actions.repair.append((region, record))
    return actions


def reconciled_materialization(
    asset_key: AssetKey, region: str, commit: CommitEntry, branch: str, *, by: str
) -> AssetMaterialization:
    """The runless materialization that records ``region`` from its commit (no run rebuilds it).

    ``by`` names who recorded it (the reconciliation sensor, ``risk build``), for the UI.
    """
    return AssetMaterialization(
        asset_key=asset_key,
        partition=region,
        description=f"recorded from the Icechunk commit log by {by}",
        metadata={
            "status": "reconciled",
            "snapshot_id": commit.snapshot_id,
            "committed_at": commit.committed_at,
            "commit_run_id": commit.run_id,
            "branch": branch,
            "params_version": commit.params_version,
            "inputs_version": commit.inputs_version,
            "code_version": commit.code_version,
        },
    )


@dataclass
class ReconcileState:
    """What a tick remembers for the next: the commit-log tip and both per-region maps."""

    tip: str | None = None
    #: the branch ``tip`` and ``commits`` were read from
    branch: str | None = None
    commits: dict[str, CommitEntry] = field(default_factory=dict)
    records_after: int = 0
    records: dict[str, RecordEntry] = field(default_factory=dict)
    #: regions recorded but not committed at the last check evaluation
    flagged: set[str] = field(default_factory=set)
    #: stale regions and when (epoch seconds) a tick first saw each of them stale
    stale_since: dict[str, float] = field(default_factory=dict)

    def encode(self) -> str:
        """A compact cursor string (zlib-compressed JSON: thousands of regions fit)."""
        payload = {
            "v": CURSOR_VERSION,
            "tip": self.tip,
            "branch": self.branch,
            "commits": {r: list(vars(c).values()) for r, c in self.commits.items()},
            "records_after": self.records_after,
            "records": {r: [e.snapshot_id, e.params_version, e.storage_id] for r, e in self.records.items()},
            "flagged": sorted(self.flagged),
            "stale_since": self.stale_since,
        }
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.b64encode(zlib.compress(raw, 6)).decode()

    @classmethod
    def decode(cls, cursor: str | None) -> "ReconcileState":
        """The state stored in ``cursor``; a fresh state for no cursor (the first tick)."""
        if not cursor:
            return cls()
        payload: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode(cursor)))
        if payload.get("v") != CURSOR_VERSION:
            return cls()  # a cursor of an older layout: read everything again once
        return cls(
            tip=payload["tip"],
            branch=payload["branch"],
            commits={r: CommitEntry(*values) for r, values in payload["commits"].items()},
            records_after=int(payload["records_after"]),
            records={r: RecordEntry(*values) for r, values in payload["records"].items()},
            flagged=set(payload["flagged"]),
            stale_since={r: float(t) for r, t in payload["stale_since"].items()},
        )


def update_commits(state: ReconcileState, repo: icechunk.Repository, branch: str) -> int:
    """Fold the commits made since the last tick into ``state``; return how many were read.

    The branch tip is read once, and history is walked from that snapshot, so commits that
    land during the tick are left whole for the next one. If the remembered tip is not an
    ancestor of the new tip (the branch was reset or rewritten), the map is rebuilt from
    the whole history.
    """
    tip = repo.lookup_branch(branch)
    if branch != state.branch:
        # Another raster version's branch: its history is mostly shared, but read it whole
        # rather than trust a tip seen on another branch.
        state.tip, state.branch, state.commits = None, branch, {}
    if tip == state.tip:
        return 0
    new: list[icechunk.SnapshotInfo] = []
    found = False
    table: dict[str, CommitEntry] = {}
    for info in repo.ancestry(snapshot_id=tip):
        if info.id == state.tip:
            found = True
            break
        new.append(info)
        ledger = (info.metadata or {}).get(LEDGER_KEY)
        if isinstance(ledger, dict):
            # A commit carrying the ledger table (a release or a maintenance checkpoint): the
            # history below it may have been expired; the table holds what it recorded.
            table = {r: CommitEntry.of(CommitRecord.from_ledger_entry(r, e)) for r, e in ledger.items()}
            break
    if not found:
        state.commits = table
    for info in reversed(new):  # oldest first: the newest commit of a region wins
        for record in region_records(info):
            state.commits[record.region] = CommitEntry.of(record)
    state.tip = tip
    return len(new)


def update_records(state: ReconcileState, instance: DagsterInstance, asset_key: AssetKey) -> int:
    """Fold Dagster's materialization records stored since the last tick into ``state``.

    Pages through the records (one fetch returns at most 10,000); returns how many were read.
    """
    cursor: str | None = None
    seen = 0
    for _ in range(1_000_000):  # bounded: 10^10 records is beyond any instance
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=asset_key, after_storage_id=state.records_after),
            limit=RECORDS_PAGE,
            cursor=cursor,
            ascending=True,
        )
        for record in result.records:
            materialization = record.asset_materialization
            if materialization is None or materialization.partition is None:
                continue
            meta = materialization.metadata
            snapshot = meta.get("snapshot_id")
            params = meta.get("params_version")
            state.records[materialization.partition] = RecordEntry(
                snapshot_id=str(snapshot.value) if snapshot is not None else None,
                params_version=str(params.value) if params is not None else None,
                storage_id=record.storage_id,
            )
        seen += len(result.records)
        if not result.has_more:
            break
        cursor = result.cursor
    if state.records:
        state.records_after = max(state.records_after, *(e.storage_id for e in state.records.values()))
    return seen

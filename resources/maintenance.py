"""Repository maintenance: checkpoint the ledger, expire old snapshots, collect garbage.

Every region commit adds a snapshot, and the ``repo`` object lists them all, so commits get
slower as history grows (see ``FIELD-NOTES.md``). :func:`maintain` shortens history without
ever losing the ledger of done regions (:mod:`resources.ledger`). What expiry does to each ref's
history, and so to its ledger, is predicted first by :mod:`resources.expiry_plan`.

So the ledger survives exactly when each ref's tip (or a kept snapshot just below it)
carries a ledger table. Release tags carry one by design; :func:`maintain` commits an empty
*checkpoint* carrying one on ``main`` and each ``build-*`` branch whose tip has none. Tags
are immutable, so a tag without a table cannot be helped: maintenance refuses, before
changing anything, if expiry would change any ref's ledger.

Garbage collection with a cutoff newer than a writer still writing deletes that writer's
chunks while its commit still succeeds, corrupting the repository. Every writer holds a lease
in the store itself (:meth:`~resources.store.IcechunkStore.writer_lease`: a shared file lock
on local disk, a ``writer-<uuid>`` object beside the repository on object stores, see
:mod:`resources.leases`), from before it opens its session until after its commit. A lease
dies with its writer: the kernel drops a file lock at once, an object lease expires after the
store's ``writer_lease_ttl_s``. :func:`maintain` runs under
:meth:`~resources.store.IcechunkStore.maintenance_lock`, which is taken only while no writer
holds an unexpired lease and which makes new writers wait, so no writer runs while
maintenance expires and collects. As a second line, the GC cut-off is never newer than
``started_at - gc_margin`` nor than the start of the oldest live writer lease (minus the same
margin). This holds for writers outside Dagster too (the CLI, benchmarks, another instance);
the Dagster job's check of writer runs (:mod:`risk_assets.maintenance_job`) only refuses
earlier, with a clearer message.
"""

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import icechunk

from resources.expiry_plan import (
    SurvivingHistory,
    differences,
    has_ledger,
    ledger_of,
    ledgers_of,
    plan_expiry,
    refs_of,
)
from resources.ledger import LEDGER_KEY, committed_regions, ledger_table
from resources.pending_forks import pending_since
from resources.store import IcechunkStore
from risk_model.errors import RiskError, StoreUnavailableError
from risk_model.versions import BUILD_BRANCH_PREFIX, MAIN, scenario_of

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "checkpoint"


class MaintenanceError(RiskError):
    """Maintenance stopped; the message says what changed (if anything) and what to do."""


class LineageAtRiskError(MaintenanceError):
    """Expiry would change a ref's ledger; refused before anything was changed."""


class LineageLostError(MaintenanceError):
    """A ref's ledger differs after maintenance from before it.

    Attributes
    ----------
    report
        What maintenance did, with the ledger sizes before and after.
    differences
        Per ref (``branch:<name>`` or ``tag:<name>``), a description of each changed region.
    """

    def __init__(self, message: str, report: "MaintenanceReport", differences: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.report = report
        self.differences = differences


class BranchMovedError(MaintenanceError, StoreUnavailableError):
    """A branch moved while maintenance was checkpointing it: some writer is active."""


@dataclass(frozen=True)
class GCStats:
    """The numbers of icechunk's ``GCSummary``."""

    bytes_deleted: int
    chunks_deleted: int
    manifests_deleted: int
    snapshots_deleted: int
    attributes_deleted: int
    transaction_logs_deleted: int
    objects_failed_to_delete: int
    throttled_batches: int
    delete_errors: tuple[str, ...]
    skipped_phases: tuple[str, ...]

    @classmethod
    def from_summary(cls, summary: icechunk.GCSummary) -> "GCStats":
        """Copy the numbers out of a ``GCSummary``."""
        return cls(
            bytes_deleted=int(summary.bytes_deleted),
            chunks_deleted=int(summary.chunks_deleted),
            manifests_deleted=int(summary.manifests_deleted),
            snapshots_deleted=int(summary.snapshots_deleted),
            attributes_deleted=int(summary.attributes_deleted),
            transaction_logs_deleted=int(summary.transaction_logs_deleted),
            objects_failed_to_delete=int(summary.objects_failed_to_delete),
            throttled_batches=int(summary.throttled_batches),
            delete_errors=tuple(str(e) for e in summary.delete_errors),
            skipped_phases=tuple(str(p) for p in summary.skipped_phases),
        )


@dataclass(frozen=True)
class MaintenanceReport:
    """What :func:`maintain` did (or, with ``dry_run``, would do).

    Attributes
    ----------
    location
        The repository's address.
    dry_run
        Whether nothing was changed.
    started_at, finished_at
        When maintenance began and ended (UTC).
    expire_older_than
        Snapshots written before this were expired.
    gc_cutoff
        Objects written before this, and referenced by no surviving snapshot, were deleted;
        ``None`` without garbage collection.
    checkpoints
        Branch -> the checkpoint snapshot now at its tip. Branches that shared a tip share
        one checkpoint. In a dry run, branch -> ``""`` for each checkpoint that would be made.
    already_ledgered
        Branches whose tip already carried a ledger table (no checkpoint needed).
    snapshots_expired
        How many snapshots were expired (in a dry run: would be, as predicted).
    expired_as_predicted
        Whether icechunk expired exactly the snapshots predicted from the measured semantics
        (``None`` in a dry run). ``False`` means icechunk's behaviour changed: re-measure.
    gc
        Garbage collection numbers (in a dry run: of icechunk's dry run, which sees only
        what is unreachable *before* expiry); ``None`` without garbage collection.
    ledger_regions_before, ledger_regions_after
        Ref (``branch:<name>``, ``tag:<name>``) -> number of regions in its ledger.
    """

    location: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    expire_older_than: datetime
    gc_cutoff: datetime | None
    checkpoints: Mapping[str, str]
    already_ledgered: tuple[str, ...]
    snapshots_expired: int
    expired_as_predicted: bool | None
    gc: GCStats | None
    ledger_regions_before: Mapping[str, int] = field(default_factory=dict)
    ledger_regions_after: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-able values (datetimes as ISO strings)."""
        out = asdict(self)
        for name, value in out.items():
            if isinstance(value, datetime):
                out[name] = value.isoformat()
            elif isinstance(value, tuple):
                out[name] = list(value)
        if out["gc"] is not None:
            out["gc"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["gc"].items()}
        return out


def _checkpoint(
    store: IcechunkStore, repo: icechunk.Repository, branches: list[str], tip: str, started_at: datetime
) -> str:
    """Commit one empty checkpoint carrying the ledger at ``tip``; move every branch of ``branches`` to it.

    It is committed on the first branch (a build branch when one shares the tip, so that
    ``main`` still moves only by a reset to a build branch's tip); the others are reset to it
    only if they still point at ``tip``.
    """
    committer, *others = branches
    session = repo.writable_session(committer)
    if session.snapshot_id != tip:
        raise BranchMovedError(f"branch {committer!r} moved during maintenance: a writer is active; stop it and retry")
    table = ledger_table(committed_regions(repo, snapshot_id=tip))
    metadata = {
        "kind": CHECKPOINT_KIND,
        LEDGER_KEY: table,
        "checkpoint_of": tip,
        "branches": branches,
        "maintenance_started_at": started_at.isoformat(),
    }
    try:
        with store.commit_guard():
            # No rebase: if the branch moved, the table above would be stale.
            snapshot_id: str = session.commit(
                f"maintenance checkpoint: ledger of {len(table)} regions", metadata=metadata, allow_empty=True
            )
            for branch in others:
                repo.reset_branch(branch, snapshot_id, from_snapshot_id=tip)
    except icechunk.ConflictError as err:
        raise BranchMovedError(
            f"a branch of {branches} moved during maintenance ({err}): a writer is active. Checkpoints made so far "
            "are harmless; stop the writers and run maintenance again"
        ) from err
    return snapshot_id


def maintain(
    store: IcechunkStore,
    *,
    expire_older_than: datetime,
    garbage_collect: bool = True,
    gc_margin: timedelta = timedelta(minutes=10),
    dry_run: bool = False,
    wait_for_writers: timedelta = timedelta(0),
) -> MaintenanceReport:
    """Checkpoint the ledger, expire snapshots older than ``expire_older_than``, collect garbage.

    Runs inside ``store.maintenance_lock()``: refused while any writer holds an unexpired
    lease; new writers wait until it is done. Steps, in order:

    1. Read the ledger (:func:`~resources.ledger.committed_regions`) of every branch and tag.
    2. Predict expiry; refuse if any ref that gets no checkpoint would lose ledger entries.
    3. Commit an empty checkpoint carrying a ledger table on ``main`` and every ``build-*``
       branch whose tip has none (branches sharing a tip share one checkpoint).
    4. ``repo.expire_snapshots(expire_older_than)``; no branch or tag is deleted.
    5. Read every ledger again and raise (skipping garbage collection) unless each equals
       its value before.
    6. ``repo.garbage_collect(cutoff)``, with ``cutoff`` the earliest of ``expire_older_than``,
       ``started_at - gc_margin`` and the start of each live writer lease minus ``gc_margin``.

    Idempotent: a second run finds every tip ledgered and nothing older left to expire.

    Parameters
    ----------
    store
        The repository's storage resource.
    expire_older_than
        Timezone-aware cutoff: snapshots written before it are expired (ref tips never are).
    garbage_collect
        Whether to delete the objects no surviving snapshot references.
    gc_margin
        Objects written after ``started_at - gc_margin`` are never deleted, so a writer that
        began shortly before maintenance (or on a machine with a skewed clock) keeps its chunks.
    dry_run
        Change nothing: report which checkpoints would be made, how many snapshots would be
        expired, and icechunk's GC dry run (which cannot see what expiry would free).
    wait_for_writers
        How long to wait for writers holding leases to finish before refusing (on object
        stores new writers wait meanwhile, so a busy store is not starved of maintenance);
        zero refuses at once.

    Returns
    -------
    MaintenanceReport
        What was done.

    Raises
    ------
    ValueError
        If ``expire_older_than`` is naive, or ``gc_margin`` or ``wait_for_writers`` negative.
    resources.store.WritersActiveError
        If region writers hold unexpired leases (after ``wait_for_writers``), or another
        maintenance holds the lock; nothing was changed.
    LineageAtRiskError
        If expiry would change the ledger of a ref that cannot be checkpointed (a tag, or a
        branch other than ``main`` and ``build-*``, whose tip has no ledger table); nothing
        was changed.
    BranchMovedError
        If a branch moved while it was being checkpointed (an active writer).
    LineageLostError
        If any ref's ledger differs after expiry from before (carries the report; garbage
        collection was skipped).
    """
    if expire_older_than.tzinfo is None:
        raise ValueError("expire_older_than must be timezone-aware (e.g. datetime.now(UTC) - timedelta(days=7))")
    if gc_margin < timedelta(0):
        raise ValueError(f"gc_margin must not be negative, got {gc_margin}")
    if wait_for_writers < timedelta(0):
        raise ValueError(f"wait_for_writers must not be negative, got {wait_for_writers}")
    started_at = datetime.now(UTC)
    with store.maintenance_lock(wait_for_writers_s=wait_for_writers.total_seconds()):
        repo = store.repository()
        refs = refs_of(repo)
        before = ledgers_of(repo, refs)

        # Which branches get a checkpoint, grouped by tip; the committer is listed first.
        groups: dict[str, list[str]] = {}
        already: list[str] = []
        for ref, tip in refs.items():
            kind, name = ref.split(":", 1)
            readers = name == MAIN or scenario_of(name) is not None
            if kind != "branch" or not (readers or name.startswith(BUILD_BRANCH_PREFIX)):
                continue
            if has_ledger(repo, tip):
                already.append(name)
            else:
                groups.setdefault(tip, []).append(name)
        for names in groups.values():
            names.sort(key=lambda b: (b == MAIN or scenario_of(b) is not None, b))

        checkpointed = {f"branch:{b}" for names in groups.values() for b in names}
        pinned = {tip for ref, tip in refs.items() if ref not in checkpointed}
        starts: dict[str, bool] = {}
        for ref, tip in refs.items():
            starts[tip] = starts.get(tip, False) or ref not in checkpointed
        chains, predicted = plan_expiry(repo, starts, expire_older_than, pinned)
        # Duck-typed: committed_regions only walks ``ancestry(snapshot_id=...)``, so the same
        # reader code that computes the ledger now computes it on the predicted history.
        surviving = cast(icechunk.Repository, SurvivingHistory(chains))
        at_risk = {
            ref: diff
            for ref, tip in refs.items()
            if ref not in checkpointed
            and (diff := differences(before[ref], ledger_of(committed_regions(surviving, snapshot_id=tip))))
        }
        if at_risk:
            detail = "; ".join(f"{ref}: {len(lines)} regions ({lines[0]}, ...)" for ref, lines in at_risk.items())
            raise LineageAtRiskError(
                f"refusing maintenance of {store.location()}: expiring snapshots older than "
                f"{expire_older_than.isoformat()} would lose ledger entries of refs whose tip carries no ledger "
                f"table and cannot be checkpointed: {detail}. Use an older expire_older_than, or (for a branch "
                "other than main and build-*) commit a ledger table on it or delete it; nothing was changed"
            )

        checkpoints: dict[str, str] = {}
        if dry_run:
            checkpoints = {b: "" for names in groups.values() for b in names}
            expired_count, as_predicted = len(predicted), None
        else:
            for tip, names in groups.items():
                snapshot_id = _checkpoint(store, repo, names, tip, started_at)
                checkpoints.update(dict.fromkeys(names, snapshot_id))
            expired = repo.expire_snapshots(expire_older_than, delete_expired_branches=False, delete_expired_tags=False)
            expired_count, as_predicted = len(expired), set(expired) == predicted
            if not as_predicted:
                log.warning(
                    "icechunk expired %d snapshots where %d were predicted: its expiry semantics changed, "
                    "re-measure them (resources/maintenance.py)",
                    len(expired),
                    len(predicted),
                )

        # Verify before garbage collection: if lineage was lost, the expired snapshot files are
        # still in storage for a human to recover the metadata from.
        after = before if dry_run else ledgers_of(repo, {ref: tip for ref, tip in refs_of(repo).items() if ref in refs})
        lost = {ref: lines for ref in before if (lines := differences(before[ref], after.get(ref, {})))}
        gc_cutoff = None
        if garbage_collect and not lost:
            # The lock keeps writers out, so normally no lease is live here; a writer that
            # slipped in anyway (a clock skewed past the TTL) still keeps every object it wrote.
            gc_cutoff = min(
                [expire_older_than, started_at - gc_margin]
                + [lease.started_at - gc_margin for lease in store.live_writer_leases()]
                # A fork handed to the batch committer is referenced by no snapshot until its
                # commit, and its writer may be gone: keep everything written since it began.
                + [since - gc_margin for since in pending_since(store)]
            )
        gc = None
        if gc_cutoff is not None:
            gc = GCStats.from_summary(repo.garbage_collect(gc_cutoff, dry_run=dry_run))
        report = MaintenanceReport(
            location=store.location(),
            dry_run=dry_run,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            expire_older_than=expire_older_than,
            gc_cutoff=gc_cutoff,
            checkpoints=checkpoints,
            already_ledgered=tuple(already),
            snapshots_expired=expired_count,
            expired_as_predicted=as_predicted,
            gc=gc,
            ledger_regions_before={ref: len(ledger) for ref, ledger in before.items()},
            ledger_regions_after={ref: len(after.get(ref, {})) for ref in before},
        )
        if lost:
            detail = "; ".join(f"{ref}: {lines[:3]}" for ref, lines in lost.items())
            raise LineageLostError(
                f"expiring snapshots of {store.location()} changed the ledger of {sorted(lost)}: {detail}. "
                "Garbage collection was skipped, so the expired snapshot files are still in storage; the entries "
                "before maintenance are in this error's differences. Record them, and do not run garbage "
                "collection until the lineage is restored",
                report,
                lost,
            )
        return report

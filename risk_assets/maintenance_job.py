"""The ``maintain_repository`` job: repository maintenance that refuses to race region writers.

Garbage collection while a region writer is still writing deletes that writer's chunks and
corrupts the repository (``FIELD-NOTES.md``). What prevents it on every store is the store's
own leases: each writer holds one from before its session until after its commit (a file lock
locally, a lease object beside the repository on object stores, :mod:`resources.leases`), and
:func:`resources.maintenance.maintain` runs under the store's maintenance lock, which it takes
only while no unexpired lease is held and which makes new writers wait. That covers writers
outside this Dagster instance too (the CLI, benchmarks, another deployment).

Before touching the store, the op also asks the Dagster instance whether any writer run (or
another maintenance run) is queued or in progress, and refuses if so: not for safety, but so
that maintenance does not start between two region runs of a build (making its next runs
wait), and so that the refusal names the runs to wait for.

The ``history_maintenance`` sensor (:mod:`risk_assets.history_sensor`) requests this job by itself,
with expiry only, once history has grown.
"""

from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    Config,
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    JobDefinition,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    ResourceParam,
    RunsFilter,
    job,
    op,
)
from pydantic import Field

from resources.maintenance import MaintenanceError, MaintenanceReport, maintain
from resources.store import IcechunkStore, WritersActiveError

MAINTENANCE_JOB = "maintain_repository"

#: Every status of a run that has not finished: such a run may write now or soon. Dagster's
#: in-progress statuses (starting, started, canceling, suspended) plus the ones before them
#: (not started, queued); spelled out so no private Dagster module is imported.
ACTIVE_RUN_STATUSES: tuple[DagsterRunStatus, ...] = (
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
    DagsterRunStatus.SUSPENDED,
)


@dataclass(frozen=True)
class ActiveRun:
    """A run that blocks maintenance.

    Attributes
    ----------
    run_id
        The Dagster run id.
    job_name
        Its job.
    status
        Its status when checked.
    reason
        Why it counts as a writer (its job, or which writer assets it selects).
    """

    run_id: str
    job_name: str
    status: str
    reason: str

    def describe(self) -> str:
        """One line for messages."""
        return f"run {self.run_id} of job {self.job_name!r} ({self.status}; {self.reason})"


def active_writer_runs(
    instance: DagsterInstance,
    *,
    writer_job_names: Collection[str],
    writer_asset_keys: Collection[AssetKey],
    exclude_run_ids: Iterable[str] = (),
) -> list[ActiveRun]:
    """The unfinished runs that write (or may write) the repository.

    A run counts if its status is one of :data:`ACTIVE_RUN_STATUSES` and either its job is
    one of ``writer_job_names`` or its asset selection includes one of ``writer_asset_keys``.

    Parameters
    ----------
    instance
        The Dagster instance to ask.
    writer_job_names
        Jobs whose runs write region commits (e.g. ``build_region``).
    writer_asset_keys
        Assets whose materialization writes the repository (runs of any job that select them).
    exclude_run_ids
        Runs to ignore (the asking run itself).

    Returns
    -------
    list[ActiveRun]
        Oldest first.
    """
    names = frozenset(writer_job_names)
    keys = frozenset(writer_asset_keys)
    excluded = frozenset(exclude_run_ids)
    active = []
    for record in instance.get_run_records(RunsFilter(statuses=list(ACTIVE_RUN_STATUSES)), ascending=True):
        run = record.dagster_run
        if run.run_id in excluded:
            continue
        selected = keys & (run.asset_selection or frozenset())
        if run.job_name in names:
            reason = "a writer job"
        elif selected:
            reason = "selects " + ", ".join(sorted(k.to_user_string() for k in selected))
        else:
            continue
        active.append(ActiveRun(run.run_id, run.job_name, run.status.value, reason))
    return active


class MaintenanceConfig(Config):
    """Run configuration of ``maintain_repository``."""

    expire_older_than_days: float = Field(
        default=7, ge=0, description="Expire snapshots older than this many days (branch and tag tips never are)."
    )
    garbage_collect: bool = Field(default=True, description="Delete the objects that no surviving snapshot references.")
    dry_run: bool = Field(default=False, description="Change nothing; report what would be done.")
    refuse_while_writer_runs: bool = Field(
        default=True,
        description=(
            "Refuse while writer runs are queued or in progress. When false (the automatic history "
            "maintenance), only other maintenance runs are refused and the store's leases alone keep "
            "maintenance from running beside a writer."
        ),
    )
    wait_for_writers_s: float = Field(
        default=0,
        ge=0,
        description=(
            "How long to wait for writers holding leases on the store to finish (new writers wait meanwhile "
            "on object stores) before refusing; 0 refuses at once."
        ),
    )


def _refusal(what: str, runs: list[ActiveRun]) -> Failure:
    listing = "\n".join(f"- {r.describe()}" for r in runs)
    return Failure(
        description=(
            f"refusing repository maintenance: {what}. Garbage collection while a writer writes deletes its "
            "chunks and corrupts the repository. Wait for these runs to finish (or terminate them in the UI: "
            "Runs -> Terminate; delete runs stuck in NOT_STARTED), stop the sensors and schedules that launch "
            f"writer runs, then launch maintain_repository again. Nothing was changed.\n{listing}"
        ),
        metadata={"active_runs": MetadataValue.json([asdict(r) for r in runs])},
        allow_retries=False,
    )


def _metadata(report: MaintenanceReport) -> dict[str, MetadataValue]:
    data = report.as_dict()
    gc = report.gc
    return {
        "report": MetadataValue.json(data),
        "location": MetadataValue.text(report.location),
        "dry_run": MetadataValue.bool(report.dry_run),
        "checkpoints": MetadataValue.int(len(set(report.checkpoints.values())) if not report.dry_run else 0),
        "snapshots_expired": MetadataValue.int(report.snapshots_expired),
        "gc_bytes_deleted": MetadataValue.int(gc.bytes_deleted if gc else 0),
        "gc_chunks_deleted": MetadataValue.int(gc.chunks_deleted if gc else 0),
        "gc_snapshots_deleted": MetadataValue.int(gc.snapshots_deleted if gc else 0),
        "ledger_regions_after": MetadataValue.json(dict(report.ledger_regions_after)),
    }


def build_maintenance_job(writer_job_names: Collection[str], writer_asset_keys: Collection[AssetKey]) -> JobDefinition:
    """The ``maintain_repository`` job: one op that runs :func:`resources.maintenance.maintain`.

    The op refuses (``dagster.Failure``, not retried) while any other run of a writer job,
    any other run selecting a writer asset, or another maintenance run is unfinished, and
    when the store reports live writer leases (on any kind of store: the leases, not the run
    check, are what keeps garbage collection from running under a writer). Its output
    metadata is the report.

    Parameters
    ----------
    writer_job_names
        Jobs whose runs write the repository (``build_region``, ...).
    writer_asset_keys
        Assets whose materializations write the repository (``risk_raster``, ...).

    Returns
    -------
    JobDefinition
        Needs the ``store`` resource (an :class:`~resources.store.IcechunkStore`).
    """
    job_names = frozenset(writer_job_names) | {MAINTENANCE_JOB}
    asset_keys = frozenset(writer_asset_keys)

    @op(
        name="maintain_store",
        out=Out(Nothing),
        description="Checkpoint the ledger, expire old snapshots and collect garbage, unless writers are active.",
    )
    def maintain_store(
        context: OpExecutionContext, config: MaintenanceConfig, store: ResourceParam[IcechunkStore]
    ) -> Output[None]:
        if config.refuse_while_writer_runs:
            active = active_writer_runs(
                context.instance,
                writer_job_names=job_names,
                writer_asset_keys=asset_keys,
                exclude_run_ids=[context.run_id],
            )
            what = "writer or maintenance run(s)"
        else:
            active = active_writer_runs(
                context.instance,
                writer_job_names=[MAINTENANCE_JOB],
                writer_asset_keys=(),
                exclude_run_ids=[context.run_id],
            )
            what = "other maintenance run(s)"
        if active:
            raise _refusal(f"{len(active)} {what} are queued or in progress", active)
        expire_older_than = datetime.now(UTC) - timedelta(days=config.expire_older_than_days)
        try:
            report = maintain(
                store,
                expire_older_than=expire_older_than,
                garbage_collect=config.garbage_collect,
                dry_run=config.dry_run,
                wait_for_writers=timedelta(seconds=config.wait_for_writers_s),
            )
        except WritersActiveError as err:
            # Leases of writers the run check cannot see (the CLI, benchmarks, another instance),
            # or of one that started after it: the store's leases are the authority.
            raise Failure(description=str(err), allow_retries=False) from err
        except MaintenanceError as err:
            raise Failure(description=str(err), allow_retries=False) from err
        if report.expired_as_predicted is False:
            context.log.warning("icechunk expired other snapshots than predicted: re-measure its expiry semantics")
        context.log.info(
            f"{store.location()}: {report.snapshots_expired} snapshots expired, checkpoints on "
            f"{sorted(report.checkpoints) or 'no branch'}, GC {report.gc}"
        )
        return Output(None, metadata=_metadata(report))

    @job(
        name=MAINTENANCE_JOB,
        description=(
            "Repository maintenance: checkpoint the ledger of main and the build branches, expire old "
            "snapshots, collect garbage. Refuses while writer runs are queued or in progress."
        ),
    )
    def maintain_repository() -> None:
        maintain_store()

    return maintain_repository

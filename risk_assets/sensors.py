"""The reconciliation sensor: Dagster's records follow the commit log, and complete versions are released.

The sensor is a thin wrapper around :func:`risk_assets.reconcile.reconcile`: it updates the
state carried in its cursor, asks the pure function what to do, and returns the answer as
a ``SensorResult`` (runless materializations, check evaluations, run requests with
deterministic run keys). The daemon stores the events; calling the function directly only
returns them.
"""

import time

from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    ResourceParam,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

# Private on purpose: Dagster exports no name for the type ``define_asset_job`` returns, and no
# public filter for backfills by status (``DagsterInstance.get_backfills`` takes this one).
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from resources.branches import working_branch
from resources.release import is_released
from resources.store import IcechunkStore
from resources.target import InputsResource, ModelParamsResource, current_target
from risk_assets.keys import RASTER_KEY
from risk_assets.liveness import describe, reap_dead_runs
from risk_assets.reconcile import (
    CommitEntry,
    ReconcileState,
    reconcile,
    reconciled_materialization,
    update_commits,
    update_records,
)
from risk_assets.status import SENSOR_NAME, records_check_evaluation
from risk_model.digest import sha256_prefix
from risk_model.errors import RiskError
from risk_model.grid import RegionRegistry
from risk_model.versions import RasterVersion


def release_run_key(version: RasterVersion, commits: dict[str, CommitEntry]) -> str:
    """Run key of the release of ``version`` built from exactly these region commits.

    The pyramid commit moves the branch tip but not the region commits, so one complete
    build is released once; a region rebuilt after a failed release gives a new key.
    """
    commits_digest = sha256_prefix("".join(sorted(c.snapshot_id for c in commits.values())))
    return f"release:{version.id}:{commits_digest}"


#: Run statuses of a run that has not finished (it may still build its region).
UNFINISHED = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def _partitions_in_flight(instance: DagsterInstance) -> set[str]:
    """Partitions of unfinished runs."""
    records = instance.get_run_records(RunsFilter(statuses=UNFINISHED))
    return {p for r in records if (p := r.dagster_run.tags.get("dagster/partition")) is not None}


def _raster_backfill_in_flight(instance: DagsterInstance) -> bool:
    """Whether an unfinished backfill targets the raster (its regions will run in time)."""
    backfills = instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED]))
    return any(RASTER_KEY in (b.asset_selection or ()) for b in backfills)


def build_reconciliation_sensor(
    registry: RegionRegistry,
    region_job: UnresolvedAssetJobDefinition,
    release_job: UnresolvedAssetJobDefinition,
    minimum_interval_seconds: int = 30,
    stale_grace_s: float = 600.0,
) -> SensorDefinition:
    """The sensor that makes Dagster's records follow the commit log, both ways, and releases complete versions.

    ``stale_grace_s``: how long a region may stay committed under an old build key, with
    nothing in flight for it, before the sensor requests it itself (automation's job first).
    """
    desired: list[str] = registry.ids

    @sensor(
        name=SENSOR_NAME,
        jobs=[region_job, release_job],
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description=(
            "Reads the Icechunk commit log of the current raster version incrementally and reconciles Dagster "
            "with it: reports regions committed but not recorded, requests repair runs for regions recorded but "
            "not committed, and requests the release once every region of the version is committed."
        ),
    )
    def reconcile_commit_log(
        context: SensorEvaluationContext,
        store: ResourceParam[IcechunkStore],
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> SensorResult | SkipReason:
        try:
            target = current_target(params, inputs, desired)
            repo = store.repository()
        except RiskError as err:
            return SkipReason(f"cannot reconcile: {err}")
        # Runs of a killed `risk build` hold pool slots the daemon's runs would wait for forever.
        dead = reap_dead_runs(context.instance)
        if dead:
            context.log.warning(describe(dead))
        version = target.version
        keys = target.keys(desired)
        branch = working_branch(repo, store, version)
        state = ReconcileState.decode(context.cursor)
        n_commits = update_commits(state, repo, branch)
        n_records = update_records(state, context.instance, RASTER_KEY)
        actions = reconcile(desired, keys, state.records, state.commits)

        events: list[AssetMaterialization | AssetCheckEvaluation] = []
        events += [
            reconciled_materialization(RASTER_KEY, region, commit, branch, by="the reconciliation sensor")
            for region, commit in actions.report
        ]
        run_requests: list[RunRequest] = [
            RunRequest(
                job_name=region_job.name,
                partition_key=region,
                run_key=f"repair:{region}:{record.storage_id}",
                tags={"risk/reason": "repair"},
            )
            for region, record in actions.repair
        ]
        # Regions committed under another build key are automation's: it requests each change
        # once, and requesting them here too would build them twice. Dagster's eager condition
        # can swallow an update that lands while the region's previous request is in flight,
        # though, so a region stale for longer than the grace period, with no run or raster
        # backfill in flight, is requested here as a safety net (once per stale commit and key).
        now = time.time()
        state.stale_since = {r: state.stale_since.get(r, now) for r, _ in actions.stale}
        overdue = [(r, c) for r, c in actions.stale if now - state.stale_since[r] >= stale_grace_s]
        if overdue and not _raster_backfill_in_flight(context.instance):
            busy = _partitions_in_flight(context.instance)
            run_requests += [
                RunRequest(
                    job_name=region_job.name,
                    partition_key=region,
                    run_key=f"stale:{region}:{'-'.join(keys[region])}:{commit.snapshot_id}",
                    tags={"risk/reason": "stale"},
                )
                for region, commit in overdue
                if region not in busy
            ]
        complete = all(region in state.commits and state.commits[region].key == keys[region] for region in desired)
        if complete and not is_released(repo, store.branch, version):
            run_requests.append(
                RunRequest(
                    job_name=release_job.name,
                    run_key=release_run_key(version, state.commits),
                    tags={"risk/reason": "release", "risk/raster_version": version.id},
                )
            )
        lost = {region for region, _ in actions.repair}
        if lost != state.flagged:  # evaluate the check only when the disagreement changes
            events.append(records_check_evaluation(lost))
            state.flagged = lost
        context.log.info(
            f"version {version.id} on {branch}: read {n_commits} new snapshots and {n_records} new records; "
            f"reported {len(actions.report)}, repair {len(actions.repair)}, stale {len(actions.stale)}, "
            f"complete {complete}"
        )
        return SensorResult(run_requests=run_requests, asset_events=events, cursor=state.encode())

    return reconcile_commit_log

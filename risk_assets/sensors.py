"""The reconciliation sensor and the asset checks that compare Dagster with the store.

The sensor is a thin wrapper around :func:`risk_assets.reconcile.reconcile`: it updates the
state carried in its cursor, asks the pure function what to do, and returns the answer as
a ``SensorResult`` (runless materializations, check evaluations, run requests with
deterministic run keys). The daemon stores the events; calling the function directly only
returns them.
"""

import hashlib
import time
from typing import Any

import icechunk
from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    asset_check,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

from resources.ledger import branch_exists, regions_with_chunks
from resources.model import InputsResource, ModelParamsResource, current_target
from resources.release import is_released
from resources.store import IcechunkStore, StoreError
from risk_assets.grid import RegionRegistry
from risk_assets.inputs import InputError
from risk_assets.params import ParamsError
from risk_assets.reconcile import CommitEntry, ReconcileState, reconcile, update_commits, update_records
from risk_assets.versions import RasterVersion, Target

RASTER_KEY = AssetKey("risk_raster")
#: The raster's completeness as its own small asset. The checks live on it, not on
#: ``risk_raster``: Dagster runs an asset's checks in every run of the asset, and so in every
#: region's run and backfill (measured: two extra step processes per region, each scanning the
#: whole store), which would put the whole-raster checks into every spot pod.
STATUS_KEY = AssetKey("raster_status")
SENSOR_NAME = "reconcile_commit_log"
REGION_CHECK = "records_match_commit_log"
STORE_CHECK = "chunks_in_store"


def working_branch(repo: icechunk.Repository, store: IcechunkStore, version: RasterVersion) -> str:
    """The branch of ``version`` if its first region has started it, else the readers' branch.

    Until then the version's branch would start from the readers' branch anyway, so its
    commit log is that branch's.
    """
    return version.branch if branch_exists(repo, version.branch) else store.branch


def recorded_not_committed(
    store: IcechunkStore, registry: RegionRegistry, target: Target, instance: DagsterInstance
) -> list[str]:
    """Regions Dagster records as materialized that the current version's commit log lacks (a full read)."""
    repo = store.repository()
    state = ReconcileState()
    update_commits(state, repo, working_branch(repo, store, target.version))
    update_records(state, instance, RASTER_KEY)
    actions = reconcile(registry.ids, target.keys(registry.ids), state.records, state.commits)
    return sorted(region for region, _ in actions.repair)


def missing_regions(registry: RegionRegistry, chunks: dict[str, set[str]]) -> list[str]:
    """Regions some of whose variables have no chunk in the store."""
    return [r.id for r in registry if any(f"{r.iy}/{r.ix}" not in keys for keys in chunks.values())]


def build_checks(registry: RegionRegistry) -> list[AssetsDefinition | AssetChecksDefinition]:
    """``raster_status`` and its checks: store completeness, and Dagster's records against the log."""

    @asset(
        key=STATUS_KEY,
        deps=[RASTER_KEY],
        group_name="raster",
        description="How complete the raster is on the branch, read from the store.",
    )
    def raster_status(
        store: IcechunkStore,
        params: ModelParamsResource,
        inputs: InputsResource,
    ) -> MaterializeResult:  # type: ignore[type-arg]
        repo = store.repository()
        branch = working_branch(repo, store, current_target(params, inputs, registry.ids).version)
        missing = missing_regions(registry, regions_with_chunks(repo, branch))
        return MaterializeResult(
            metadata={
                "regions": len(registry),
                "regions_complete": len(registry) - len(missing),
                "missing": MetadataValue.json(missing),
                "store": store.location(),
                "branch": branch,
            }
        )

    @asset_check(
        asset=STATUS_KEY,
        name=STORE_CHECK,
        description="Every region's chunks exist in the branch's snapshot (read from the store, not the log).",
    )
    def chunks_in_store(store: IcechunkStore, params: ModelParamsResource, inputs: InputsResource) -> AssetCheckResult:
        try:
            repo = store.repository()
            branch = working_branch(repo, store, current_target(params, inputs, registry.ids).version)
            chunks = regions_with_chunks(repo, branch)
        except (StoreError, ParamsError, InputError) as err:
            return AssetCheckResult(passed=False, description=str(err))
        missing = missing_regions(registry, chunks)
        return AssetCheckResult(
            passed=not missing,
            metadata={
                "regions": len(registry),
                "regions_missing": len(missing),
                "missing": MetadataValue.json(missing),
                "store": store.location(),
                "branch": branch,
            },
        )

    @asset_check(
        asset=STATUS_KEY,
        name=REGION_CHECK,
        description=(
            "Every region Dagster records as materialized has a commit in the Icechunk log. The "
            f"{SENSOR_NAME} sensor evaluates it whenever the set of disagreeing regions changes."
        ),
    )
    def records_match_commit_log(
        context: AssetCheckExecutionContext,
        store: IcechunkStore,
        params: ModelParamsResource,
        inputs: InputsResource,
    ) -> AssetCheckResult:
        lost = recorded_not_committed(store, registry, current_target(params, inputs, registry.ids), context.instance)
        return AssetCheckResult(passed=not lost, metadata=_disagreement_metadata(lost))

    return [raster_status, chunks_in_store, records_match_commit_log]


def _disagreement_metadata(lost: list[str]) -> dict[str, MetadataValue[Any]]:
    return {
        "regions_recorded_not_committed": MetadataValue.int(len(lost)),
        "regions": MetadataValue.json(sorted(lost)),
    }


def _check(lost: set[str]) -> AssetCheckEvaluation:
    # One unpartitioned evaluation listing the regions: Dagster 1.13 stores runless evaluations
    # of a *partitioned* check with a unique (check, run id "", partition) index, so a second
    # evaluation of the same region (the failure, then its repair) cannot be stored at all.
    return AssetCheckEvaluation(
        asset_key=STATUS_KEY,
        check_name=REGION_CHECK,
        passed=not lost,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{len(lost)} regions are recorded by Dagster but absent from the commit log; repair runs were requested"
            if lost
            else "every region recorded by Dagster is in the commit log"
        ),
        metadata=_disagreement_metadata(sorted(lost)),
    )


def release_run_key(version: RasterVersion, commits: dict[str, CommitEntry]) -> str:
    """Run key of the release of ``version`` built from exactly these region commits.

    The pyramid commit moves the branch tip but not the region commits, so one complete
    build is released once; a region rebuilt after a failed release gives a new key.
    """
    digest = hashlib.sha256("".join(sorted(c.snapshot_id for c in commits.values())).encode()).hexdigest()[:12]
    return f"release:{version.id}:{digest}"


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
        store: IcechunkStore,
        params: ModelParamsResource,
        inputs: InputsResource,
    ) -> SensorResult | SkipReason:
        try:
            target = current_target(params, inputs, desired)
            repo = store.repository()
        except (ParamsError, InputError, StoreError) as err:
            return SkipReason(f"cannot reconcile: {err}")
        version = target.version
        keys = target.keys(desired)
        branch = working_branch(repo, store, version)
        state = ReconcileState.decode(context.cursor)
        n_commits = update_commits(state, repo, branch)
        n_records = update_records(state, context.instance, RASTER_KEY)
        actions = reconcile(desired, keys, state.records, state.commits)

        events: list[AssetMaterialization | AssetCheckEvaluation] = []
        for region, commit in actions.report:
            events.append(
                AssetMaterialization(
                    asset_key=RASTER_KEY,
                    partition=region,
                    description="recorded from the Icechunk commit log by the reconciliation sensor",
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
            )
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
            events.append(_check(lost))
            state.flagged = lost
        context.log.info(
            f"version {version.id} on {branch}: read {n_commits} new snapshots and {n_records} new records; "
            f"reported {len(actions.report)}, repair {len(actions.repair)}, stale {len(actions.stale)}, "
            f"complete {complete}"
        )
        return SensorResult(run_requests=run_requests, asset_events=events, cursor=state.encode())

    return reconcile_commit_log

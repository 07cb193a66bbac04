"""The reconciliation sensor and the asset checks that compare Dagster with the store.

The sensor is a thin wrapper around :func:`risk_assets.reconcile.reconcile`: it updates the
state carried in its cursor, asks the pure function what to do, and returns the answer as
a ``SensorResult`` (runless materializations, check evaluations, run requests with
deterministic run keys). The daemon stores the events; calling the function directly only
returns them.
"""

import asyncio
from collections.abc import Iterable
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
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    asset_check,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from resources.model import ModelParamsResource
from resources.store import IcechunkStore, StoreError
from risk_assets.grid import RegionRegistry
from risk_assets.params import ParamsError
from risk_assets.reconcile import ReconcileState, reconcile, update_commits, update_records
from risk_assets.schema import VARIABLES
from risk_assets.version import MODEL_CODE_VERSION

RASTER_KEY = AssetKey("risk_raster")
#: The raster's completeness as its own small asset. The checks live on it, not on
#: ``risk_raster``: Dagster runs an asset's checks in every run of the asset, and so in every
#: region's run and backfill (measured: two extra step processes per region, each scanning the
#: whole store), which would put the whole-raster checks into every spot pod.
STATUS_KEY = AssetKey("raster_status")
SENSOR_NAME = "reconcile_commit_log"
REGION_CHECK = "records_match_commit_log"
STORE_CHECK = "chunks_in_store"


def regions_with_chunks(repo: icechunk.Repository, branch: str) -> dict[str, set[str]]:
    """For each variable, the chunk keys (``"iy/ix"``) that exist on the branch tip.

    Read from the snapshot's manifests, independent of any commit message or metadata.
    """
    store = repo.readonly_session(branch=branch).store

    async def collect(name: str) -> set[str]:
        prefix = f"{name}/c/"
        return {key[len(prefix) :] async for key in store.list_prefix(name) if key.startswith(prefix)}

    async def collect_all() -> dict[str, set[str]]:
        return {v.name: await collect(v.name) for v in VARIABLES}

    return asyncio.run(collect_all())


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
    def raster_status(store: IcechunkStore) -> MaterializeResult:  # type: ignore[type-arg]
        missing = missing_regions(registry, regions_with_chunks(store.repository(), store.branch))
        return MaterializeResult(
            metadata={
                "regions": len(registry),
                "regions_complete": len(registry) - len(missing),
                "missing": MetadataValue.json(missing),
                "store": store.location(),
            }
        )

    @asset_check(
        asset=STATUS_KEY,
        name=STORE_CHECK,
        description="Every region's chunks exist in the branch's snapshot (read from the store, not the log).",
    )
    def chunks_in_store(store: IcechunkStore) -> AssetCheckResult:
        try:
            chunks = regions_with_chunks(store.repository(), store.branch)
        except StoreError as err:
            return AssetCheckResult(passed=False, description=str(err))
        missing = missing_regions(registry, chunks)
        return AssetCheckResult(
            passed=not missing,
            metadata={
                "regions": len(registry),
                "regions_missing": len(missing),
                "missing": MetadataValue.json(missing),
                "store": store.location(),
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
        context: AssetCheckExecutionContext, store: IcechunkStore, params: ModelParamsResource
    ) -> AssetCheckResult:
        state = ReconcileState()
        update_commits(state, store.repository(), store.branch)
        update_records(state, context.instance, RASTER_KEY)
        actions = reconcile(registry.ids, (params.version(), MODEL_CODE_VERSION), state.records, state.commits)
        lost = [region for region, _ in actions.repair]
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


def build_reconciliation_sensor(
    registry: RegionRegistry, job: UnresolvedAssetJobDefinition, minimum_interval_seconds: int = 30
) -> SensorDefinition:
    """The sensor that makes Dagster's records follow the commit log, both ways."""
    desired: Iterable[str] = registry.ids

    @sensor(
        name=SENSOR_NAME,
        job=job,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description=(
            "Reads the Icechunk commit log incrementally and reconciles Dagster with it: reports regions "
            "committed but not recorded, requests repair runs for regions recorded but not committed, "
            "and rebuilds regions committed under older parameters."
        ),
    )
    def reconcile_commit_log(
        context: SensorEvaluationContext, store: IcechunkStore, params: ModelParamsResource
    ) -> SensorResult | SkipReason:
        try:
            version = (params.version(), MODEL_CODE_VERSION)
            repo = store.repository()
        except (ParamsError, StoreError) as err:
            return SkipReason(f"cannot reconcile: {err}")
        state = ReconcileState.decode(context.cursor)
        n_commits = update_commits(state, repo, store.branch)
        n_records = update_records(state, context.instance, RASTER_KEY)
        actions = reconcile(desired, version, state.records, state.commits)

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
                        "params_version": commit.params_version,
                        "code_version": commit.code_version,
                    },
                )
            )
        run_requests = []
        for region, record in actions.repair:
            run_requests.append(
                RunRequest(
                    partition_key=region,
                    run_key=f"repair:{region}:{record.storage_id}",
                    tags={"risk/reason": "repair"},
                )
            )
        for region, commit in actions.stale:
            run_requests.append(
                RunRequest(
                    partition_key=region,
                    run_key=f"stale:{region}:{version[0]}:{version[1]}:{commit.snapshot_id}",
                    tags={"risk/reason": "stale"},
                )
            )
        lost = {region for region, _ in actions.repair}
        if lost != state.flagged:  # evaluate the check only when the disagreement changes
            events.append(_check(lost))
            state.flagged = lost
        context.log.info(
            f"read {n_commits} new snapshots and {n_records} new records; reported {len(actions.report)}, "
            f"repair {len(actions.repair)}, stale {len(actions.stale)}"
        )
        return SensorResult(run_requests=run_requests, asset_events=events, cursor=state.encode())

    return reconcile_commit_log

"""``raster_status`` and its checks: how complete the raster is, read from the store and the log.

The checks live on this small asset, not on ``risk_raster`` (see :data:`risk_assets.keys.STATUS_KEY`).
"""

from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetsDefinition,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
    asset_check,
)

from resources.branches import working_branch
from resources.ledger import regions_with_chunks
from resources.store import IcechunkStore
from resources.target import InputsResource, ModelParamsResource, current_target
from risk_assets.keys import RASTER_KEY, STATUS_KEY
from risk_assets.reconcile import ReconcileState, reconcile, update_commits, update_records
from risk_model.errors import RiskError
from risk_model.grid import RegionRegistry
from risk_model.versions import Target

#: Name of the reconciliation sensor, which evaluates :data:`REGION_CHECK` as it runs.
SENSOR_NAME = "reconcile_commit_log"
REGION_CHECK = "records_match_commit_log"
STORE_CHECK = "chunks_in_store"


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


def _missing_on_branch(
    store: IcechunkStore, params: ModelParamsResource, inputs: InputsResource, registry: RegionRegistry
) -> tuple[str, list[str]]:
    """The branch of the current version and the regions without chunks there."""
    repo = store.repository()
    branch = working_branch(repo, store, current_target(params, inputs, registry.ids).version)
    return branch, missing_regions(registry, regions_with_chunks(repo, branch))


def _missing_metadata(
    registry: RegionRegistry, store: IcechunkStore, branch: str, missing: list[str]
) -> dict[str, Any]:
    return {
        "regions": len(registry),
        "missing": MetadataValue.json(missing),
        "store": store.location(),
        "branch": branch,
    }


def build_checks(registry: RegionRegistry) -> list[AssetsDefinition | AssetChecksDefinition]:
    """``raster_status`` and its checks: store completeness, and Dagster's records against the log."""

    @asset(
        key=STATUS_KEY,
        deps=[RASTER_KEY],
        group_name="raster",
        description="How complete the raster is on the branch, read from the store.",
    )
    def raster_status(
        store: ResourceParam[IcechunkStore],
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> MaterializeResult:  # type: ignore[type-arg]
        branch, missing = _missing_on_branch(store, params, inputs, registry)
        return MaterializeResult(
            metadata={
                "regions_complete": len(registry) - len(missing),
                **_missing_metadata(registry, store, branch, missing),
            }
        )

    @asset_check(
        asset=STATUS_KEY,
        name=STORE_CHECK,
        description="Every region's chunks exist in the branch's snapshot (read from the store, not the log).",
    )
    def chunks_in_store(
        store: ResourceParam[IcechunkStore],
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> AssetCheckResult:
        try:
            branch, missing = _missing_on_branch(store, params, inputs, registry)
        except RiskError as err:
            return AssetCheckResult(passed=False, description=str(err))
        return AssetCheckResult(
            passed=not missing,
            metadata={"regions_missing": len(missing), **_missing_metadata(registry, store, branch, missing)},
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
        store: ResourceParam[IcechunkStore],
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> AssetCheckResult:
        lost = recorded_not_committed(store, registry, current_target(params, inputs, registry.ids), context.instance)
        return AssetCheckResult(passed=not lost, metadata=disagreement_metadata(lost))

    return [raster_status, chunks_in_store, records_match_commit_log]


def disagreement_metadata(lost: list[str]) -> dict[str, MetadataValue[Any]]:
    return {
        "regions_recorded_not_committed": MetadataValue.int(len(lost)),
        "regions": MetadataValue.json(sorted(lost)),
    }


def records_check_evaluation(lost: set[str]) -> AssetCheckEvaluation:
    """The evaluation of the records-against-log check, as the sensor reports it."""
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
        metadata=disagreement_metadata(sorted(lost)),
    )

"""The assets of one grid: its sources, the raster template and the region-partitioned risk raster.

The observable sources are :mod:`risk_assets.sources`, the ``wind_shares`` asset is
:mod:`risk_assets.wind_shares_asset`, the pyramid and the release are :mod:`risk_assets.release_assets`.

Lineage in the asset graph::

    model_params ─┐
    region_params ┼─> risk_raster (one partition per region) ─> risk_pyramid ─> raster_release
    input_* ──────┤         │                                          ^
    raster_template ────────┘            raster_status (checks) ───────┘

With an hourly wind dataset (``InputSet.wind_hourly``) the wind input of ``risk_raster`` is
the ``wind_shares`` asset, computed from it::

    input_wind_hourly ─┐
    wind_params ───────┴─> wind_shares ─> risk_raster
"""

from typing import cast

import xarray as xr
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    BackfillPolicy,
    Backoff,
    DataVersion,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    RetryPolicy,
    SourceAsset,
    asset,
)

from resources.branches import branch_exists, ensure_branch
from resources.io_manager import RegionDatasets
from resources.ledger import committed_regions, inputs_checked
from resources.store import IcechunkStore
from resources.target import InputsResource, ModelParamsResource, current_target
from resources.template import TemplateMissingError, ensure_template, template_attrs
from risk_assets.deployment import K8S_CONFIG_TAG, region_step_k8s_config
from risk_assets.keys import (
    PARAMS_KEY,
    RASTER_KEY,
    REGION_PARAMS_KEY,
    TEMPLATE_KEY,
    WIND_SHARES_KEY,
    input_key,
)
from risk_assets.sources import READY_MADE_ROLES, build_sources, region_partitions
from risk_assets.wind_shares_asset import build_wind_shares
from risk_model.code_version import MODEL_CODE_VERSION
from risk_model.compute import compute_region
from risk_model.errors import BadInputError, RiskError
from risk_model.grid import RegionRegistry
from risk_model.input_checks import validate_inputs
from risk_model.preflight import preflight
from risk_model.wind_files import require_shares_version

#: Dagster concurrency pool of the region writers; its limit is set in dagster.yaml.
WRITER_POOL = "icechunk_writers"
IO_MANAGER_KEY = "icechunk_io_manager"

#: Retries of a region step whose pod was lost (spot preemption) or that raised an unexpected
#: error. Typed failures bypass it (``Failure(allow_retries=False)``). The delay lets GKE replace
#: the preempted node; jitter spreads the regions of one preemption wave (see
#: :mod:`risk_assets.deployment`).
REGION_RETRY_POLICY = RetryPolicy(max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


def build_assets(
    registry: RegionRegistry, roles: tuple[str, ...] = READY_MADE_ROLES, regions_per_run: int = 1
) -> list[AssetsDefinition | SourceAsset]:
    """The sources, template and raster of one grid (pyramid and release: :mod:`risk_assets.release_assets`).

    Parameters
    ----------
    registry
        The grid's region registry: it defines the raster's partitions.
    roles
        The inputs given (``InputSet.roles``): with ``wind_hourly``, the ``wind_shares`` asset
        is built and is the raster's wind input.
    regions_per_run
        At most this many regions in one backfill run of the raster (its ``BackfillPolicy``).
    """
    grid = registry.grid
    sources = build_sources(registry, roles)
    hourly = "wind_hourly" in roles
    derived: list[AssetsDefinition] = [build_wind_shares()] if hourly else []
    # The raster depends on the shares, not on what they are computed from: a new hourly
    # dataset reaches it only once the shares are recomputed.
    raster_deps = [
        PARAMS_KEY,
        REGION_PARAMS_KEY,
        input_key("burn_probability"),
        input_key("conditional_risk"),
        WIND_SHARES_KEY if hourly else input_key("wind_direction"),
    ]

    @asset(key=TEMPLATE_KEY, group_name="raster", code_version=MODEL_CODE_VERSION)
    def raster_template(
        store: ResourceParam[IcechunkStore],
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> MaterializeResult:  # type: ignore[type-arg]
        """The full-size, metadata-only template, committed once on ``main`` before any region is written.

        Every build branch starts from ``main``, so every branch holds the template. The
        parameters, overrides and inputs are checked first: with any of them wrong the prepare
        run fails at once, commits nothing and launches no region run.
        """
        try:
            with inputs.gdal_env():
                preflight(params.path, params.overrides_path, inputs.input_set(), grid, registry.ids)
        except BadInputError as err:
            raise Failure(description=str(err), allow_retries=False) from err
        try:
            snapshot_id, created = ensure_template(store, grid, {"code_version": MODEL_CODE_VERSION})
        except RiskError as err:
            raise Failure(description=str(err)) from err
        return MaterializeResult(
            data_version=DataVersion(grid.fingerprint),
            metadata={
                "status": "committed" if created else "already present",
                "snapshot_id": snapshot_id,
                "store": store.location(),
                "grid": grid.name,
                "shape": MetadataValue.json(list(grid.shape)),
                "chunks": MetadataValue.json(list(grid.chunks)),
                "regions": len(registry),
            },
        )

    @asset(
        key=RASTER_KEY,
        group_name="raster",
        partitions_def=region_partitions(registry),
        deps=[*raster_deps, raster_template],
        io_manager_key=IO_MANAGER_KEY,
        pool=WRITER_POOL,
        code_version=MODEL_CODE_VERSION,
        # Rebuild a region when a parameters, override or input data version, or the code
        # version changes. The template is ignored: re-committing it is a no-op and must not
        # rebuild the raster. Regions never built are for "backfill missing", not automation.
        automation_condition=AutomationCondition.eager().ignore(AssetSelection.assets(TEMPLATE_KEY))
        | AutomationCondition.code_version_changed(),
        # How many regions one backfill run takes: one per run (a pod each) on Kubernetes, a
        # group locally, where a run's fixed cost dwarfs a small region (see Deployment).
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=regions_per_run),
        # Kubernetes placement and size of the region's step pod, and retries of a preempted one:
        # both only matter under the k8s executor (see risk_assets.deployment).
        op_tags={K8S_CONFIG_TAG: region_step_k8s_config(grid)},
        retry_policy=REGION_RETRY_POLICY,
    )
    def risk_raster(
        context: AssetExecutionContext,
        store: ResourceParam[IcechunkStore],
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> RegionDatasets:
        """The run's regions of the wind-informed wildfire-risk raster, built on their version's branch.

        The branch is ``build-<raster version>``, created from the readers' branch (``main``)
        by the first region of the version. A region already committed there for its build key is not computed
        again: its stored data is returned and the IO manager makes no commit for it. A run
        holds one region (one partition) or, for a backfill under a multi-run policy or a
        ``risk build`` group, a range of them; each region is committed on its own.
        """
        try:
            # GDAL sees the buckets' endpoints, and reads the computed shares afresh.
            with inputs.gdal_env():
                target = current_target(params, inputs, registry.ids)
                version = target.version
                repo = store.repository()
                if not branch_exists(repo, version.branch):
                    # Every version starts from the readers' branch, which holds the template and
                    # the last complete version: unchanged regions are carried over, not rebuilt.
                    if template_attrs(repo, store.branch) is None:
                        raise TemplateMissingError(
                            f"{store.location()} has no template on {store.branch!r}: "
                            f"materialize {TEMPLATE_KEY.to_user_string()} first"
                        )
                    ensure_branch(repo, version.branch, store.branch)
                committed = committed_regions(repo, version.branch)
                checked_inputs = False
                datasets: RegionDatasets = {}
                for region_id in context.partition_keys:
                    region = registry.get(region_id)
                    key = target.region_key(region.id)
                    existing = committed.get(region.id)
                    if existing is not None and existing.key == key:
                        context.log.info(f"region {region.id} is committed already ({existing.snapshot_id})")
                        stored = xr.open_zarr(
                            repo.readonly_session(snapshot_id=existing.snapshot_id).store, consolidated=False
                        )
                        ds = cast(xr.Dataset, stored.isel(latitude=region.rows, longitude=region.cols).drop_attrs())
                    else:
                        input_set = inputs.raster_inputs()
                        if not checked_inputs:  # once per run: the same files for every region
                            if inputs.wind_hourly is not None:
                                # Shares of another dataset or percentile would be committed under this key.
                                require_shares_version(
                                    input_set.wind_shares(),
                                    inputs.stored_shares_version(),
                                    target.input_versions["wind_direction"],
                                )
                            # Not again for inputs a region of this branch was committed from: the
                            # same checksums passed these checks in that region's run.
                            if not inputs_checked(committed.values(), target.inputs_version, target.code_version):
                                validate_inputs(input_set, grid)
                            checked_inputs = True
                        ds = compute_region(grid, region, input_set, target.region_params(region.id))
                    ds.attrs.update(
                        params_version=key.params_version,
                        inputs_version=key.inputs_version,
                        code_version=key.code_version,
                        raster_version=version.id,
                        branch=version.branch,
                    )
                    datasets[region.id] = ds
        except RiskError as err:
            # Bad input fails the same way on every attempt, and an unreachable store is not a
            # lost pod: bypass the retry policy (which is for lost spot pods, see
            # risk_assets.deployment).
            raise Failure(description=str(err), allow_retries=False) from err
        return datasets

    return [*sources, *derived, raster_template, risk_raster]

"""The assets: model parameters, the raster template, and the region-partitioned risk raster."""

from typing import cast

import xarray as xr
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    SourceAsset,
    StaticPartitionsDefinition,
    asset,
    observable_source_asset,
)

from resources.ledger import TemplateMissingError, ensure_template, find_commit
from resources.model import InputsResource, ModelParamsResource
from resources.store import IcechunkStore, StoreError
from risk_assets.compute import compute_region
from risk_assets.deployment import K8S_CONFIG_TAG, REGION_RETRY_POLICY, region_step_k8s_config
from risk_assets.grid import RegionRegistry, UnknownRegionError
from risk_assets.inputs import InputError, validate_inputs
from risk_assets.params import ParamsError, params_version
from risk_assets.version import MODEL_CODE_VERSION

#: Dagster concurrency pool of the region writers; its limit is set in dagster.yaml.
WRITER_POOL = "icechunk_writers"
IO_MANAGER_KEY = "icechunk_io_manager"


def region_partitions(registry: RegionRegistry) -> StaticPartitionsDefinition:
    """One static partition per region that holds data."""
    return StaticPartitionsDefinition(registry.ids)


def build_assets(registry: RegionRegistry) -> list[AssetsDefinition | SourceAsset]:
    """The assets of one grid.

    Parameters
    ----------
    registry
        The grid's region registry: it defines the raster's partitions.
    """
    grid = registry.grid

    # An observable source, not a materialized asset: re-observing an unchanged file yields
    # the same data version and triggers nothing downstream, while re-materializing an
    # identical value would make eager automation rebuild every region (measured).
    @observable_source_asset(name="model_params", group_name="model")
    def model_params(params: ModelParamsResource) -> ObserveResult:
        """Model parameters read from the YAML file; the data version is a hash of their content."""
        try:
            values = params.load()
        except ParamsError as err:
            raise Failure(description=str(err)) from err
        version = params_version(values)
        return ObserveResult(
            data_version=DataVersion(version),
            metadata={
                "params_version": version,
                "path": params.path,
                "params": MetadataValue.json(values.model_dump(mode="json")),
            },
        )

    @asset(group_name="raster", code_version=MODEL_CODE_VERSION)
    def raster_template(store: IcechunkStore) -> MaterializeResult:  # type: ignore[type-arg]
        """The full-size, metadata-only template, committed once before any region is written."""
        try:
            snapshot_id, created = ensure_template(store, grid, {"code_version": MODEL_CODE_VERSION})
        except (StoreError, TemplateMissingError) as err:
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
        group_name="raster",
        partitions_def=region_partitions(registry),
        deps=[model_params, raster_template],
        io_manager_key=IO_MANAGER_KEY,
        pool=WRITER_POOL,
        code_version=MODEL_CODE_VERSION,
        # Rebuild a region when the parameters' data version or the code version changes. The
        # template is ignored: re-committing it is a no-op and must not rebuild the raster.
        # Regions that were never built are for "backfill missing", not for automation.
        automation_condition=AutomationCondition.eager().ignore(AssetSelection.assets("raster_template"))
        | AutomationCondition.code_version_changed(),
        # Kubernetes placement and size of the region's step pod, and retries of a preempted one:
        # both only matter under the k8s executor (see risk_assets.deployment).
        op_tags={K8S_CONFIG_TAG: region_step_k8s_config(grid)},
        retry_policy=REGION_RETRY_POLICY,
    )
    def risk_raster(
        context: AssetExecutionContext,
        store: IcechunkStore,
        params: ModelParamsResource,
        inputs: InputsResource,
    ) -> xr.Dataset:
        """One region of the wind-informed wildfire-risk raster.

        A region already committed for the current parameters and code is not computed
        again: its stored data is returned and the IO manager makes no commit.
        """
        try:
            region = registry.get(context.partition_key)
            values = params.load()
            version = params_version(values)
            repo = store.repository()
            existing = find_commit(repo, store.branch, region.id, version, MODEL_CODE_VERSION)
            if existing is not None:
                context.log.info(f"region {region.id} is committed already ({existing.snapshot_id})")
                stored = xr.open_zarr(repo.readonly_session(snapshot_id=existing.snapshot_id).store, consolidated=False)
                ds = cast(xr.Dataset, stored.isel(latitude=region.rows, longitude=region.cols).drop_attrs())
            else:
                input_set = inputs.input_set()
                validate_inputs(input_set, grid)
                ds = compute_region(grid, region, input_set, values)
        except (UnknownRegionError, ParamsError, InputError, StoreError) as err:
            # These fail the same way on every attempt: bypass the retry policy (which is for
            # lost spot pods, see risk_assets.deployment).
            raise Failure(description=str(err), allow_retries=False) from err
        ds.attrs.update(params_version=version, code_version=MODEL_CODE_VERSION)
        return ds

    return [model_params, raster_template, risk_raster]

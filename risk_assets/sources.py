"""The observable sources of the raster: global parameters, per-region overrides, the input rasters
and, with an hourly wind dataset, the wind parameters; and the region partitions they share with it.

Observable sources, not materialized assets: re-observing an unchanged file yields the same data
version and triggers nothing downstream (see :func:`build_sources`).
"""

from pathlib import Path

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DataVersion,
    DataVersionsByPartition,
    Failure,
    MetadataValue,
    ObserveResult,
    OpExecutionContext,
    ResourceParam,
    SourceAsset,
    StaticPartitionsDefinition,
    observable_source_asset,
)

from resources.input_versions import input_version
from resources.target import InputsResource, ModelParamsResource
from risk_assets.keys import PARAMS_KEY, REGION_PARAMS_KEY, WIND_PARAMS_KEY, input_key
from risk_model.errors import StoreUnavailableError
from risk_model.grid import GridSpec, RegionRegistry
from risk_model.input_checks import validate_input
from risk_model.input_set import InputError
from risk_model.params import ParamsError, params_version
from risk_model.wind import wind_params_version

#: The tag under which Dagster stores an observation's data version (its value is not exported
#: publicly; test_automation checks that observations carry it).
DATA_VERSION_TAG = "dagster/data_version"
#: Observation records fetched per call (Dagster caps one fetch at 10,000).
OBSERVATIONS_PAGE = 10_000
#: The inputs of a set with ready-made wind shares (``InputSet.roles``).
READY_MADE_ROLES = ("burn_probability", "conditional_risk", "wind_direction")


def latest_observed_versions(instance: DagsterInstance, key: AssetKey) -> dict[str, str]:
    """The data version last observed for each partition of the source ``key``."""
    latest: dict[str, str] = {}
    cursor: str | None = None
    for _ in range(1_000_000):  # bounded: pages of 10,000 observations
        page = instance.fetch_observations(
            AssetRecordsFilter(asset_key=key), limit=OBSERVATIONS_PAGE, cursor=cursor, ascending=True
        )
        for record in page.records:
            observation = record.asset_observation
            if observation is not None and observation.partition is not None:
                version = observation.tags.get(DATA_VERSION_TAG)
                if version is not None:
                    latest[observation.partition] = version
        if not page.has_more:
            break
        cursor = page.cursor
    return latest


def region_partitions(registry: RegionRegistry) -> StaticPartitionsDefinition:
    """One static partition per region that holds data."""
    return StaticPartitionsDefinition(registry.ids)


def _input_source(name: str, grid: GridSpec) -> SourceAsset:
    @observable_source_asset(
        key=input_key(name),
        group_name="inputs",
        description=f"The {name.replace('_', ' ')} input raster; data version: its checksum or object generation.",
    )
    def observe(inputs: ResourceParam[InputsResource]) -> ObserveResult:
        url = str(getattr(inputs, name))
        try:
            # A file that does not fit the grid or cannot be read is refused here: its observation
            # records no new data version, so automation launches no region run for it.
            with inputs.gdal_env():
                validate_input(name, url, grid)
            cache = Path(inputs.checksum_cache) if inputs.checksum_cache else None
            version = input_version(url, name=name, cache=cache)
        except InputError as err:
            raise Failure(description=str(err), allow_retries=False) from err
        except StoreUnavailableError as err:  # the bucket did not answer: the next observation may
            raise Failure(description=str(err)) from err
        return ObserveResult(data_version=DataVersion(version), metadata={"url": url, "version": version})

    return observe


def build_sources(registry: RegionRegistry, roles: tuple[str, ...] = READY_MADE_ROLES) -> list[SourceAsset]:
    """Observable sources: global parameters, per-region overrides and the three inputs
    (``roles``, see ``InputSet.roles``); with an hourly wind dataset also ``wind_params``.

    Observable sources, not materialized assets: re-observing an unchanged file yields the
    same data version and triggers nothing downstream, while re-materializing an identical
    value would make eager automation rebuild every region (measured).
    """

    @observable_source_asset(key=PARAMS_KEY, group_name="model")
    def model_params(params: ResourceParam[ModelParamsResource]) -> ObserveResult:
        """Global model parameters read from the YAML file; the data version is a hash of their content."""
        try:
            values = params.load()
        except ParamsError as err:
            raise Failure(description=str(err), allow_retries=False) from err
        version = params_version(values)
        return ObserveResult(
            data_version=DataVersion(version),
            metadata={
                "params_version": version,
                "path": params.path,
                "params": MetadataValue.json(values.model_dump(mode="json")),
            },
        )

    @observable_source_asset(key=REGION_PARAMS_KEY, group_name="model", partitions_def=region_partitions(registry))
    def region_params(
        context: OpExecutionContext, params: ResourceParam[ModelParamsResource]
    ) -> DataVersionsByPartition:
        """Per-region parameter overrides; each region's data version is a hash of its override.

        A changed override changes only its region's data version, so automation rebuilds only
        that region. Only regions whose version differs from the last one observed are recorded
        (all of them the first time): re-recording 10,000 unchanged versions every few minutes
        would fill the event log with nothing.
        """
        try:
            overrides = params.overrides(registry.ids)
        except ParamsError as err:
            raise Failure(description=str(err), allow_retries=False) from err
        observed = latest_observed_versions(context.instance, REGION_PARAMS_KEY)
        current = {rid: overrides.region_version(rid) for rid in registry.ids}
        changed = {rid: DataVersion(v) for rid, v in current.items() if observed.get(rid) != v}
        context.log.info(f"{len(changed)} of {len(current)} regions' overrides changed since the last observation")
        return DataVersionsByPartition(changed)

    @observable_source_asset(key=WIND_PARAMS_KEY, group_name="inputs")
    def wind_params(params: ResourceParam[ModelParamsResource]) -> ObserveResult:
        """The parameters the wind shares depend on (the FFWI percentile); data version: their hash.

        Its own source, not ``model_params``: a change of any other parameter must not
        recompute the shares (and through them request every region a second time).
        """
        try:
            values = params.load()
        except ParamsError as err:
            raise Failure(description=str(err), allow_retries=False) from err
        version = wind_params_version(values)
        return ObserveResult(
            data_version=DataVersion(version),
            metadata={"fire_weather_percentile": values.fire_weather_percentile, "version": version},
        )

    hourly = [wind_params] if "wind_hourly" in roles else []
    return [
        model_params,
        region_params,
        *(_input_source(name, registry.grid) for name in roles),
        *hourly,
    ]

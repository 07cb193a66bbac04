"""The assets: parameters and inputs, the raster template, the region-partitioned risk raster,
its pyramid and its release.

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

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import xarray as xr
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    BackfillPolicy,
    DagsterInstance,
    DataVersion,
    DataVersionsByPartition,
    Failure,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    OpExecutionContext,
    SourceAsset,
    StaticPartitionsDefinition,
    asset,
    observable_source_asset,
)

from resources.branches import branch_exists, ensure_branch
from resources.input_versions import input_version
from resources.io_manager import RegionDatasets
from resources.ledger import committed_regions
from resources.store import IcechunkStore
from resources.target import InputsResource, ModelParamsResource, current_target
from resources.template import TemplateMissingError, ensure_template, template_attrs
from resources.wind_shares import publish_shares
from risk_assets.deployment import K8S_CONFIG_TAG, REGION_RETRY_POLICY, region_step_k8s_config
from risk_assets.keys import (
    PARAMS_KEY,
    RASTER_KEY,
    REGION_PARAMS_KEY,
    TEMPLATE_KEY,
    WIND_PARAMS_KEY,
    WIND_SHARES_KEY,
    input_key,
)
from risk_model.code_version import MODEL_CODE_VERSION
from risk_model.compute import compute_region
from risk_model.errors import BadInputError, RiskError
from risk_model.grid import GridSpec, RegionRegistry
from risk_model.input_checks import validate_input, validate_inputs
from risk_model.inputs import InputError
from risk_model.params import ParamsError, params_version
from risk_model.preflight import preflight
from risk_model.wind import WIND_CODE_VERSION, fire_weather_wind_shares, shares_version, wind_params_version
from risk_model.wind_files import open_hourly, require_shares_version

#: Dagster concurrency pool of the region writers; its limit is set in dagster.yaml.
WRITER_POOL = "icechunk_writers"
IO_MANAGER_KEY = "icechunk_io_manager"
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
    def observe(inputs: InputsResource) -> ObserveResult:
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
    def model_params(params: ModelParamsResource) -> ObserveResult:
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
    def region_params(context: OpExecutionContext, params: ModelParamsResource) -> DataVersionsByPartition:
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
    def wind_params(params: ModelParamsResource) -> ObserveResult:
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


def _latest_data_version(instance: DagsterInstance, key: AssetKey) -> str | None:
    """The data version of the latest materialization of ``key``; None if there is none."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get(DATA_VERSION_TAG) if event.asset_materialization.tags else None


def build_wind_shares() -> AssetsDefinition:
    """The ``wind_shares`` asset: the 8-band shares computed from the hourly dataset."""

    @asset(
        key=WIND_SHARES_KEY,
        group_name="inputs",
        deps=[input_key("wind_hourly"), WIND_PARAMS_KEY],
        code_version=WIND_CODE_VERSION,
        # A new hourly dataset or percentile (a new observed data version) recomputes the
        # shares; their new materialization then requests every region of the raster.
        automation_condition=AutomationCondition.eager(),
        # No materialization when the shares on disk are the current ones and recorded: the
        # prepare job runs this every time, and a re-materialization of identical shares would
        # make eager automation rebuild every region (measured for parameters, FIELD-NOTES).
        output_required=False,
    )
    def wind_shares(
        context: AssetExecutionContext, params: ModelParamsResource, inputs: InputsResource
    ) -> Iterator[MaterializeResult]:  # type: ignore[type-arg]
        """Fire-weather wind-direction shares (8 bands) on the hourly dataset's own grid and CRS.

        Computed from ``wind_hourly`` with the FFWI percentile of the parameters (see
        :mod:`risk_model.wind`) and written as a GeoTIFF to ``wind_shares_path``: a local file,
        or an ``s3://`` / ``gs://`` object uploaded whole (:mod:`resources.wind_shares`) that
        every region pod reads. The region runs warp it onto the output grid (nearest). Its data
        version is the shares' version (:func:`risk_model.wind.shares_version`), which is also in
        every region's build key and in the GeoTIFF's tag: shares already current where they are
        configured are neither recomputed nor uploaded again.
        """
        try:
            url = str(inputs.wind_hourly)
            path = inputs.shares_path()
            percentile = params.load().fire_weather_percentile
            cache = Path(inputs.checksum_cache) if inputs.checksum_cache else None
            hourly_version = input_version(url, name="wind_hourly", cache=cache)
            version = shares_version(hourly_version, percentile)
            on_disk = inputs.stored_shares_version()
            if on_disk == version and _latest_data_version(context.instance, WIND_SHARES_KEY) == version:
                context.log.info(f"wind shares {path} are current ({version}): nothing to do")
                return
            status = "already on disk"
            uploaded: str | None = None
            if on_disk != version:
                with open_hourly(url) as ds:
                    shares = fire_weather_wind_shares(ds, percentile=percentile)
                tags = {"WIND_HOURLY_VERSION": hourly_version, "FIRE_WEATHER_PERCENTILE": str(percentile)}
                uploaded = publish_shares(shares, path, version=version, tags=tags)
                status = "computed"
        except (InputError, ParamsError) as err:
            raise Failure(description=str(err), allow_retries=False) from err
        yield MaterializeResult(
            data_version=DataVersion(version),
            metadata={
                "status": status,
                "path": path,
                "version": version,
                "hourly": url,
                "hourly_version": hourly_version,
                "fire_weather_percentile": percentile,
                # The uploaded object's ETag or generation: which object the region pods read.
                **({"object_version": uploaded} if uploaded else {}),
            },
        )

    return wind_shares


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
    def raster_template(store: IcechunkStore, params: ModelParamsResource, inputs: InputsResource) -> MaterializeResult:  # type: ignore[type-arg]
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
        store: IcechunkStore,
        params: ModelParamsResource,
        inputs: InputsResource,
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

"""The code location's one ``Definitions`` object, and the function that builds it.

``workspace.yaml`` loads ``defs`` from this module. Tests build their own with
:func:`build_definitions` and settings pointing at temporary folders.
"""

from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    ExecutorDefinition,
    JobDefinition,
    ScheduleDefinition,
    define_asset_job,
    in_process_executor,
)

from resources.io_manager import IcechunkRegionIOManager
from resources.store import IcechunkStore
from risk_assets.assets import IO_MANAGER_KEY, build_assets
from risk_assets.deployment import deployment_from_env
from risk_assets.history_sensor import build_history_sensor
from risk_assets.keys import (
    INPUT_NAMES,
    PARAMS_KEY,
    PYRAMID_KEY,
    RASTER_KEY,
    REGION_PARAMS_KEY,
    RELEASE_KEY,
    STATUS_KEY,
    TEMPLATE_KEY,
    WIND_PARAMS_KEY,
    WIND_SHARES_KEY,
    input_key,
)
from risk_assets.maintenance_job import build_maintenance_job
from risk_assets.release_assets import build_release_assets
from risk_assets.resource_wiring import model_resources, store_resource
from risk_assets.sensors import build_reconciliation_sensor
from risk_assets.settings import Settings, settings_from_env
from risk_assets.sources import region_partitions
from risk_assets.status import build_checks
from risk_model.grid import load_registry
from risk_model.input_set import InputSet, local_hourly_input_set

REGION_JOB = "build_region"
PREPARE_JOB = "prepare_raster"
VERIFY_JOB = "verify_raster"
RELEASE_JOB = "release_raster"
#: Run tag of every run that builds regions (automation, backfills, repairs); dagster.yaml caps
#: how many of them run at once, whatever launched them.
REGION_RUN_TAG = {"risk/kind": "region"}


#: The observable sources with ready-made wind shares: global parameters, per-region overrides,
#: the input datasets.
SOURCE_KEYS = [PARAMS_KEY, REGION_PARAMS_KEY, *(input_key(name) for name in INPUT_NAMES)]


def source_keys(inputs: InputSet) -> list[AssetKey]:
    """The observable sources of a deployment with ``inputs``: with an hourly wind dataset, it
    and ``wind_params`` instead of the ready-made shares."""
    hourly = [WIND_PARAMS_KEY] if inputs.wind_hourly is not None else []
    return [PARAMS_KEY, REGION_PARAMS_KEY, *(input_key(name) for name in inputs.roles), *hourly]


def build_resources(
    settings: Settings,
    store: IcechunkStore | None = None,
    inputs: InputSet | None = None,
    wind_shares: str | None = None,
) -> dict[str, Any]:
    """The resources of one deployment, keyed as the assets expect them.

    Parameters
    ----------
    settings
        Grid and file locations.
    store
        The repository resource; the local repository under ``settings.home`` by default.
        Deployments on object storage pass an ``S3IcechunkStore`` or ``GCSIcechunkStore``.
    inputs
        The inputs; by default the synthetic rasters and hourly wind cube under
        ``settings.inputs_dir``.
    wind_shares
        With an hourly wind dataset, where the shares computed from it are written and read: a
        local path or an ``s3://`` / ``gs://`` object URL; by default ``settings.wind_shares_path``.
    """
    store = store_resource(settings, store)
    params, inputs_resource = model_resources(settings, inputs, wind_shares)
    return {
        "store": store,
        "params": params,
        "inputs": inputs_resource,
        IO_MANAGER_KEY: IcechunkRegionIOManager(store=store, grid=settings.grid),
    }


def build_definitions(
    settings: Settings,
    store: IcechunkStore | None = None,
    inputs: InputSet | None = None,
    executor: ExecutorDefinition | None = None,
    regions_per_run: int = 1,
    wind_shares: str | None = None,
) -> Definitions:
    """Assets, jobs, resources and executor of one deployment (see :func:`build_resources`).

    ``executor`` defaults to the in-process executor (each run is a process of its own);
    production passes ``k8s_job_executor`` (see :mod:`risk_assets.deployment`).
    ``regions_per_run`` caps the regions of one backfill run of the raster (its backfill policy).
    ``wind_shares`` is where the shares computed from an hourly dataset go (``RISK_WIND_SHARES``).
    """
    registry = load_registry(settings.grid)
    inputs = inputs or local_hourly_input_set(settings.inputs_dir)
    # With an hourly dataset the prepare job also brings the wind shares up to date (a no-op
    # when they are), so every region run finds the shares of its build key.
    shares_keys = [WIND_SHARES_KEY] if inputs.wind_hourly is not None else []
    build_region = define_asset_job(
        REGION_JOB,
        selection=AssetSelection.assets(RASTER_KEY),
        partitions_def=region_partitions(registry),
        description="Build one region of the risk raster and commit it to its version's branch.",
        tags=REGION_RUN_TAG,
    )
    release_raster = define_asset_job(
        RELEASE_JOB,
        selection=AssetSelection.assets(STATUS_KEY, PYRAMID_KEY, RELEASE_KEY),
        description=(
            "Check the complete version, build its pyramid, tag it with a manifest and pictures, and promote main."
        ),
    )
    # Expire and collect garbage without losing the ledger; refuses while writers run.
    maintenance = build_maintenance_job(
        writer_job_names=[REGION_JOB, RELEASE_JOB, PREPARE_JOB],
        writer_asset_keys=[RASTER_KEY, TEMPLATE_KEY, PYRAMID_KEY, RELEASE_KEY],
    )
    return Definitions(
        assets=[
            *build_assets(registry, inputs.roles, regions_per_run),
            *build_checks(registry),
            *build_release_assets(registry),
        ],
        sensors=[
            build_reconciliation_sensor(registry, build_region, release_raster, settings.sensor_interval_s),
            # Dagster's own automation sensor starts stopped; this one runs by default. A change
            # that touches many regions is emitted as one backfill, not one run request per
            # region; the region runs then wait in the queue under dagster.yaml's limits.
            AutomationConditionSensorDefinition(
                "risk_automation",
                target=AssetSelection.all(),
                default_status=DefaultSensorStatus.RUNNING,
                emit_backfills=True,
                run_tags=REGION_RUN_TAG,
                # The same interval as the other sensors (RISK_SENSOR_INTERVAL): left at Dagster's
                # default (30 s), a parameter change waited up to 30 s for its rebuild to start.
                minimum_interval_seconds=settings.sensor_interval_s,
            ),
            # Bounded history: expiry whenever enough commits piled up since the last one.
            build_history_sensor(
                maintenance,
                threshold=settings.history_threshold,
                keep_hours=settings.history_keep_hours,
                minimum_interval_seconds=settings.sensor_interval_s,
            ),
        ],
        schedules=[
            ScheduleDefinition(
                name="observe_sources",
                cron_schedule="*/10 * * * *",
                job_name=PREPARE_JOB,
                default_status=DefaultScheduleStatus.RUNNING,
                description=(
                    "Observe the parameters, overrides and inputs (a change rebuilds what it affects) and keep "
                    "the template."
                ),
            )
        ],
        jobs=[
            build_region,
            release_raster,
            maintenance,
            define_asset_job(
                VERIFY_JOB,
                selection=AssetSelection.assets(STATUS_KEY),
                description="Record how complete the raster is and run its checks against the store and the log.",
            ),
            define_asset_job(
                PREPARE_JOB,
                selection=[*source_keys(inputs), *shares_keys, TEMPLATE_KEY],
                description=(
                    "Observe parameters, overrides and inputs, bring the wind shares up to date (with an hourly "
                    "dataset) and commit the raster template (idempotent)."
                ),
            ),
        ],
        resources=build_resources(settings, store, inputs, wind_shares),
        # A region's step runs in its run's own process (see Deployment.executor_def); the writer
        # pool (dagster.yaml) caps how many commit at once across runs.
        executor=executor or in_process_executor,
    )


def _definitions_from_env() -> Definitions:
    """``defs`` of this process: settings, store, executor and inputs from the environment."""
    deployment = deployment_from_env()
    return build_definitions(
        settings_from_env(),
        store=deployment.store,
        inputs=deployment.inputs,
        executor=deployment.executor_def(),
        regions_per_run=deployment.regions_per_run_or_default,
        wind_shares=deployment.wind_shares,
    )


defs = _definitions_from_env()


def region_job() -> JobDefinition:
    """The region job of ``defs``, for ``reconstructable`` (the build command's workers)."""
    return defs.resolve_job_def(REGION_JOB)


def prepare_job() -> JobDefinition:
    """The job that observes the sources and commits the template."""
    return defs.resolve_job_def(PREPARE_JOB)


def release_job() -> JobDefinition:
    """The job that checks, pyramids, tags and promotes the complete version."""
    return defs.resolve_job_def(RELEASE_JOB)

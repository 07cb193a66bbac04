"""The code location's one ``Definitions`` object, and the function that builds it.

``workspace.yaml`` loads ``defs`` from this module. Tests build their own with
:func:`build_definitions` and settings pointing at temporary folders.
"""

from typing import Any

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    ExecutorDefinition,
    JobDefinition,
    ScheduleDefinition,
    define_asset_job,
    multiprocess_executor,
)

from resources.io_manager import IcechunkRegionIOManager
from resources.model import InputsResource, ModelParamsResource
from resources.store import IcechunkStore, LocalIcechunkStore
from risk_assets.assets import IO_MANAGER_KEY, build_assets, region_partitions
from risk_assets.deployment import deployment_from_env
from risk_assets.grid import load_registry
from risk_assets.inputs import InputSet
from risk_assets.sensors import STATUS_KEY, build_checks, build_reconciliation_sensor
from risk_assets.settings import Settings, settings_from_env
from risk_assets.synthetic import local_input_set

REGION_JOB = "build_region"
PREPARE_JOB = "prepare_raster"
VERIFY_JOB = "verify_raster"


def build_resources(
    settings: Settings, store: IcechunkStore | None = None, inputs: InputSet | None = None
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
        The input rasters; the synthetic set under ``settings.inputs_dir`` by default.
    """
    store = store or LocalIcechunkStore(path=str(settings.store_path))
    inputs = inputs or local_input_set(settings.inputs_dir)
    return {
        "store": store,
        "params": ModelParamsResource(path=str(settings.params_path)),
        "inputs": InputsResource(
            burn_probability=inputs.burn_probability,
            conditional_risk=inputs.conditional_risk,
            wind_direction=inputs.wind_direction,
        ),
        IO_MANAGER_KEY: IcechunkRegionIOManager(store=store, grid=settings.grid),
    }


def build_definitions(
    settings: Settings,
    store: IcechunkStore | None = None,
    inputs: InputSet | None = None,
    executor: ExecutorDefinition | None = None,
) -> Definitions:
    """Assets, jobs, resources and executor of one deployment (see :func:`build_resources`).

    ``executor`` defaults to the multiprocess executor; production passes ``k8s_job_executor``
    (see :mod:`risk_assets.deployment`).
    """
    registry = load_registry(settings.grid)
    build_region = define_asset_job(
        REGION_JOB,
        selection=AssetSelection.assets("risk_raster"),
        partitions_def=region_partitions(registry),
        description="Build one region of the risk raster and commit it.",
    )
    return Definitions(
        assets=[*build_assets(registry), *build_checks(registry)],
        sensors=[
            build_reconciliation_sensor(registry, build_region, settings.sensor_interval_s),
            # Dagster's own automation sensor starts stopped; this one runs by default.
            AutomationConditionSensorDefinition(
                "risk_automation", target=AssetSelection.all(), default_status=DefaultSensorStatus.RUNNING
            ),
        ],
        schedules=[
            ScheduleDefinition(
                name="observe_parameters",
                cron_schedule="*/10 * * * *",
                job_name=PREPARE_JOB,
                default_status=DefaultScheduleStatus.RUNNING,
                description="Observe the parameters file (a change rebuilds the raster) and keep the template.",
            )
        ],
        jobs=[
            build_region,
            define_asset_job(
                VERIFY_JOB,
                selection=AssetSelection.assets(STATUS_KEY),
                description="Record how complete the raster is and run its checks against the store and the log.",
            ),
            define_asset_job(
                PREPARE_JOB,
                selection=["model_params", "raster_template"],
                description="Observe the parameters and commit the raster template (idempotent).",
            ),
        ],
        resources=build_resources(settings, store, inputs),
        # Each region step in its own process; the writer pool (dagster.yaml) caps how many
        # commit at once across runs.
        executor=executor or multiprocess_executor,
    )


def _definitions_from_env() -> Definitions:
    """``defs`` of this process: settings, store, executor and inputs from the environment."""
    deployment = deployment_from_env()
    return build_definitions(
        settings_from_env(), store=deployment.store, inputs=deployment.inputs, executor=deployment.executor_def()
    )


defs = _definitions_from_env()


def configured_store() -> IcechunkStore:
    """The repository resource that ``defs`` writes to."""
    store = (defs.resources or {})["store"]
    assert isinstance(store, IcechunkStore)
    return store


def region_job() -> JobDefinition:
    """The region job of ``defs``, for ``reconstructable`` (the build command's workers)."""
    return defs.resolve_job_def(REGION_JOB)


def prepare_job() -> JobDefinition:
    """The job that records the parameters and commits the template."""
    return defs.resolve_job_def(PREPARE_JOB)

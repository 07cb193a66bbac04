"""Parameter and code changes rebuild the raster automatically, exactly once per change.

Real Dagster automation evaluation (``evaluate_automation_conditions``, what the automation
sensor runs) on a real instance; observations of the parameters file run as real jobs.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
import yaml
from dagster import (
    AssetKey,
    AssetMaterialization,
    AutomationConditionSensorDefinition,
    DagsterInstance,
    DefaultSensorStatus,
    Definitions,
    evaluate_automation_conditions,
)
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor

import risk_assets.assets as assets_module
from risk_assets.definitions import PREPARE_JOB, build_definitions
from risk_assets.settings import Settings
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet
from risk_model.params import DEFAULT_PARAMS_PATH

KEY = AssetKey("risk_raster")


class Automation:
    """The automation sensor's evaluations, tick after tick, with its cursor kept."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self.cursor: AssetDaemonCursor | None = None

    def tick(self, defs: Definitions) -> list[str]:
        result = evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return sorted(result.get_requested_partitions(KEY))


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(DEFAULT_PARAMS_PATH.read_text())
    return path


@pytest.fixture
def overrides_file(tmp_path: Path) -> Path:
    path = tmp_path / "overrides.yaml"
    path.write_text("{}\n")
    return path


@pytest.fixture
def inputs_copy(tmp_path: Path, demo_inputs: InputSet) -> InputSet:
    """The demo inputs copied, so a test may change one."""
    copies = {}
    for name, source in demo_inputs.model_dump().items():
        target = tmp_path / "inputs" / Path(source).name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(source, target)
        copies[name] = str(target)
    return InputSet(**copies)


@pytest.fixture
def built(
    tmp_path: Path, params_file: Path, overrides_file: Path, demo_registry: RegionRegistry, inputs_copy: InputSet
) -> Iterator[tuple[Definitions, DagsterInstance, Automation]]:
    """Sources observed, every region recorded as built, and the automation caught up."""
    settings = Settings(home=tmp_path, grid="demo", params_path=params_file, overrides_path=overrides_file)
    defs = build_definitions(settings, inputs=inputs_copy)
    with DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance).success
        for region in demo_registry.ids:
            instance.report_runless_asset_event(AssetMaterialization(KEY, partition=region))
        automation = Automation(instance)
        automation.tick(defs)
        assert automation.tick(defs) == []
        yield defs, instance, automation


def _observe(defs: Definitions, instance: DagsterInstance) -> None:
    assert defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance).success


def test_unchanged_reobservation_requests_nothing(built: tuple[Definitions, DagsterInstance, Automation]) -> None:
    defs, instance, automation = built
    _observe(defs, instance)
    _observe(defs, instance)
    assert automation.tick(defs) == []


def test_a_parameter_change_requests_every_region_exactly_once(
    built: tuple[Definitions, DagsterInstance, Automation], params_file: Path, demo_registry: RegionRegistry
) -> None:
    defs, instance, automation = built
    params_file.write_text(params_file.read_text().replace("blur_sigma_m: 120.0", "blur_sigma_m: 100.0"))
    _observe(defs, instance)
    assert automation.tick(defs) == sorted(demo_registry.ids)
    assert automation.tick(defs) == [], "requested once, not again on the next tick"
    _observe(defs, instance)
    assert automation.tick(defs) == [], "observing the changed file again is no new change"


def test_a_code_version_bump_requests_every_region(
    built: tuple[Definitions, DagsterInstance, Automation],
    tmp_path: Path,
    params_file: Path,
    demo_registry: RegionRegistry,
    demo_inputs: InputSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, automation = built
    monkeypatch.setattr(assets_module, "MODEL_CODE_VERSION", "2-test")
    bumped = build_definitions(Settings(home=tmp_path, grid="demo", params_path=params_file), inputs=demo_inputs)
    assert automation.tick(bumped) == sorted(demo_registry.ids)


def test_a_region_override_requests_only_that_region(
    built: tuple[Definitions, DagsterInstance, Automation], overrides_file: Path, demo_registry: RegionRegistry
) -> None:
    defs, instance, automation = built
    region = demo_registry.ids[4]
    overrides_file.write_text(f"{region}:\n  blur_sigma_m: 150.0\n")
    _observe(defs, instance)
    assert automation.tick(defs) == [region]
    _observe(defs, instance)
    assert automation.tick(defs) == [], "the same override observed again is no new change"


def test_a_new_input_version_requests_every_region(
    built: tuple[Definitions, DagsterInstance, Automation], inputs_copy: InputSet, demo_registry: RegionRegistry
) -> None:
    defs, instance, automation = built
    with rasterio.open(inputs_copy.conditional_risk, "r+") as dataset:
        dataset.update_tags(revision="2")  # a new version of the file: its checksum changes
    _observe(defs, instance)
    assert automation.tick(defs) == sorted(demo_registry.ids)
    _observe(defs, instance)
    assert automation.tick(defs) == []


def test_changes_do_not_flood_the_run_queue() -> None:
    """A change over many regions is one backfill, and region runs have their own queue limit."""
    from risk_assets.definitions import REGION_RUN_TAG, defs

    automation = defs.resolve_sensor_def("risk_automation")
    assert automation.default_status == DefaultSensorStatus.RUNNING
    assert isinstance(automation, AutomationConditionSensorDefinition)
    assert automation.emit_backfills, "one backfill per change, not one run request per region"
    assert automation.run_tags == REGION_RUN_TAG
    assert defs.resolve_job_def("build_region").tags.items() >= REGION_RUN_TAG.items()
    instance = yaml.safe_load((Path(__file__).parents[1] / "dagster.yaml").read_text())
    runs = instance["concurrency"]["runs"]
    [limit] = [
        t for t in runs["tag_concurrency_limits"] if (t["key"], t["value"]) == next(iter(REGION_RUN_TAG.items()))
    ]
    assert limit["limit"] < runs["max_concurrent_runs"], "region runs leave room for release and maintenance runs"


def test_every_sensor_ticks_at_the_configured_interval(tmp_path: Path, small_inputs: InputSet) -> None:
    """RISK_SENSOR_INTERVAL sets the automation sensor's interval too (Dagster's default is 30 s)."""
    defs = build_definitions(Settings(home=tmp_path, grid="mini", sensor_interval_s=7), inputs=small_inputs)
    intervals = {s.name: s.minimum_interval_seconds for s in defs.get_repository_def().sensor_defs}
    assert intervals == {"risk_automation": 7, "reconcile_commit_log": 7, "history_maintenance": 7}


def test_a_change_over_every_region_is_one_backfill_request(
    built: tuple[Definitions, DagsterInstance, Automation], params_file: Path, demo_registry: RegionRegistry
) -> None:
    """What the automation sensor emits for a global change: one backfill, not a run per region.

    ``evaluate_automation_conditions`` evaluates like the sensor but returns partitions; the
    sensor turns them into requests with Dagster's ``build_run_requests`` and its
    ``emit_backfills`` setting, called here the same way.
    """
    from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

    from risk_assets.definitions import REGION_RUN_TAG

    defs, instance, automation = built
    params_file.write_text(params_file.read_text().replace("blur_sigma_m: 120.0", "blur_sigma_m: 90.0"))
    _observe(defs, instance)
    result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation.cursor)
    sensor = defs.resolve_sensor_def("risk_automation")
    assert isinstance(sensor, AutomationConditionSensorDefinition)
    requests = build_run_requests(
        list(result._requested_subsets), defs.resolve_asset_graph(), sensor.run_tags, sensor.emit_backfills
    )
    [request] = requests
    assert request.requires_backfill_daemon(), "one backfill request"
    subset = request.asset_graph_subset
    assert subset is not None
    assert sorted(subset.get_partitions_subset(KEY).get_partition_keys()) == sorted(demo_registry.ids)
    assert request.tags.items() >= REGION_RUN_TAG.items()


@pytest.mark.slow  # real Dagster runs of regions
def test_only_changed_overrides_are_recorded_and_a_removed_one_rebuilds_its_region(
    built: tuple[Definitions, DagsterInstance, Automation], overrides_file: Path, demo_registry: RegionRegistry
) -> None:
    from risk_assets.keys import REGION_PARAMS_KEY
    from risk_assets.sources import latest_observed_versions

    defs, instance, automation = built
    key = REGION_PARAMS_KEY

    def n_observations() -> int:
        return len(instance.fetch_observations(key, limit=10_000).records)

    first = n_observations()
    assert first == len(demo_registry), "the first observation records every region"
    assert set(latest_observed_versions(instance, key).values()) == {"none"}
    _observe(defs, instance)
    assert n_observations() == first, "an unchanged file records nothing"
    region = demo_registry.ids[9]
    overrides_file.write_text(f"{region}:\n  spread_iterations: 4\n")
    _observe(defs, instance)
    assert n_observations() == first + 1, "one changed region, one record"
    assert automation.tick(defs) == [region]
    instance.report_runless_asset_event(AssetMaterialization(KEY, partition=region))  # the run rebuilt it
    automation.tick(defs)
    overrides_file.write_text("{}\n")
    _observe(defs, instance)
    assert n_observations() == first + 2
    assert latest_observed_versions(instance, key)[region] == "none"
    assert automation.tick(defs) == [region], "removing the override rebuilds the region with the global values"

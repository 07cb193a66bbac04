"""Parameter and code changes rebuild the raster automatically, exactly once per change.

Real Dagster automation evaluation (``evaluate_automation_conditions``, what the automation
sensor runs) on a real instance; observations of the parameters file run as real jobs.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    evaluate_automation_conditions,
)
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor

import risk_assets.assets as assets_module
from risk_assets.definitions import PREPARE_JOB, build_definitions
from risk_assets.grid import RegionRegistry
from risk_assets.inputs import InputSet
from risk_assets.params import DEFAULT_PARAMS_PATH
from risk_assets.settings import Settings

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
def built(
    tmp_path: Path, params_file: Path, demo_registry: RegionRegistry, demo_inputs: InputSet
) -> Iterator[tuple[Definitions, DagsterInstance, Automation]]:
    """Parameters observed, every region recorded as built, and the automation caught up."""
    settings = Settings(home=tmp_path, grid="demo", params_path=params_file)
    defs = build_definitions(settings, inputs=demo_inputs)
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

"""The ``wind_shares`` asset on a real Dagster instance: materialized from the hourly dataset,
recomputed (and the raster requested) exactly when the dataset or the percentile changes.

Real runs of the prepare job (observations and the asset), real automation evaluation (what
the automation sensor runs) and a real region run reading the computed shares.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    Definitions,
    define_asset_job,
    evaluate_automation_conditions,
)
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor

from risk_assets.definitions import PREPARE_JOB, REGION_JOB, build_definitions
from risk_assets.keys import RASTER_KEY, WIND_SHARES_KEY, input_key
from risk_assets.settings import Settings
from risk_assets.sources import DATA_VERSION_TAG
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet
from risk_model.params import DEFAULT_PARAMS_PATH
from risk_model.synthetic_wind import generate_hourly_cube
from risk_model.wind import VERSION_TAG, fire_weather_wind_shares
from risk_model.wind_files import open_hourly


class Automation:
    """The automation sensor's evaluations, tick after tick, with its cursor kept."""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self.cursor: AssetDaemonCursor | None = None

    def tick(self, defs: Definitions) -> tuple[int, list[str]]:
        """How many wind_shares runs and which raster partitions one tick requests."""
        result = evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return result.get_num_requested(WIND_SHARES_KEY), sorted(result.get_requested_partitions(RASTER_KEY))


class World:
    def __init__(self, tmp_path: Path, demo_inputs: InputSet, registry: RegionRegistry) -> None:
        self.cube = tmp_path / "inputs" / "hourly.nc"
        generate_hourly_cube(registry.grid, self.cube, seed=0, hours=240)
        self.params = tmp_path / "params.yaml"
        self.params.write_text(DEFAULT_PARAMS_PATH.read_text())
        self.settings = Settings(home=tmp_path, grid="demo", params_path=self.params)
        self.inputs = InputSet(
            burn_probability=demo_inputs.burn_probability,
            conditional_risk=demo_inputs.conditional_risk,
            wind_hourly=str(self.cube),
        )
        self.defs = build_definitions(self.settings, inputs=self.inputs)
        self.registry = registry

    def prepare(self, instance: DagsterInstance) -> None:
        assert self.defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance).success

    def shares_materializations(self, instance: DagsterInstance) -> list[str]:
        """Data versions of every materialization of wind_shares, oldest first."""
        records = instance.fetch_materializations(WIND_SHARES_KEY, limit=100, ascending=True).records
        return [str(r.asset_materialization.tags[DATA_VERSION_TAG]) for r in records if r.asset_materialization]

    def observed(self, instance: DagsterInstance) -> str:
        record = instance.fetch_observations(input_key("wind_hourly"), limit=1).records[0]
        assert record.asset_observation is not None
        return str(record.asset_observation.tags[DATA_VERSION_TAG])


@pytest.fixture
def world(tmp_path: Path, demo_inputs: InputSet, demo_registry: RegionRegistry) -> World:
    return World(tmp_path, demo_inputs, demo_registry)


@pytest.fixture
def prepared(world: World) -> Iterator[tuple[World, DagsterInstance, Automation]]:
    """Prepared once (shares computed), every region recorded as built, automation caught up."""
    with DagsterInstance.ephemeral() as instance:
        world.prepare(instance)
        for region in world.registry.ids:
            instance.report_runless_asset_event(AssetMaterialization(RASTER_KEY, partition=region))
        automation = Automation(instance)
        automation.tick(world.defs)
        assert automation.tick(world.defs) == (0, [])
        yield world, instance, automation


@pytest.mark.slow
def test_the_asset_writes_the_shares_of_the_hourly_dataset(
    prepared: tuple[World, DagsterInstance, Automation],
) -> None:
    world, instance, _ = prepared
    [version] = world.shares_materializations(instance)
    path = world.settings.wind_shares_path
    with rasterio.open(path) as src:
        assert src.tags()[VERSION_TAG] == version
        assert src.count == 8 and src.res == (4000.0, 4000.0)
        written = src.read()[:, ::-1, :]  # north-up on disk; the dataset's y ascends
    with open_hourly(str(world.cube)) as ds:
        expected = fire_weather_wind_shares(ds).values.astype(np.float32)
    np.testing.assert_array_equal(written, expected)


@pytest.mark.slow
def test_an_unchanged_dataset_is_not_recomputed_and_requests_nothing(
    prepared: tuple[World, DagsterInstance, Automation],
) -> None:
    world, instance, automation = prepared
    before = world.observed(instance)
    world.prepare(instance)
    world.prepare(instance)
    assert world.observed(instance) == before
    assert len(world.shares_materializations(instance)) == 1, "no new materialization of identical shares"
    assert automation.tick(world.defs) == (0, [])


@pytest.mark.slow
def test_a_new_dataset_recomputes_the_shares_and_requests_every_region(
    prepared: tuple[World, DagsterInstance, Automation],
) -> None:
    world, instance, automation = prepared
    before = world.observed(instance)
    generate_hourly_cube(world.registry.grid, world.cube, seed=1, hours=240)
    # Observed alone first (as the schedule's observation would be): the automation asks for the shares.
    job = define_asset_job("observe_wind", selection=[input_key("wind_hourly")])
    only = Definitions(assets=world.defs.assets, jobs=[job], resources=world.defs.resources)
    assert only.resolve_job_def("observe_wind").execute_in_process(instance=instance).success
    assert world.observed(instance) != before
    assert automation.tick(world.defs) == (1, []), "the shares first; the raster once they are new"
    world.prepare(instance)
    versions = world.shares_materializations(instance)
    assert len(versions) == 2 and versions[0] != versions[1]
    assert automation.tick(world.defs) == (0, sorted(world.registry.ids))
    assert automation.tick(world.defs) == (0, []), "requested once"


@pytest.mark.slow
def test_a_new_percentile_recomputes_the_shares_but_another_parameter_does_not(
    prepared: tuple[World, DagsterInstance, Automation],
) -> None:
    world, instance, automation = prepared
    world.params.write_text(world.params.read_text().replace("blur_sigma_px: 2.9", "blur_sigma_px: 3.1"))
    world.prepare(instance)
    assert len(world.shares_materializations(instance)) == 1
    assert automation.tick(world.defs) == (0, sorted(world.registry.ids)), "the raster, not the shares"
    for region in world.registry.ids:  # the requested region runs happen
        instance.report_runless_asset_event(AssetMaterialization(RASTER_KEY, partition=region))
    assert automation.tick(world.defs) == (0, [])
    world.params.write_text(
        world.params.read_text().replace("fire_weather_percentile: 99.0", "fire_weather_percentile: 95.0")
    )
    world.prepare(instance)
    assert len(world.shares_materializations(instance)) == 2
    assert automation.tick(world.defs) == (0, sorted(world.registry.ids))


@pytest.mark.slow
def test_a_region_is_built_from_the_computed_shares_and_refuses_stale_ones(world: World, demo_store_path: Path) -> None:
    """A real region run reads the asset's shares; with a newer dataset not yet computed, it fails."""
    region = world.registry.ids[len(world.registry.ids) // 2]
    with DagsterInstance.ephemeral() as instance:
        world.prepare(instance)
        job = world.defs.resolve_job_def(REGION_JOB)
        result = job.execute_in_process(instance=instance, partition_key=region)
        assert result.success
        [materialization] = result.asset_materializations_for_node("risk_raster")
        assert materialization.partition == region
        generate_hourly_cube(world.registry.grid, world.cube, seed=2, hours=240)
        stale = job.execute_in_process(instance=instance, partition_key=region, raise_on_error=False)
        assert not stale.success
        failure = [e for e in stale.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "materialize the wind_shares asset first" in str(failure[0].event_specific_data)


@pytest.fixture
def demo_store_path(world: World) -> Path:
    return world.settings.store_path


def test_the_raster_depends_on_the_shares_not_on_the_hourly_dataset(world: World) -> None:
    graph = world.defs.resolve_asset_graph()
    parents = graph.get(RASTER_KEY).parent_keys
    assert WIND_SHARES_KEY in parents
    assert input_key("wind_hourly") not in parents and input_key("wind_direction") not in parents
    assert graph.get(WIND_SHARES_KEY).parent_keys == {input_key("wind_hourly"), AssetKey("wind_params")}

"""Scenarios side by side: two input sets (the 2011 and 2047 climates) built, released and compared in one repository.

A scenario is its own input set, so its own raster versions (the build key holds the inputs'
versions); it is released on its own readers' branch, ``main-<scenario>``, with its own release
tags. Real repositories, real releases (pyramid, tag, promotion), real synthetic GeoTIFFs.
"""

from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from _targets import default_target

from resources.branches import all_release_tags, ensure_branch, is_released, latest_release, release_tags
from resources.compare import ReleaseNotFoundError, compare_releases, resolve_release
from resources.local_store import LocalIcechunkStore
from resources.region_write import write_region
from resources.release import commit_pyramid, read_manifest, release
from resources.store import IcechunkStore
from resources.template import ensure_template
from risk_assets.resource_wiring import store_resource
from risk_assets.settings import Settings
from risk_model.grid import GridSpec, RegionRegistry
from risk_model.input_set import InputSet
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.synthetic import NODATA, UnknownScenarioError, generate_inputs
from risk_model.versions import MAIN, ScenarioNameError, Target, readers_branch, scenario_of


@pytest.fixture(scope="module")
def scenario_inputs(small_grid: GridSpec, tmp_path_factory: pytest.TempPathFactory) -> dict[str | None, InputSet]:
    """The synthetic inputs of the small grid: the default, and the 2047 scenario."""
    root = tmp_path_factory.mktemp("scenario_inputs")
    return {
        None: generate_inputs(small_grid, root / "default", seed=0),
        "2047": generate_inputs(small_grid, root / "2047", seed=0, scenario="2047"),
    }


@pytest.fixture(scope="module")
def small_registry(small_grid: GridSpec) -> RegionRegistry:
    """Every 64 px chunk of the small grid is a region."""
    return RegionRegistry(small_grid, [f"y{y}_x{x}" for y in range(3) for x in range(3)])


def test_a_scenario_names_its_readers_branch_and_only_valid_names_pass() -> None:
    assert readers_branch(None) == MAIN
    assert readers_branch("2047") == "main-2047"
    assert scenario_of("main-2047") == "2047" and scenario_of(MAIN) is None and scenario_of("build-abc") is None
    for bad in ("", "Bad", "a-b", "x" * 33, "2047/ssp"):
        with pytest.raises(ScenarioNameError, match="lower-case letters, digits"):
            readers_branch(bad)
    with pytest.raises(ValueError, match="is not a valid name"):
        Settings(home=Path("/nonexistent"), scenario="2047 hot")


def test_a_scenario_keeps_its_local_files_apart_but_shares_the_repository(tmp_path: Path) -> None:
    default, hot = Settings(home=tmp_path), Settings(home=tmp_path, scenario="2047")
    assert hot.store_path == default.store_path, "one repository: scenarios side by side"
    assert hot.inputs_dir != default.inputs_dir and hot.wind_shares_path != default.wind_shares_path
    assert store_resource(default).branch == MAIN
    store = store_resource(hot)
    assert isinstance(store, LocalIcechunkStore) and store.branch == "main-2047"
    assert store.path == str(default.store_path)


def test_the_2047_inputs_differ_from_the_default_only_in_burn_probability(
    scenario_inputs: dict[str | None, InputSet], small_grid: GridSpec, tmp_path: Path
) -> None:
    default, hot = scenario_inputs[None], scenario_inputs["2047"]
    with rasterio.open(default.burn_probability) as a, rasterio.open(hot.burn_probability) as b:
        assert a.crs == b.crs and a.transform == b.transform, "the same native grid (EPSG:5070, 270 m)"
        base, scaled = a.read(1), b.read(1)
    land = base != NODATA
    assert np.array_equal(scaled[~land], base[~land]), "the ocean stays no-data"
    assert np.allclose(scaled[land], np.minimum(base[land] * np.float32(1.5), 1.0))
    assert (scaled[land] > base[land]).any()
    for role in ("conditional_risk", "wind_direction"):
        assert Path(getattr(default, role)).read_bytes() == Path(getattr(hot, role)).read_bytes(), role
    with pytest.raises(UnknownScenarioError, match=r"no scenario '2099'.*RISK_INPUTS"):
        generate_inputs(small_grid, tmp_path, scenario="2099")


def _constant(registry: RegionRegistry, region_id: str, value: float) -> xr.Dataset:
    region = registry.get(region_id)
    data = {
        v.name: (DIMS, np.full(region.shape, min(int(value), 10) if v.name == "score" else value, dtype=v.dtype))
        for v in VARIABLES
    }
    return xr.Dataset(data, coords=coordinates(registry.grid, region.rows, region.cols))


def _build_and_release(store: IcechunkStore, registry: RegionRegistry, target: Target, value: float) -> str:
    """Every region of ``target`` committed on its version's branch, then released to the store's branch."""
    repo = store.repository()
    ensure_branch(repo, target.version.branch, store.branch)
    for region in registry:
        write_region(
            store,
            registry.grid,
            region,
            _constant(registry, region.id, value),
            key=target.region_key(region.id),
            run_id=f"run-{value}-{region.id}",
            branch=target.version.branch,
        )
    commit_pyramid(store, registry, target, run_id="pyramid")
    made = release(store, registry, target, run_id="release", git_revision="abc123", inputs={})
    assert made.promoted
    return made.tag


def _risk(store: IcechunkStore, **ref: str) -> np.ndarray:
    ds = xr.open_zarr(store.repository().readonly_session(**ref).store, consolidated=False)
    values: np.ndarray = ds["risk"].values
    return values


def test_two_scenarios_are_built_released_and_compared_side_by_side(
    tmp_path: Path, small_registry: RegionRegistry, scenario_inputs: dict[str | None, InputSet]
) -> None:
    settings = {name: Settings(home=tmp_path, grid="small", scenario=name) for name in scenario_inputs}
    stores = {name: store_resource(s) for name, s in settings.items()}
    targets = {name: default_target(inputs, small_registry) for name, inputs in scenario_inputs.items()}
    assert targets[None].version.id != targets["2047"].version.id, "another input set: another version"
    assert targets[None].version.inputs_version != targets["2047"].version.inputs_version

    ensure_template(stores[None], small_registry.grid, {"code_version": "test"})
    default_tag = _build_and_release(stores[None], small_registry, targets[None], 1.0)

    # The scenario's readers' branch starts at main's template, not at main's released raster:
    # until its first release its readers see no data, never the other scenario's under its name.
    ensure_template(stores["2047"], small_registry.grid, {"code_version": "test"})
    repo = stores[None].repository()
    assert repo.lookup_branch("main-2047") != repo.lookup_branch(MAIN)
    assert np.isnan(_risk(stores["2047"], branch="main-2047")).all()
    assert latest_release(repo, "main-2047") is None
    assert not is_released(repo, "main-2047", targets["2047"].version)

    hot_tag = _build_and_release(stores["2047"], small_registry, targets["2047"], 2.0)

    # Both published at once, each on its own branch and with its own tags.
    assert hot_tag.startswith("release-2047-") and not default_tag.startswith("release-2047-")
    assert release_tags(repo) == [default_tag] and release_tags(repo, "main-2047") == [hot_tag]
    assert all_release_tags(repo) == sorted([default_tag, hot_tag])
    assert repo.lookup_branch(MAIN) == repo.lookup_tag(default_tag)
    assert repo.lookup_branch("main-2047") == repo.lookup_tag(hot_tag)
    assert set(np.unique(_risk(stores[None], branch=MAIN)).tolist()) == {1.0}
    assert set(np.unique(_risk(stores["2047"], branch="main-2047")).tolist()) == {2.0}
    assert is_released(repo, MAIN, targets[None].version) and is_released(repo, "main-2047", targets["2047"].version)
    assert not is_released(repo, MAIN, targets["2047"].version)

    # Each release names its scenario and its inputs; the 2047 one is not "previous" to 2011's.
    default_manifest, hot_manifest = read_manifest(stores[None], default_tag), read_manifest(stores[None], hot_tag)
    assert (default_manifest["scenario"], default_manifest["readers_branch"]) == (None, MAIN)
    assert (hot_manifest["scenario"], hot_manifest["readers_branch"]) == ("2047", "main-2047")
    assert hot_manifest["previous_release"] is None
    assert hot_manifest["inputs_version"] == targets["2047"].version.inputs_version

    # Compared by scenario name or by tag: 2047 minus the default is +1 at every pixel.
    assert resolve_release(stores[None], "2047") == hot_tag == resolve_release(stores[None], hot_tag)
    assert resolve_release(stores[None], MAIN) == default_tag
    comparison = compare_releases(stores[None], MAIN, "2047")
    assert (comparison.old, comparison.new) == (default_tag, hot_tag)
    assert comparison.stats.mean_change == pytest.approx(1.0)
    assert comparison.stats.share_changed == 1.0 and comparison.picture.startswith(b"\x89PNG")
    with pytest.raises(ReleaseNotFoundError, match="scenario '2011' has no release yet"):
        resolve_release(stores[None], "2011")


def test_a_scenario_build_through_dagster_writes_only_its_own_branches(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet
) -> None:
    """The code location of a scenario: its runs' store resource carries the scenario's readers' branch."""
    from dagster import DagsterInstance

    from resources.ledger import committed_regions
    from risk_assets.definitions import PREPARE_JOB, REGION_JOB, build_definitions

    settings = Settings(home=tmp_path, grid="demo", scenario="2047")
    defs = build_definitions(settings, inputs=demo_inputs)
    region = demo_registry.ids[10]
    with DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance).success
        run = defs.resolve_job_def(REGION_JOB).execute_in_process(instance=instance, partition_key=region)
        assert run.success
    repo = LocalIcechunkStore(path=str(settings.store_path)).repository()
    version = default_target(demo_inputs, demo_registry).version
    assert set(repo.list_branches()) == {MAIN, "main-2047", version.branch}
    assert repo.lookup_branch(MAIN) == next(iter(repo.ancestry(branch=MAIN))).id
    assert len(list(repo.ancestry(branch=MAIN))) == 1, "main untouched: no template, no region"
    assert len(list(repo.ancestry(branch="main-2047"))) == 2, "the scenario's own template commit"
    assert set(committed_regions(repo, version.branch)) == {region}

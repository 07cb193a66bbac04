"""Shared fixtures: a small grid and seeded synthetic inputs for it."""

from pathlib import Path

import pytest
from _targets import default_target

from resources.local_store import LocalIcechunkStore
from resources.template import ensure_template
from risk_model.grid import GridSpec, RegionRegistry, load_grid, load_registry
from risk_model.input_set import InputSet
from risk_model.synthetic import generate_inputs
from risk_model.versions import Target


@pytest.fixture(scope="session")
def small_grid() -> GridSpec:
    """3 x 3 chunks of 64 px at the demo grid's origin and pixel size (first column all ocean).

    Like the demo grid, a window of the production (conus-30m) lattice.
    """
    return GridSpec(
        name="small",
        crs="EPSG:4326",
        transform=load_grid("demo").transform,
        shape=(192, 192),
        chunks=(64, 64),
    )


@pytest.fixture(scope="session")
def small_inputs(small_grid: GridSpec, tmp_path_factory: pytest.TempPathFactory) -> InputSet:
    """Synthetic inputs (seed 0) for :func:`small_grid`, generated once per session."""
    out_dir: Path = tmp_path_factory.mktemp("small_inputs")
    return generate_inputs(small_grid, out_dir, seed=0)


@pytest.fixture(scope="session")
def demo_registry() -> RegionRegistry:
    """The checked-in region registry of the demo grid."""
    return load_registry("demo")


@pytest.fixture(scope="session")
def demo_inputs(tmp_path_factory: pytest.TempPathFactory, demo_registry: RegionRegistry) -> InputSet:
    """Synthetic GeoTIFF inputs of the demo grid, generated once per session."""
    return generate_inputs(demo_registry.grid, tmp_path_factory.mktemp("inputs"), seed=0)


@pytest.fixture
def demo_store(tmp_path: Path, demo_registry: RegionRegistry) -> LocalIcechunkStore:
    """A fresh local repository holding the demo template."""
    store = LocalIcechunkStore(path=str(tmp_path / "repo.icechunk"))
    ensure_template(store, demo_registry.grid, {"code_version": "test"})
    return store


@pytest.fixture(scope="session")
def demo_target(demo_inputs: InputSet, demo_registry: RegionRegistry) -> Target:
    """What the demo raster is built from with the default parameters and the demo inputs."""
    return default_target(demo_inputs, demo_registry)

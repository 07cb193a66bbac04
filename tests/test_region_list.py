"""Listing the regions that hold data, and the checked-in region lists."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as transform_points

from risk_model import region_list
from risk_model.grid import DATA_DIR, GridSpec, UnknownRegionError, load_grid, load_registry, regions_file
from risk_model.input_set import InputSet
from risk_model.inputs import read_window
from risk_model.region_list import REFERENCE_SOURCE_PREFIX, compute_region_ids, is_reference_list, write_region_list
from risk_model.synthetic import generate_inputs, write_conus_footprint


def write_single_pixel(path: Path, transform: Affine, shape: tuple[int, int], crs: str, pixel: tuple[int, int]) -> str:
    data = np.full(shape, -9999.0, dtype=np.float32)
    data[pixel] = 0.01
    profile = {
        "driver": "GTiff",
        "width": shape[1],
        "height": shape[0],
        "count": 1,
        "dtype": "float32",
        "crs": crs,
        "transform": transform,
        "nodata": -9999.0,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return str(path)


def chunk_of(grid: GridSpec, lon: float, lat: float) -> str:
    col = (lon - grid.transform[2]) / grid.transform[0]
    row = (lat - grid.transform[5]) / grid.transform[4]
    return f"y{int(row // grid.chunks[0])}_x{int(col // grid.chunks[1])}"


def test_checked_in_demo_list_matches_its_inputs(tmp_path: Path) -> None:
    grid = load_grid("demo")
    ids = compute_region_ids(grid, generate_inputs(grid, tmp_path, seed=0))
    payload = json.loads(regions_file("demo").read_text())
    assert payload["grid"] == "demo" and "region_list" in payload["source"]
    assert payload["regions"] == ids
    registry = load_registry("demo")
    assert registry.ids == ids
    ny, nx = grid.chunk_counts
    assert len(ids) >= 48
    all_ocean = {f"y{iy}_x0" for iy in range(ny)}
    assert all_ocean.isdisjoint(ids)  # the westernmost column is all ocean
    assert {f"y{iy}_x{ix}" for iy in range(ny) for ix in range(2, nx)} <= set(ids)


def test_conus_footprint_is_listed_where_the_outline_is(tmp_path: Path) -> None:
    """The coarse CONUS footprint (for grids too large for synthetic inputs) lists plausible chunks.

    The checked-in list of conus-30m is the reference's own (tests/test_reference_grid.py).
    """
    grid = load_grid("conus-30m")
    ids = compute_region_ids(grid, [str(write_conus_footprint(grid, tmp_path))])
    assert 300 < len(ids) < 600  # of 799 chunks: the lower 48 fill about half the bounding box
    assert chunk_of(grid, -98.0, 38.5) in ids  # Kansas
    assert chunk_of(grid, -126.0, 30.0) not in ids  # Pacific
    assert chunk_of(grid, -62.0, 50.0) not in ids  # Labrador: outside the outline


def test_a_reference_list_is_not_overwritten_by_a_computed_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "grids").mkdir(parents=True)
    shutil.copy(DATA_DIR / "grids" / "demo.json", data_dir / "grids" / "demo.json")
    write_region_list("demo", ["y0_x3"], f"{REFERENCE_SOURCE_PREFIX} of a test", data_dir=data_dir)
    assert is_reference_list("demo", data_dir)
    with pytest.raises(ValueError, match="reference"):
        write_region_list("demo", ["y0_x4"], "computed", data_dir=data_dir)
    assert load_registry("demo", data_dir).ids == ["y0_x3"]
    write_region_list("demo", ["y0_x4"], "computed", data_dir=data_dir, replace_reference=True)
    assert load_registry("demo", data_dir).ids == ["y0_x4"] and not is_reference_list("demo", data_dir)


def test_the_command_refuses_to_overwrite_the_conus_reference_list(capsys: pytest.CaptureFixture[str]) -> None:
    before = regions_file("conus-30m").read_text()
    with pytest.raises(SystemExit) as exc:
        region_list.main(["--grid", "conus-30m", "--write"])
    assert exc.value.code == 2 and "reference" in capsys.readouterr().err
    assert regions_file("conus-30m").read_text() == before


def test_listing_is_conservative(small_grid: GridSpec, small_inputs: InputSet) -> None:
    """Every chunk where any input pixel is valid is listed; all-ocean chunks are not."""
    ids = set(compute_region_ids(small_grid, small_inputs))
    full = (slice(0, small_grid.shape[0]), slice(0, small_grid.shape[1]))
    valid = np.isfinite(read_window(small_inputs.conditional_risk, small_grid, *full))
    valid |= np.isfinite(read_window(small_inputs.burn_probability, small_grid, *full, resampling="nearest"))
    ny, nx = small_grid.chunk_counts
    cy, cx = small_grid.chunks
    for iy in range(ny):
        for ix in range(nx):
            holds = valid[iy * cy : (iy + 1) * cy, ix * cx : (ix + 1) * cx].any()
            if holds:
                assert f"y{iy}_x{ix}" in ids
    assert ids == {f"y{iy}_x{ix}" for iy in range(ny) for ix in (1, 2)}


def test_a_single_valid_pixel_is_found_when_decimated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grid = load_grid("conus-30m")
    monkeypatch.setattr(region_list, "MAX_FOOTPRINT_PX", 64)  # force a 16x decimation
    transform = Affine(0.02, 0, -125.0, 0, -0.02, 54.0)
    path = write_single_pixel(tmp_path / "one.tif", transform, (1000, 1000), "EPSG:4326", (777, 333))
    lon, lat = transform @ (333.5, 777.5)
    ids = compute_region_ids(grid, [path])
    assert chunk_of(grid, lon, lat) in ids
    assert len(ids) <= 4  # one decimated cell (grown by one) touches at most 2 x 2 chunks


def test_a_single_projected_pixel_maps_to_its_chunk(tmp_path: Path) -> None:
    grid = load_grid("conus-30m")
    (x,), (y,) = transform_points("EPSG:4326", "EPSG:5070", [-98.0], [38.5])
    transform = Affine(270.0, 0, x - 50 * 270.0, 0, -270.0, y + 50 * 270.0)
    path = write_single_pixel(tmp_path / "albers.tif", transform, (100, 100), "EPSG:5070", (50, 50))
    assert compute_region_ids(grid, [path]) == [chunk_of(grid, -98.0, 38.5)]


def test_write_region_list_round_trips(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "grids").mkdir(parents=True)
    shutil.copy(DATA_DIR / "grids" / "demo.json", data_dir / "grids" / "demo.json")
    path = write_region_list("demo", ["y1_x2", "y0_x9", "y0_x3"], "a test", data_dir=data_dir)
    payload = json.loads(path.read_text())
    assert payload == {"grid": "demo", "source": "a test", "regions": ["y0_x3", "y0_x9", "y1_x2"]}
    assert load_registry("demo", data_dir).ids == payload["regions"]
    with pytest.raises(UnknownRegionError, match="outside grid"):
        write_region_list("demo", ["y99_x0"], "bad", data_dir=data_dir)
    with pytest.raises(ValueError, match="duplicate"):
        write_region_list("demo", ["y0_x3", "y0_x3"], "dup", data_dir=data_dir)

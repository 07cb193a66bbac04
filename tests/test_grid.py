"""The pinned grids and the region registry."""

import pytest

from risk_model.grid import RegionRegistry, UnknownRegionError, load_grid, load_registry, region_of_chunk


def test_conus_grid_matches_production() -> None:
    grid = load_grid("conus-30m")
    assert grid.crs == "EPSG:4326"
    assert grid.shape == (97579, 208881)
    assert grid.chunks == (6000, 4500)
    assert grid.chunk_counts == (17, 47)
    assert grid.transform[4] > 0, "latitude must ascend"
    lat = grid.latitude()
    assert lat.size == 97579 and bool((lat[1:] > lat[:-1]).all())
    # the last chunk row and column are partial
    last = region_of_chunk(grid, 16, 46)
    assert last.shape == (97579 - 16 * 6000, 208881 - 46 * 4500)


def test_demo_registry_has_enough_regions_and_is_a_subset_of_the_grid() -> None:
    registry = load_registry("demo")
    ny, nx = registry.grid.chunk_counts
    assert len(registry) >= 48
    assert len(registry) < ny * nx, "all-ocean regions are not partitions"
    assert registry.ids == sorted(registry.ids, key=lambda r: tuple(int(p[1:]) for p in r.split("_")))


def test_conus_registry_is_checked_in() -> None:
    registry = load_registry("conus-30m")
    assert 0 < len(registry) < 799


def test_region_slices_tile_the_grid_without_overlap() -> None:
    grid = load_grid("demo")
    registry = RegionRegistry(grid, [f"y{iy}_x{ix}" for iy in range(7) for ix in range(10)])
    covered = sum(r.shape[0] * r.shape[1] for r in registry)
    assert covered == grid.shape[0] * grid.shape[1]
    region = registry.get("y2_x3")
    assert (region.rows, region.cols) == (slice(512, 768), slice(768, 1024))
    west, south, east, north = region.bounds
    assert west < east and south < north


@pytest.mark.parametrize("bad", ["y99_x0", "x1_y2", "y1-x2", ""])
def test_unknown_or_malformed_region_is_refused_with_its_name(bad: str) -> None:
    registry = load_registry("demo")
    with pytest.raises(UnknownRegionError, match=repr(bad) if bad else "malformed"):
        registry.get(bad)


def test_unknown_grid_lists_known_grids() -> None:
    with pytest.raises(FileNotFoundError, match="demo"):
        load_grid("mars-1km")

"""Release pictures: the overview's marks and the change map, read back from the PNG.

Levels are built here directly from the demo registry with one known value per region, so
the colour at a region's centre is known. PNGs are decoded with Pillow, not with the
encoder's own code, and pixels are located with the mapping measured at render time.
"""

import io
import math

import numpy as np
import numpy.typing as npt
import pytest
import xarray as xr
from PIL import Image

from risk_model.diff_picture import CHANGE_TOLERANCE, DIFF_NODATA_COLOUR, DiffStats, diff_png, diff_stats, render_diff
from risk_model.grid import Region, RegionRegistry, UnknownRegionError
from risk_model.pictures import FAILED_COLOUR, MISSING_COLOUR, Picture, overview_png, render_overview
from risk_model.quicklook import SCORE_COLOURS
from risk_model.schema import DIMS, SCORE_NODATA

FACTOR = 4
MISSING = ("y0_x3", "y2_x5", "y6_x9")
FAILED = ("y4_x2", "y2_x5")  # y2_x5 is both missing and failed
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WHITE = (255, 255, 255)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


def _score_of(region: Region) -> int:
    return (3 * region.iy + region.ix) % 11


def _window(region: Region) -> tuple[slice, slice]:
    return (
        slice(region.rows.start // FACTOR, region.rows.stop // FACTOR),
        slice(region.cols.start // FACTOR, region.cols.stop // FACTOR),
    )


def _level(
    registry: RegionRegistry,
    risk_of: dict[str, float],
    score_of: dict[str, int],
    factor: int = FACTOR,
) -> xr.Dataset:
    """A level of the demo grid with one risk and one score per region (no data elsewhere)."""
    grid = registry.grid
    shape = (grid.shape[0] // factor, grid.shape[1] // factor)
    risk = np.full(shape, np.nan, dtype=np.float32)
    score = np.full(shape, SCORE_NODATA, dtype=np.uint8)
    for region_id, value in risk_of.items():
        risk[_window(registry.get(region_id))] = value
    for region_id, value in score_of.items():
        score[_window(registry.get(region_id))] = value
    return xr.Dataset(
        {"risk": (DIMS, risk, {"units": "1"}), "score": (DIMS, score)},
        coords={
            "latitude": grid.latitude().reshape(-1, factor).mean(axis=1),
            "longitude": grid.longitude().reshape(-1, factor).mean(axis=1),
        },
        attrs={"factor": factor, "grid": grid.name, "grid_fingerprint": grid.fingerprint},
    )


@pytest.fixture(scope="module")
def partly_built(demo_registry: RegionRegistry) -> xr.Dataset:
    """The demo grid with every region but :data:`MISSING` built, each at a known score."""
    built = [r for r in demo_registry if r.id not in MISSING]
    return _level(
        demo_registry,
        risk_of={r.id: _score_of(r) / 10 for r in built},
        score_of={r.id: _score_of(r) for r in built},
    )


@pytest.fixture(scope="module")
def overview(partly_built: xr.Dataset, demo_registry: RegionRegistry) -> Picture:
    return render_overview(partly_built, demo_registry, FACTOR, missing=MISSING, failed=FAILED, title="release t")


def _pixels(png: bytes) -> npt.NDArray[np.uint8]:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)


def _at(pixels: npt.NDArray[np.uint8], picture: Picture, lon: float, lat: float) -> tuple[int, int, int]:
    col, row = picture.pixel_of(lon, lat)
    r, g, b, _ = pixels[int(row), int(col)]
    return (int(r), int(g), int(b))


def _centre(region: Region) -> tuple[float, float]:
    west, south, east, north = region.bounds
    return ((west + east) / 2, (south + north) / 2)


def _near(pixels: npt.NDArray[np.uint8], picture: Picture, lon: float, lat: float, colour: str, radius: int) -> bool:
    """Whether a pixel within ``radius`` of the point has ``colour`` (to within antialiasing)."""
    col, row = (int(v) for v in picture.pixel_of(lon, lat))
    patch = pixels[row - radius : row + radius + 1, col - radius : col + radius + 1, :3].astype(np.int16)
    distance = np.abs(patch - np.array(_rgb(colour), dtype=np.int16)).max(axis=2)
    return bool((distance <= 12).any())


def _edge_midpoints(region: Region) -> list[tuple[float, float]]:
    west, south, east, north = region.bounds
    lon, lat = _centre(region)
    return [(west, lat), (east, lat), (lon, south), (lon, north)]


# --- overview --------------------------------------------------------------------------


def test_the_overview_fills_exactly_the_missing_regions(overview: Picture, demo_registry: RegionRegistry) -> None:
    pixels = _pixels(overview.png)
    for region in demo_registry:
        colour = _at(pixels, overview, *_centre(region))
        if region.id in MISSING:
            assert colour == _rgb(MISSING_COLOUR), region.id
        else:
            # Present regions show their score in the fixed scale, never the missing colour.
            assert colour == _rgb(SCORE_COLOURS[_score_of(region)]), region.id
            assert colour != _rgb(MISSING_COLOUR)


def test_the_overview_is_north_up_with_no_data_white(overview: Picture, demo_registry: RegionRegistry) -> None:
    pixels = _pixels(overview.png)
    south = demo_registry.get("y0_x4")
    north = demo_registry.get("y6_x4")
    assert overview.pixel_of(*_centre(north))[1] < overview.pixel_of(*_centre(south))[1]
    # Column 0 of the demo grid is ocean: no region, no data, the white background shows.
    ocean = demo_registry.grid.bounds(slice(768, 1024), slice(0, 256))
    assert _at(pixels, overview, (ocean[0] + ocean[2]) / 2, (ocean[1] + ocean[3]) / 2) == WHITE


def test_failed_regions_are_outlined_and_no_others(overview: Picture, demo_registry: RegionRegistry) -> None:
    pixels = _pixels(overview.png)
    for region_id in FAILED:
        for point in _edge_midpoints(demo_registry.get(region_id)):
            assert _near(pixels, overview, *point, FAILED_COLOUR, radius=4), (region_id, point)
    failed = [demo_registry.get(rid) for rid in FAILED]
    for region in demo_registry:
        if any(abs(region.iy - f.iy) <= 1 and abs(region.ix - f.ix) <= 1 for f in failed):
            continue  # shares an edge or corner with a failed region
        for point in _edge_midpoints(region):
            assert not _near(pixels, overview, *point, FAILED_COLOUR, radius=4), (region.id, point)


def test_without_failures_no_map_pixel_has_the_failed_colour(
    partly_built: xr.Dataset, demo_registry: RegionRegistry
) -> None:
    picture = render_overview(partly_built, demo_registry, FACTOR, missing=MISSING, failed=[], title="t")
    west, south, east, north = demo_registry.grid.bounds(slice(0, 1792), slice(0, 2560))
    (left, top), (right, bottom) = picture.pixel_of(west, north), picture.pixel_of(east, south)
    # The map only: the legend always shows the failed-checks swatch.
    area = _pixels(picture.png)[int(top) : int(bottom) + 1, int(left) : int(right) + 1, :3].astype(np.int16)
    assert area.shape[0] > 500 and area.shape[1] > 700
    distance = np.abs(area - np.array(_rgb(FAILED_COLOUR), dtype=np.int16)).max(axis=2)
    assert int(distance.min()) > 40


def test_the_overview_png_is_valid_and_deterministic(
    overview: Picture, partly_built: xr.Dataset, demo_registry: RegionRegistry
) -> None:
    assert overview.png.startswith(PNG_SIGNATURE)
    assert _pixels(overview.png).shape == (overview.height, overview.width, 4)
    again = overview_png(
        partly_built, demo_registry, FACTOR, missing=list(MISSING), failed=set(FAILED), title="release t"
    )
    assert again == overview.png
    other = overview_png(partly_built, demo_registry, FACTOR, missing=MISSING[:1], failed=FAILED, title="release t")
    assert other != overview.png


def test_a_descending_latitude_level_draws_the_same_map(
    overview: Picture, partly_built: xr.Dataset, demo_registry: RegionRegistry
) -> None:
    flipped = partly_built.isel(latitude=slice(None, None, -1))
    picture = render_overview(flipped, demo_registry, FACTOR, missing=MISSING, failed=FAILED, title="release t")
    assert picture.png == overview.png


def test_the_overview_refuses_inconsistent_inputs(partly_built: xr.Dataset, demo_registry: RegionRegistry) -> None:
    with pytest.raises(UnknownRegionError, match="y3_x0"):
        overview_png(partly_built, demo_registry, FACTOR, missing=["y3_x0"], failed=[], title="t")
    with pytest.raises(ValueError, match=r"coarsened by 2 has shape \(896, 1280\)"):
        overview_png(partly_built, demo_registry, 2, missing=[], failed=[], title="t")
    bad = partly_built.copy(deep=True)
    bad["score"][0, 0] = 42
    with pytest.raises(ValueError, match=r"\[42\]"):
        overview_png(bad, demo_registry, FACTOR, missing=[], failed=[], title="t")
    other = partly_built.assign_attrs(grid="elsewhere", grid_fingerprint="0" * 16)
    with pytest.raises(ValueError, match="elsewhere"):
        overview_png(other, demo_registry, FACTOR, missing=[], failed=[], title="t")


# --- change in risk --------------------------------------------------------------------


def _random_pair(registry: RegionRegistry) -> tuple[xr.Dataset, xr.Dataset]:
    """Two releases: random risk and scores with holes, some only in one of them."""
    rng = np.random.default_rng(7)
    old = _level(registry, {r.id: 0.0 for r in registry}, {r.id: 0 for r in registry})
    shape = old["risk"].shape
    old_risk = rng.random(shape, dtype=np.float32)
    new_risk = (old_risk + rng.normal(0, 0.05, shape)).astype(np.float32)
    same = rng.random(shape) < 0.3
    new_risk[same] = old_risk[same]  # unchanged pixels
    old_risk[rng.random(shape) < 0.05] = np.nan
    new_risk[rng.random(shape) < 0.05] = np.nan
    old_score = rng.integers(0, 11, shape).astype(np.uint8)
    new_score = np.where(rng.random(shape) < 0.1, rng.integers(0, 11, shape), old_score).astype(np.uint8)
    new = old.copy(deep=True)
    old["risk"].values[:] = old_risk
    old["score"].values[:] = old_score
    new["risk"].values[:] = new_risk
    new["score"].values[:] = new_score
    return new, old


def test_diff_stats_equal_numpy(demo_registry: RegionRegistry) -> None:
    new, old = _random_pair(demo_registry)
    stats = diff_stats(new, old)
    a = new["risk"].values.astype(np.float64)
    b = old["risk"].values.astype(np.float64)
    both = ~np.isnan(a) & ~np.isnan(b)
    change = (a - b)[both]
    assert stats.pixels_compared == int(both.sum()) > 0
    assert stats.pixels_only_new == int((~np.isnan(a) & np.isnan(b)).sum()) > 0
    assert stats.pixels_only_old == int((np.isnan(a) & ~np.isnan(b)).sum()) > 0
    assert stats.mean_change == pytest.approx(float(np.mean(change)), rel=1e-12)
    assert stats.mean_abs_change == pytest.approx(float(np.mean(np.abs(change))), rel=1e-12)
    assert stats.max_increase == pytest.approx(float(change.max()))
    assert stats.max_decrease == pytest.approx(-float(change.min()))
    assert stats.share_changed == pytest.approx(float(np.mean(np.abs(change) > 1e-6)))
    assert 0 < stats.share_changed < 1  # the data has both changed and unchanged pixels
    score_changed = new["score"].values[both] != old["score"].values[both]
    assert stats.share_score_changed == pytest.approx(float(np.mean(score_changed)))
    assert stats.colour_limit == pytest.approx(float(np.percentile(np.abs(change), 99)))


def test_diff_metadata_is_plain_numbers(demo_registry: RegionRegistry) -> None:
    new, old = _random_pair(demo_registry)
    metadata = diff_stats(new, old).as_metadata()
    assert set(metadata) == set(DiffStats.__dataclass_fields__)
    assert all(type(value) in (int, float) for value in metadata.values())
    assert isinstance(metadata["pixels_compared"], int)


def test_nothing_to_compare_gives_nan_means(demo_registry: RegionRegistry) -> None:
    empty = _level(demo_registry, {}, {})
    stats = diff_stats(empty, empty)
    assert stats.pixels_compared == 0
    assert math.isnan(stats.mean_change) and math.isnan(stats.share_changed)
    assert stats.max_increase == 0.0 and stats.max_decrease == 0.0
    assert stats.colour_limit == CHANGE_TOLERANCE


def test_the_diff_picture_is_red_where_risk_rose_and_blue_where_it_fell(demo_registry: RegionRegistry) -> None:
    built = [r.id for r in demo_registry if r.id != "y6_x9"]
    old = _level(demo_registry, {rid: 0.5 for rid in built}, {rid: 5 for rid in built})
    delta = {rid: 0.0 for rid in built} | {"y1_x2": 0.1, "y5_x7": -0.1}
    new = _level(demo_registry, {rid: 0.5 + d for rid, d in delta.items()}, {rid: 5 for rid in built})
    picture, stats = render_diff(new, old, title="new vs old")
    assert stats.max_increase == pytest.approx(0.1, rel=1e-6)
    assert stats.max_decrease == pytest.approx(0.1, rel=1e-6)
    pixels = _pixels(picture.png)
    r, g, b = _at(pixels, picture, *_centre(demo_registry.get("y1_x2")))
    assert r > b + 60 and r > g + 60, (r, g, b)
    r, g, b = _at(pixels, picture, *_centre(demo_registry.get("y5_x7")))
    assert b > r + 60, (r, g, b)
    assert min(_at(pixels, picture, *_centre(demo_registry.get("y3_x3")))) > 235  # no change: white
    assert _at(pixels, picture, *_centre(demo_registry.get("y6_x9"))) == _rgb(DIFF_NODATA_COLOUR)
    png, again = diff_png(new, old, title="new vs old")
    assert png == picture.png and png.startswith(PNG_SIGNATURE)
    assert again == stats


def test_levels_of_different_shapes_are_refused(demo_registry: RegionRegistry) -> None:
    fine = _level(demo_registry, {}, {}, factor=4)
    coarse = _level(demo_registry, {}, {}, factor=8)
    with pytest.raises(ValueError, match=r"new \(448, 640\), old \(224, 320\)"):
        diff_png(fine, coarse, title="t")
    shifted = fine.assign_coords(longitude=fine["longitude"] + 1.0)
    with pytest.raises(ValueError, match="longitude"):
        diff_stats(fine, shifted)

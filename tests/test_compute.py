"""Computing regions: no seams between regions, datasets that fit the template."""

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from risk_model import schema
from risk_model.compute import (
    band_latitude,
    band_of_latitude,
    compute_region,
    compute_window,
    pixel_bands,
    pixel_size_at,
    window_halo,
)
from risk_model.grid import GridSpec, load_grid, region_of_chunk
from risk_model.input_set import InputSet
from risk_model.inputs import read_burn_probability
from risk_model.kernels import RowBand, halo_pixels
from risk_model.params import ModelParams
from risk_model.science import RiskArrays
from risk_model.synthetic import generate_inputs

PARAMS = ModelParams()
FLOATS = ("burn_probability", "conditional_risk", "risk")
# A few float32 roundings (eps 1.2e-7): relative, since the model only adds non-negative terms.
FLOAT32_NOISE = 1e-6
CONUS = load_grid("conus-30m")


def _stitch(grid: GridSpec, inputs: InputSet, params: ModelParams, **kwargs: Any) -> dict[str, np.ndarray]:
    """Every chunk of ``grid`` computed on its own (with its halo), stitched together."""
    stitched = {name: np.full(grid.shape, np.nan) for name in FLOATS}
    stitched["score"] = np.full(grid.shape, schema.SCORE_NODATA, dtype=np.uint8)
    ny, nx = grid.chunk_counts
    for iy in range(ny):
        for ix in range(nx):
            region = region_of_chunk(grid, iy, ix)
            part = compute_window(grid, region.rows, region.cols, inputs, params, **kwargs)
            if part is None:  # all ocean
                continue
            for name in stitched:
                stitched[name][region.rows, region.cols] = getattr(part, name)
    return stitched


def test_regions_stitch_into_the_whole_domain(small_grid: GridSpec, small_inputs: InputSet) -> None:
    """Every region computed with its halo equals one computation over the whole grid."""
    size = pixel_size_at(small_grid, 38.03, PARAMS)
    full = (slice(0, small_grid.shape[0]), slice(0, small_grid.shape[1]))
    # In float64: float32 rounding (~1e-9 here) would hide the 1e-11 that tells a short halo.
    whole = compute_window(small_grid, *full, small_inputs, PARAMS, pixel_size_m=size, dtype=np.float64)
    assert whole is not None
    stitched = _stitch(small_grid, small_inputs, PARAMS, pixel_size_m=size, dtype=np.float64)
    for name in FLOATS:
        expected = getattr(whole, name)
        np.testing.assert_array_equal(np.isnan(stitched[name]), np.isnan(expected))
        # Within 1e-6 is the requirement, but a halo 20 px short still stays within 1e-6 (the far
        # end of the dependency chain weighs little); floating-point noise is ~1e-14 here.
        np.testing.assert_allclose(stitched[name], expected, rtol=0, atol=1e-11, equal_nan=True)
    np.testing.assert_array_equal(stitched["score"], whole.score)
    # The comparison means something: land with spread burn probability and several scores.
    land = np.isfinite(whole.conditional_risk)
    assert 0.3 < land.mean() < 0.8
    assert len(np.unique(whole.score[land])) >= 4


def test_region_dataset_matches_the_template(small_grid: GridSpec, small_inputs: InputSet) -> None:
    region = region_of_chunk(small_grid, 1, 1)  # part ocean, part land
    ds = compute_region(small_grid, region, small_inputs, PARAMS)
    template = schema.template_dataset(small_grid, {})
    assert list(ds.data_vars) == [v.name for v in schema.VARIABLES]
    assert set(ds.coords) == {"latitude", "longitude"}  # no spatial_ref or other scalars
    for v in schema.VARIABLES:
        assert ds[v.name].dims == schema.DIMS
        assert ds[v.name].dtype == np.dtype(v.dtype)
        assert ds[v.name].shape == region.shape
        assert ds[v.name].attrs == template[v.name].attrs
    expected = schema.coordinates(small_grid, region.rows, region.cols)
    for name in ("latitude", "longitude"):
        xr.testing.assert_identical(ds[name].variable.to_base_variable(), expected[name])
        # Bit for bit the template's coordinates (region="auto" matches them exactly).
        np.testing.assert_array_equal(
            ds[name].values, template[name].values[getattr(region, "rows" if name == "latitude" else "cols")]
        )
    score = ds["score"].values
    ocean = np.isnan(ds["conditional_risk"].values)
    assert ocean.any() and (~ocean).any()
    # The reference's blur propagates the ocean's missing burn probability (whose coast follows
    # the 270 m source's pixels) half a kernel (8 px) further inland: those land pixels are
    # no-data too, and score as such.
    risk = ds["risk"].values
    assert np.isnan(risk[ocean]).all() and (risk[np.isfinite(risk)] >= 0).all()
    assert (score[np.isnan(risk)] == schema.SCORE_NODATA).all() and (score[np.isfinite(risk)] <= 10).all()
    assert np.isfinite(risk[~ocean]).mean() > 0.3
    # With the option that renormalises the blur over land, only land without burn probability
    # has no score.
    option = PARAMS.model_copy(update={"blur_nodata": "renormalise"})
    renormalised = compute_region(small_grid, region, small_inputs, option)["risk"].values
    assert np.isfinite(renormalised[~ocean]).sum() > np.isfinite(risk[~ocean]).sum()


def test_all_ocean_region_is_the_empty_dataset(small_grid: GridSpec, small_inputs: InputSet) -> None:
    region = region_of_chunk(small_grid, 2, 0)
    ds = compute_region(small_grid, region, small_inputs, PARAMS)
    xr.testing.assert_identical(ds, schema.empty_region(small_grid, region.rows, region.cols))


def test_pixel_size_shrinks_east_west_with_latitude() -> None:
    grid = GridSpec(name="g", crs="EPSG:4326", transform=(0.001, 0, 0, 0, 0.001, 0), shape=(1, 1), chunks=(1, 1))
    dy0, dx0 = pixel_size_at(grid, 0.0, PARAMS)
    dy60, dx60 = pixel_size_at(grid, 60.0, PARAMS)
    # The reference's haversine on a 6,371,000 m sphere: 0.001 degree = 6371000 x pi / 180000 m.
    assert dy0 == pytest.approx(111.19493, abs=1e-5) and dx0 == pytest.approx(dy0)
    assert dy60 == pytest.approx(dy0, rel=1e-9) and dx60 == pytest.approx(dy0 / 2)
    projected = GridSpec(name="p", crs="EPSG:5070", transform=(30.0, 0, 0, 0, 30.0, 0), shape=(1, 1), chunks=(1, 1))
    assert pixel_size_at(projected, 45.0, PARAMS) == (30.0, 30.0)


def test_compute_window_returns_cropped_arrays(small_grid: GridSpec, small_inputs: InputSet) -> None:
    out = compute_window(small_grid, slice(64, 128), slice(128, 160), small_inputs, PARAMS)
    assert isinstance(out, RiskArrays)
    assert out.burn_probability.shape == out.score.shape == (64, 32)


# --- Position, not window, decides geometry ---------------------------------------------------


def test_bands_are_the_reference_regions_rows() -> None:
    """The default latitude bands are the reference grid's 6000-row chunks (its regions)."""
    a = CONUS.transform[4]
    for iy in (0, 8, 16):
        south = CONUS.transform[5] + iy * 6000 * a
        # Pixel centres half a pixel inside either edge of the chunk row belong to its band.
        assert band_of_latitude(south + 0.5 * a, PARAMS) == iy
        assert band_of_latitude(south + 5999.5 * a, PARAMS) == iy
        assert band_latitude(iy, PARAMS) == pytest.approx(south + 3000 * a, abs=1e-9)
    # Rows of a window that straddles the border between chunk rows 7 and 8 (row 48000).
    bands = pixel_bands(CONUS, slice(47990, 48010), PARAMS)
    assert [b.rows for b in bands] == [slice(0, 10), slice(10, 20)]
    # dy: 6371000 m x 0.00030799387843671866 degrees in radians = 34.2475 m everywhere;
    # dx: the haversine across one pixel at each band's middle latitude (35.36 N and 37.21 N... :
    # the middles are 22.428 + 7.5 and 8.5 band heights).
    for band, iy in zip(bands, (7, 8), strict=True):
        lat = band_latitude(iy, PARAMS)
        assert band.pixel_size_m[0] == pytest.approx(6_371_000 * math.radians(a), rel=1e-9)
        assert band.pixel_size_m[1] == pytest.approx(
            6_371_000 * math.radians(a) * math.cos(math.radians(lat)), rel=1e-9
        )
    # The same pixel gets the same size in any window that holds it.
    other = pixel_bands(CONUS, slice(47000, 48005), PARAMS)
    assert other[-1] == RowBand(slice(1000, 1005), bands[1].pixel_size_m)
    assert other[0].pixel_size_m == bands[0].pixel_size_m


def test_window_halo_covers_every_band_it_reaches() -> None:
    halo = window_halo(CONUS, slice(47990, 48010), PARAMS)
    grown = slice(47990 - halo, 48010 + halo)
    assert halo == max(halo_pixels(PARAMS, b.pixel_size_m) for b in pixel_bands(CONUS, grown, PARAMS))
    # 3 kernel reaches (510 m / 27 m east-west: 18 px) + 8 px of blur.
    assert halo == 3 * 18 + 8


def _conus_window(border_row: int, col: int, shape: tuple[int, int]) -> GridSpec:
    """A grid on the conus-30m lattice whose middle row is the production row ``border_row``."""
    a, _, c, _, e, f = CONUS.transform
    first = border_row - shape[0] // 2
    return GridSpec(
        name="seam",
        crs=CONUS.crs,
        transform=(a, 0.0, c + col * a, 0.0, e, f + first * e),
        shape=shape,
        chunks=(shape[0] // 2, 32),  # the synthetic coast lies 36-60 px from the western edge
    )


def _write(path: Path, data: np.ndarray, transform: Affine, nodata: float) -> str:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0]}
    profile |= {"dtype": "float32", "crs": "EPSG:4326", "transform": transform, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(np.float32))
    return str(path)


def _seam_inputs(grid: GridSpec, out_dir: Path, seed: int) -> InputSet:
    """Inputs for a small window of the production lattice, 120 px past it on every side.

    Burn probability and conditional risk on the grid's own pixels (north-up files), the
    burn probability with a third of its pixels non-burnable (0) in 3 x 3 px blocks and a few
    missing (NaN), so the spread, which only shows where the burn probability is 0, is
    everywhere; the western 20 columns are ocean. Wind shares on 0.01 degree pixels, a few
    of them without fire-weather hours (all 0).
    """
    rng = np.random.default_rng(seed)
    margin = 120
    a, _, c, _, e, f = grid.transform
    ny, nx = grid.shape[0] + 2 * margin, grid.shape[1] + 2 * margin
    north_up = Affine(a, 0.0, c - margin * a, 0.0, -e, f + (grid.shape[0] + margin) * e)
    bp = rng.uniform(0.001, 0.06, (ny, nx))
    blocks = rng.random((ny // 3 + 1, nx // 3 + 1)) < 0.33
    bp[np.kron(blocks, np.ones((3, 3), dtype=bool))[:ny, :nx]] = 0.0
    bp[rng.random((ny, nx)) < 0.0005] = -9999.0
    cr = rng.uniform(0.0, 100.0, (ny, nx))
    cr[:, : margin + 20] = -9999.0
    step = 0.01
    wind_transform = Affine(step, 0.0, c - margin * a - step, 0.0, -step, f + (grid.shape[0] + margin) * e + step)
    wy, wx = math.ceil(ny * e / step) + 2, math.ceil(nx * a / step) + 2
    shares = rng.random((8, wy, wx))
    shares[:, rng.random((wy, wx)) < 0.05] = 0.0
    return InputSet(
        burn_probability=_write(out_dir / "bp.tif", bp[None], north_up, -9999.0),
        conditional_risk=_write(out_dir / "cr.tif", cr[None], north_up, -9999.0),
        wind_direction=_write(out_dir / "wind.tif", shares, wind_transform, -1.0),
    )


@pytest.mark.parametrize(("chunk_row", "col"), [(8, 27_000), (14, 36_000)])
def test_no_seam_at_production_region_borders(chunk_row: int, col: int, tmp_path: Path) -> None:
    """Two neighbouring regions across a real production border (conus-30m chunk rows of 6000
    px, at 37.21 N and 48.30 N) computed separately equal the computation of their union."""
    grid = _conus_window(6000 * chunk_row, col, (320, 160))
    inputs = _seam_inputs(grid, tmp_path, seed=chunk_row)
    border, cols = 160, slice(0, 160)
    south, north = slice(border - 96, border), slice(border, border + 96)
    union = compute_window(grid, slice(south.start, north.stop), cols, inputs, PARAMS)
    parts = [compute_window(grid, rows, cols, inputs, PARAMS) for rows in (south, north)]
    assert union is not None and parts[0] is not None and parts[1] is not None
    for name in (*FLOATS, "score"):
        joined = np.concatenate([getattr(parts[0], name), getattr(parts[1], name)])
        expected = getattr(union, name)
        if name == "score":
            np.testing.assert_array_equal(joined, expected)
        else:
            np.testing.assert_array_equal(np.isnan(joined), np.isnan(expected))
            np.testing.assert_allclose(joined, expected, rtol=0, atol=1e-6, equal_nan=True)
            # In fact equal to the rounding of the float32 working arrays: each window's float64
            # FFT noise (~1e-17) differs and, rarely, rounds a pixel to the next float32 (eps 1.2e-7).
            np.testing.assert_allclose(joined, expected, rtol=FLOAT32_NOISE, atol=0, equal_nan=True)
    # The comparison means something: the two bands' kernels differ, so one pixel size for
    # the whole union changes the northern half (the south window's halo reaches into it);
    # and both halves hold data.
    bands = pixel_bands(grid, slice(0, 320), PARAMS)
    assert len(bands) == 2
    one_size = compute_window(
        grid, slice(south.start, north.stop), cols, inputs, PARAMS, pixel_size_m=bands[0].pixel_size_m
    )
    assert one_size is not None
    assert np.nanmax(np.abs(one_size.burn_probability[96:] - union.burn_probability[96:])) > 1e-6
    assert (
        np.isfinite(union.burn_probability[:96]).mean() > 0.3 and np.isfinite(union.burn_probability[96:]).mean() > 0.3
    )


def test_whole_mini_domain_equals_region_by_region(tmp_path: Path) -> None:
    """The whole mini grid computed at once equals its regions computed one by one."""
    grid = load_grid("mini")
    inputs = generate_inputs(grid, tmp_path, seed=0)
    full = (slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    whole = compute_window(grid, *full, inputs, PARAMS)
    assert whole is not None
    # The spread shows only where burn probability is 0: there are such pixels to spread into.
    assert (read_burn_probability(inputs.burn_probability, grid, *full) == 0).sum() > 1000
    stitched = _stitch(grid, inputs, PARAMS)
    for name in FLOATS:
        expected = getattr(whole, name)
        np.testing.assert_array_equal(np.isnan(stitched[name]), np.isnan(expected))
        np.testing.assert_allclose(stitched[name], expected, rtol=0, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(stitched[name], expected, rtol=FLOAT32_NOISE, atol=0, equal_nan=True)
    np.testing.assert_array_equal(stitched["score"], whole.score)
    land = np.isfinite(whole.risk)
    assert 0.3 < land.mean() < 0.9 and len(np.unique(whole.score[land])) >= 4

"""Computing regions: no seams between regions, datasets that fit the template."""

import numpy as np
import pytest
import xarray as xr

from risk_model import schema
from risk_model.compute import compute_region, compute_window, pixel_size_at
from risk_model.grid import GridSpec, region_of_chunk
from risk_model.inputs import InputSet
from risk_model.params import ModelParams
from risk_model.science import RiskArrays

PARAMS = ModelParams()
FLOATS = ("burn_probability", "conditional_risk", "risk")


def test_regions_stitch_into_the_whole_domain(small_grid: GridSpec, small_inputs: InputSet) -> None:
    """Every region computed with its halo equals one computation over the whole grid."""
    size = pixel_size_at(small_grid, 38.03, PARAMS)
    full = (slice(0, small_grid.shape[0]), slice(0, small_grid.shape[1]))
    whole = compute_window(small_grid, *full, small_inputs, PARAMS, pixel_size_m=size)
    assert whole is not None
    stitched = {name: np.full(small_grid.shape, np.nan) for name in FLOATS}
    stitched["score"] = np.full(small_grid.shape, schema.SCORE_NODATA, dtype=np.uint8)
    ny, nx = small_grid.chunk_counts
    for iy in range(ny):
        for ix in range(nx):
            region = region_of_chunk(small_grid, iy, ix)
            part = compute_window(small_grid, region.rows, region.cols, small_inputs, PARAMS, pixel_size_m=size)
            if part is None:  # all ocean
                continue
            for name in stitched:
                stitched[name][region.rows, region.cols] = getattr(part, name)
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
    assert (score[ocean] == schema.SCORE_NODATA).all() and (score[~ocean] <= 10).all()
    assert np.isnan(ds["risk"].values[ocean]).all() and (ds["risk"].values[~ocean] >= 0).all()


def test_all_ocean_region_is_the_empty_dataset(small_grid: GridSpec, small_inputs: InputSet) -> None:
    region = region_of_chunk(small_grid, 2, 0)
    ds = compute_region(small_grid, region, small_inputs, PARAMS)
    xr.testing.assert_identical(ds, schema.empty_region(small_grid, region.rows, region.cols))


def test_pixel_size_shrinks_east_west_with_latitude() -> None:
    grid = GridSpec(name="g", crs="EPSG:4326", transform=(0.001, 0, 0, 0, 0.001, 0), shape=(1, 1), chunks=(1, 1))
    dy0, dx0 = pixel_size_at(grid, 0.0, PARAMS)
    dy60, dx60 = pixel_size_at(grid, 60.0, PARAMS)
    assert dy0 == pytest.approx(111.195, abs=1e-3) and dx0 == pytest.approx(dy0)
    assert dy60 == dy0 and dx60 == pytest.approx(dy0 / 2)
    projected = GridSpec(name="p", crs="EPSG:5070", transform=(30.0, 0, 0, 0, 30.0, 0), shape=(1, 1), chunks=(1, 1))
    assert pixel_size_at(projected, 45.0, PARAMS) == (30.0, 30.0)


def test_compute_window_returns_cropped_arrays(small_grid: GridSpec, small_inputs: InputSet) -> None:
    out = compute_window(small_grid, slice(64, 128), slice(128, 160), small_inputs, PARAMS)
    assert isinstance(out, RiskArrays)
    assert out.burn_probability.shape == out.score.shape == (64, 32)

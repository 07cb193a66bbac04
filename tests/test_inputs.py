"""Reading input windows from real GeoTIFFs, and validating input sets."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as transform_points

from risk_model.grid import GridSpec
from risk_model.input_checks import validate_inputs
from risk_model.inputs import (
    InputError,
    InputSet,
    WindShareBands,
    read_burn_probability,
    read_wind_shares,
    read_window,
)
from risk_model.science import gap_fill
from risk_model.synthetic import generate_inputs

GRID = GridSpec(
    name="t", crs="EPSG:4326", transform=(0.001, 0.0, -120.0, 0.0, 0.001, 38.0), shape=(40, 50), chunks=(20, 25)
)
FULL = (slice(0, 40), slice(0, 50))


def write_tif(
    path: Path, data: np.ndarray, transform: Affine, crs: str, nodata: float | None = -9999.0, dtype: str = "float32"
) -> str:
    data = data if data.ndim == 3 else data[None]
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype))
    return str(path)


def on_grid_source(tmp_path: Path, margin: int = 5) -> tuple[str, np.ndarray]:
    """A north-up source on GRID's pixel grid, ``margin`` px larger on each side; distinct values."""
    h, w = 40 + 2 * margin, 50 + 2 * margin
    values = np.arange(h * w, dtype=np.float64).reshape(h, w)
    values[3, 4] = -9999.0
    transform = Affine(0.001, 0, -120.0 - margin * 0.001, 0, -0.001, 38.0 + (40 + margin) * 0.001)
    return write_tif(tmp_path / "ongrid.tif", values, transform, "EPSG:4326"), values


def test_on_grid_read_is_the_flipped_source(tmp_path: Path) -> None:
    path, values = on_grid_source(tmp_path, margin=5)
    out = read_window(path, GRID, *FULL, halo=5)
    assert out.dtype == np.float64 and out.shape == (50, 60)
    expected = values[::-1].copy()
    expected[expected == -9999.0] = np.nan
    np.testing.assert_array_equal(out, expected)
    assert np.isnan(out).sum() == 1  # the no-data pixel


def test_windowed_read_equals_full_read_sliced(tmp_path: Path) -> None:
    path, _ = on_grid_source(tmp_path, margin=5)
    full = read_window(path, GRID, *FULL, halo=3)
    part = read_window(path, GRID, slice(20, 40), slice(25, 50), halo=3)
    np.testing.assert_array_equal(part, full[20:46, 25:56])


def test_halo_beyond_the_source_is_nan(tmp_path: Path) -> None:
    path, _ = on_grid_source(tmp_path, margin=2)
    out = read_window(path, GRID, slice(0, 20), slice(0, 25), halo=4)
    assert np.isnan(out[:2]).all() and np.isnan(out[:, :2]).all()  # 2 px past the source
    assert np.isfinite(out[2:, 2:]).all()


def test_orientation_rows_run_north(tmp_path: Path) -> None:
    """A source whose value is the latitude comes out ascending, equal to the grid's latitudes."""
    lat = 38.0 + (np.arange(40)[::-1] + 0.5) * 0.001  # north-up rows
    values = np.repeat(lat[:, None], 50, axis=1)
    path = write_tif(
        tmp_path / "lat.tif", values, Affine(0.001, 0, -120.0, 0, -0.001, 38.04), "EPSG:4326", dtype="float64"
    )
    out = read_window(path, GRID, *FULL)
    assert np.all(np.diff(out[:, 0]) > 0)
    np.testing.assert_allclose(out[:, 7], GRID.latitude(), rtol=0, atol=1e-12)


def albers_source(tmp_path: Path, nodata_block: bool = True) -> tuple[str, Affine]:
    """A 270 m EPSG:5070 source covering GRID with a linear field of the projected coordinates."""
    lons, lats = [-120.05, -119.9, -120.05, -119.9], [37.95, 37.95, 38.09, 38.09]
    xs, ys = transform_points("EPSG:4326", "EPSG:5070", lons, lats)
    left, top = np.floor(min(xs) / 270) * 270, np.ceil(max(ys) / 270) * 270
    width, height = int(np.ceil((max(xs) - left) / 270)), int(np.ceil((top - min(ys)) / 270))
    transform = Affine(270.0, 0, left, 0, -270.0, top)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x, y = transform @ (cols, rows)
    values = 3.0 + 1e-5 * (x - left) + 2e-5 * (top - y)  # rises to the east and to the south
    if nodata_block:  # the pixels around the grid's north-west corner are missing
        ((cx, cy),) = zip(*transform_points("EPSG:4326", "EPSG:5070", [-120.0], [38.04]), strict=True)
        col, row = (int(v) for v in ~transform @ (cx, cy))
        values[row - 2 : row + 2, col - 2 : col + 2] = -9999.0
    return write_tif(tmp_path / "albers.tif", values, transform, "EPSG:5070", dtype="float64"), transform


def test_reprojection_of_a_5070_source(tmp_path: Path) -> None:
    path, transform = albers_source(tmp_path)
    out = read_window(path, GRID, *FULL, halo=0, resampling="bilinear")
    assert out.shape == (40, 50)
    lon, lat = np.meshgrid(GRID.longitude(), GRID.latitude())
    x, y = transform_points("EPSG:4326", "EPSG:5070", lon.ravel(), lat.ravel())
    expected = (3.0 + 1e-5 * (np.asarray(x) - transform.c) + 2e-5 * (transform.f - np.asarray(y))).reshape(40, 50)
    # Bilinear interpolation reproduces a linear field exactly, away from the missing block
    # (GDAL re-weights the valid neighbours of a missing pixel).
    far = np.ones(out.shape, dtype=bool)
    far[-12:, :12] = False
    assert np.isfinite(out[far]).all()
    np.testing.assert_allclose(out[far], expected[far], rtol=0, atol=1e-6)
    # The no-data block sits in the north-west: the last rows (north), first columns (west).
    assert np.isnan(out[-1, 0]) and np.isnan(out[-12:, :12]).sum() < 100
    # South is up in the field's slope, so the values fall along rows (as latitude rises).
    assert np.all(np.diff(out[:, -1]) < 0)


def test_windowed_reprojection_equals_full_reprojection_sliced(tmp_path: Path) -> None:
    path, _ = albers_source(tmp_path, nodata_block=False)
    full = read_window(path, GRID, *FULL, halo=2)
    part = read_window(path, GRID, slice(20, 40), slice(0, 25), halo=2)
    np.testing.assert_allclose(part, full[20:44, 0:29], rtol=0, atol=1e-12)


def test_wind_shares_are_renormalised(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shares = rng.random((8, 4, 4)) * 2  # sums far from 1
    path = write_tif(tmp_path / "wind.tif", shares, Affine(0.02, 0, -120.02, 0, -0.02, 38.06), "EPSG:4326")
    out = read_wind_shares(path, GRID, *FULL, halo=1)
    assert out.shape == (8, 42, 52)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-12)
    assert (out >= 0).all()


def test_wind_shares_need_eight_bands(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "wind3.tif", np.ones((3, 4, 4)), Affine(0.02, 0, -120.02, 0, -0.02, 38.06), "EPSG:4326")
    with pytest.raises(InputError, match=r"wind3\.tif has 3 band"):
        read_wind_shares(path, GRID, *FULL)
    with pytest.raises(InputError, match=r"wind3\.tif has 3 band"):
        WindShareBands(path, GRID, *FULL)
    with pytest.raises(InputError, match="cannot read"):
        WindShareBands(str(tmp_path / "nowhere.tif"), GRID, *FULL)


@pytest.mark.parametrize("on_grid", [False, True], ids=["warped", "on-grid"])
def test_wind_share_bands_one_at_a_time_are_the_shares_read_at_once(tmp_path: Path, on_grid: bool) -> None:
    """Band by band, the reader gives the pixels of ``read_wind_shares`` before renormalisation."""
    rng = np.random.default_rng(1)
    if on_grid:  # GRID's own pixels, north-up, 3 px larger on each side
        shares = rng.random((8, 46, 56)) * 2
        transform = Affine(0.001, 0, -120.003, 0, -0.001, 38.043)
    else:  # coarse pixels, warped
        shares = rng.random((8, 4, 4)) * 2
        transform = Affine(0.02, 0, -120.02, 0, -0.02, 38.06)
    shares[:, 1, 1] = -1.0  # a pixel without shares
    path = write_tif(tmp_path / "wind.tif", shares, transform, "EPSG:4326", nodata=-1.0)
    bands = WindShareBands(path, GRID, *FULL, halo=2)
    assert len(bands) == 8
    read = [bands[i] for i in range(8)]
    assert all(band.dtype == np.float32 and band.shape == (44, 54) for band in read)
    total = np.sum(read, axis=0, dtype=np.float64)
    assert np.isnan(total).any() and np.isfinite(total).any()
    at_once = read_wind_shares(path, GRID, *FULL, halo=2)
    for i in range(8):
        np.testing.assert_allclose(read[i] / total, at_once[i], rtol=1e-12, equal_nan=True)
    # float64 on request: the source's float32 values exactly.
    np.testing.assert_array_equal(WindShareBands(path, GRID, *FULL, halo=2, dtype="float64")[5], read[5])
    with pytest.raises(IndexError):
        bands[8]
    # No-data in one band only is NaN in that band (so the model treats the pixel as without
    # wind). GDAL's multi-band warp, which read_wind_shares uses, would instead copy the no-data
    # value (-1) into that band wherever another band has data.
    shares[2, 2, 2] = -1.0
    path = write_tif(tmp_path / "wind_hole.tif", shares, transform, "EPSG:4326", nodata=-1.0)
    holes = [np.isnan(WindShareBands(path, GRID, *FULL, halo=2)[i]) for i in range(8)]
    assert holes[2].sum() > holes[3].sum() and np.array_equal(holes[3], holes[0])


# validate_inputs, on real synthetic inputs with one file swapped for a broken one.


def test_synthetic_inputs_are_valid(small_grid: GridSpec, small_inputs: InputSet) -> None:
    validate_inputs(small_inputs, small_grid)


def _expect_error(inputs: InputSet, grid: GridSpec, bad_path: str, *fragments: str) -> None:
    with pytest.raises(InputError) as info:
        validate_inputs(inputs, grid)
    message = str(info.value)
    assert bad_path in message
    for fragment in fragments:
        assert fragment in message


def test_missing_file(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.tif")
    inputs = small_inputs.model_copy(update={"conditional_risk": missing})
    _expect_error(inputs, small_grid, missing, "cannot be opened", "exists")


def test_burn_probability_in_the_wrong_crs(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    with rasterio.open(small_inputs.conditional_risk) as src:
        data, transform = src.read(), src.transform
    wrong = write_tif(tmp_path / "bp_4326.tif", data, transform, "EPSG:4326")
    inputs = small_inputs.model_copy(update={"burn_probability": wrong})
    _expect_error(inputs, small_grid, wrong, "EPSG:5070", "reproject")


def test_conditional_risk_off_the_output_grid(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    with rasterio.open(small_inputs.conditional_risk) as src:
        data, t = src.read(), src.transform
    # Half-pixel shift: same CRS and pixel size, but not the output grid's pixels.
    shifted = write_tif(tmp_path / "cr_shift.tif", data, Affine(t.a, 0, t.c + t.a / 2, 0, t.e, t.f), "EPSG:4326")
    inputs = small_inputs.model_copy(update={"conditional_risk": shifted})
    _expect_error(inputs, small_grid, shifted, "not on the output grid")


def test_extent_that_does_not_cover_the_grid(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    with rasterio.open(small_inputs.conditional_risk) as src:
        data, t = src.read(), src.transform
    half = write_tif(tmp_path / "cr_half.tif", data[:, :, : data.shape[2] // 2], t, "EPSG:4326")
    inputs = small_inputs.model_copy(update={"conditional_risk": half})
    _expect_error(inputs, small_grid, half, "does not cover")


def test_wind_with_the_wrong_band_count(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    with rasterio.open(small_inputs.wind_direction) as src:
        data, t = src.read(), src.transform
    three = write_tif(tmp_path / "wind_3.tif", data[:3], t, "EPSG:4326")
    inputs = small_inputs.model_copy(update={"wind_direction": three})
    _expect_error(inputs, small_grid, three, "3 band", "expected 8")


# The synthetic inputs themselves.


def test_synthetic_inputs_are_deterministic_and_described(small_grid: GridSpec, tmp_path: Path) -> None:
    first = generate_inputs(small_grid, tmp_path / "a", seed=5)
    second = generate_inputs(small_grid, tmp_path / "b", seed=5)
    other = generate_inputs(small_grid, tmp_path / "c", seed=6)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["grid"] == "small"
    for role in ("burn_probability", "conditional_risk", "wind_direction"):
        a, b, c = (Path(getattr(s, role)).read_bytes() for s in (first, second, other))
        assert a == b and a != c
        assert manifest["files"][role]["sha256"] == hashlib.sha256(a).hexdigest()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_synthetic_inputs_have_realistic_structure(small_grid: GridSpec, small_inputs: InputSet) -> None:
    with rasterio.open(small_inputs.burn_probability) as src:
        assert src.crs.to_epsg() == 5070 and src.res == (270.0, 270.0)
        assert src.profile["tiled"] and src.compression is not None and src.nodata is not None
        bp = src.read(1, masked=True)
    assert bp.mask.any() and (~bp.mask).any()  # ocean and land
    land = bp.compressed()
    assert 0.0 < (land == 0).mean() < 0.4  # non-burnable patches
    assert land.max() <= 0.1 and land[land > 0].min() > 0
    with rasterio.open(small_inputs.wind_direction) as src:
        assert src.count == 8 and src.crs.to_epsg() == 4326
        shares = src.read().astype(np.float64)
    np.testing.assert_allclose(shares.sum(axis=0), 1.0, atol=1e-6)
    prevailing = shares.argmax(axis=0)
    assert len(np.unique(prevailing)) > 1  # the prevailing direction varies in space
    cr = read_window(small_inputs.conditional_risk, small_grid, slice(0, 192), slice(0, 192))
    finite = cr[np.isfinite(cr)]
    assert finite.min() >= 0 and finite.max() <= 100
    assert np.isnan(cr[:, :64]).all()  # the first chunk column is ocean


def coarse_bp_source(tmp_path: Path) -> str:
    """Burn probability on 0.009 degree pixels, each exactly 9 x 9 pixels of GRID (aligned).

    Source pixel (row, col) (north-up, from 38.054 N and 120.009 W) holds 0.02, except: (3, 3)
    an isolated non-burnable hole (0) with a 0.06 diagonal neighbour at (2, 2); (1, 1) and
    (1, 2) two adjacent non-burnable pixels (0, not isolated); (4, 5) an isolated missing pixel.
    """
    values = np.full((7, 8), 0.02)
    values[3, 3], values[2, 2] = 0.0, 0.06
    values[1, 1] = values[1, 2] = 0.0
    values[4, 5] = -9999.0
    return write_tif(tmp_path / "bp.tif", values, Affine(0.009, 0, -120.009, 0, -0.009, 38.054), "EPSG:4326")


def test_burn_probability_is_gap_filled_at_its_source_resolution_then_nearest(tmp_path: Path) -> None:
    """The reference: gap fill on the 270 m source, then nearest to 30 m, which keeps the 0 mask."""
    path = coarse_bp_source(tmp_path)
    out = read_burn_probability(path, GRID, *FULL)
    # The hole takes the 3 x 3 mean with its own 0 counted: (7 x 0.02 + 0.06 + 0) / 9; the missing
    # pixel the mean of its eight 0.02 neighbours; the two adjacent zeros stay 0.
    filled = np.full((7, 8), 0.02)
    filled[3, 3], filled[2, 2], filled[1, 1], filled[1, 2] = 0.2 / 9, 0.06, 0.0, 0.0
    # Nearest: output pixel (r, i) (south-up, centre 38.0 + (r + 0.5) / 1000 N) lies in source
    # row floor((53.5 - r) / 9) and column floor((9.5 + i) / 9).
    r, i = np.meshgrid(np.arange(40), np.arange(50), indexing="ij")
    expected = filled[((53.5 - r) // 9).astype(int), ((9.5 + i) // 9).astype(int)]
    np.testing.assert_allclose(out, expected, rtol=1e-7)  # float32 file
    assert (out[18:27, 18:27] == pytest.approx(0.2 / 9, rel=1e-7)) and np.isfinite(out).all()
    # The 0 mask survives nearest exactly: source row 1 holds rows 36-44 (36-39 in the grid).
    assert np.argwhere(out == 0).tolist() == [[r, i] for r in range(36, 40) for i in range(18)]
    # Filling on the 30 m grid instead (after resampling) fills nothing: a 9 x 9 block of
    # zeros has no pixel with four burning neighbours.
    unfilled = read_burn_probability(path, GRID, *FULL, gap_fill_window_px=None)
    assert (unfilled[18:27, 18:27] == 0).all()
    np.testing.assert_array_equal(gap_fill(unfilled)[18:27, 18:27], 0.0)
    # Bilinear would erase the mask: no exact zero is left next to burning pixels.
    assert (read_window(path, GRID, *FULL, resampling="bilinear") == 0).sum() < 72


def test_burn_probability_window_equals_full_read_sliced(tmp_path: Path) -> None:
    for path in (coarse_bp_source(tmp_path), albers_source(tmp_path)[0]):
        full = read_burn_probability(path, GRID, *FULL, halo=4)
        for rows, cols in ((slice(20, 40), slice(25, 50)), (slice(3, 17), slice(11, 29))):
            part = read_burn_probability(path, GRID, rows, cols, halo=4)
            expected = full[rows.start : rows.stop + 8, cols.start : cols.stop + 8]
            np.testing.assert_array_equal(part, expected)

"""Reading input windows from real GeoTIFFs, and validating input sets."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.warp import transform as transform_points

from risk_model import raster_windows
from risk_model.compute import compute_region
from risk_model.grid import GridSpec, load_grid, region_of_chunk
from risk_model.input_checks import validate_input, validate_inputs
from risk_model.input_set import InputError, InputSet
from risk_model.inputs import read_burn_probability, read_conditional_risk, read_window
from risk_model.params import ModelParams
from risk_model.raster_windows import on_grid, open_raster, reproject_to_grid
from risk_model.science import gap_fill
from risk_model.synthetic import FILENAMES, GENERATOR_VERSION, ensure_inputs, generate_inputs
from risk_model.wind_inputs import WindShareBands, read_wind_shares

GRID = GridSpec(
    name="t", crs="EPSG:4326", transform=(0.001, 0.0, -120.0, 0.0, 0.001, 38.0), shape=(40, 50), chunks=(20, 25)
)
FULL = (slice(0, 40), slice(0, 50))


def write_tif(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: str | None,
    nodata: float | None = -9999.0,
    dtype: str = "float32",
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


def test_native_conditional_risk_is_warped_by_nearest(small_grid: GridSpec, small_inputs: InputSet) -> None:
    """The 30 m EPSG:5070 raster, warped: each output pixel holds the source pixel under its centre."""
    region = region_of_chunk(small_grid, 1, 1)  # part ocean, part land
    out = read_conditional_risk(small_inputs.conditional_risk, small_grid, region.rows, region.cols, halo=3)
    rows = slice(region.rows.start - 3, region.rows.stop + 3)
    cols = slice(region.cols.start - 3, region.cols.stop + 3)
    lon, lat = np.meshgrid(small_grid.longitude()[cols], small_grid.latitude()[rows])
    with rasterio.open(small_inputs.conditional_risk) as src:
        source = src.read(1, masked=True).filled(np.nan).astype(np.float64)
        x, y = transform_points(small_grid.crs, src.crs, lon.ravel(), lat.ravel())
        col, row = ~src.transform @ (np.asarray(x), np.asarray(y))
    expected = source[np.floor(row).astype(int), np.floor(col).astype(int)].reshape(out.shape)
    np.testing.assert_array_equal(out, expected)
    assert np.isnan(out).any() and np.isfinite(out).mean() > 0.2  # the coast crosses this region


def test_regions_of_a_native_source_equal_one_whole_domain_read(small_grid: GridSpec, small_inputs: InputSet) -> None:
    """What keeps regions seam-free: a pixel's warped value does not depend on the window it is read in."""
    halo = 9
    full = (slice(0, small_grid.shape[0]), slice(0, small_grid.shape[1]))
    readers = {
        "conditional_risk": read_conditional_risk,
        "burn_probability": read_burn_probability,
        "wind_direction": read_wind_shares,
    }
    for role, read in readers.items():
        path = getattr(small_inputs, role)
        whole = read(path, small_grid, *full, halo=halo)
        ny, nx = small_grid.chunk_counts
        for iy in range(ny):
            for ix in range(nx):
                region = region_of_chunk(small_grid, iy, ix)
                part = read(path, small_grid, region.rows, region.cols, halo=halo)
                inner = (
                    slice(region.rows.start, region.rows.stop + 2 * halo),
                    slice(region.cols.start, region.cols.stop + 2 * halo),
                )
                np.testing.assert_array_equal(part, whole[(..., *inner)], err_msg=f"{role} {region.id}")


def test_the_demo_path_reads_native_inputs(tmp_path: Path) -> None:
    """What `make demo` does with no RISK_INPUTS: generate the synthetic inputs, check them, compute."""
    grid = load_grid("mini")
    inputs = ensure_inputs(grid, tmp_path / "inputs")
    manifest = json.loads((tmp_path / "inputs" / "manifest.json").read_text())
    assert manifest["generator_version"] == GENERATOR_VERSION >= 2
    assert Path(inputs.conditional_risk).name == FILENAMES["conditional_risk"] == "conditional_risk_30m_5070.tif"
    for role, (epsg, pixel) in {"burn_probability": (5070, 270.0), "conditional_risk": (5070, 30.0)}.items():
        with rasterio.open(getattr(inputs, role)) as src:
            assert (src.crs.to_epsg(), src.res) == (epsg, (pixel, pixel)) and not on_grid(src, grid)
    validate_inputs(inputs, grid)
    region = region_of_chunk(grid, 1, 3)
    ds = compute_region(grid, region, inputs, ModelParams())
    assert np.isfinite(ds["conditional_risk"].values).mean() > 0.9 and np.isfinite(ds["risk"].values).any()


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
    # wind), in both readers. A single multi-band GDAL warp (with rasterio's
    # UNIFIED_SRC_NODATA=YES) would instead copy the no-data value (-1) into that band wherever
    # another band has data: each band is warped on its own.
    shares[2, 2, 2] = -1.0
    path = write_tif(tmp_path / "wind_hole.tif", shares, transform, "EPSG:4326", nodata=-1.0)
    holes = [np.isnan(WindShareBands(path, GRID, *FULL, halo=2)[i]) for i in range(8)]
    assert holes[2].sum() > holes[3].sum() and np.array_equal(holes[3], holes[0])
    at_once = read_wind_shares(path, GRID, *FULL, halo=2)
    assert np.array_equal(np.isnan(at_once[2]), holes[2]) and not (at_once == -1.0).any()


def write_vrt(path: Path, tif: str, nodata: list[float]) -> str:
    """A VRT over the bands of ``tif`` (which declares no no-data) with one no-data value per band."""
    with rasterio.open(tif) as src:
        gt = ", ".join(repr(v) for v in src.transform.to_gdal())
        wkt, width, height = src.crs.to_wkt(), src.width, src.height
    bands = "".join(
        f'<VRTRasterBand dataType="Float32" band="{i}"><NoDataValue>{value!r}</NoDataValue>'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{tif}</SourceFilename><SourceBand>{i}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for i, value in enumerate(nodata, start=1)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{wkt}</SRS>'
        f"<GeoTransform>{gt}</GeoTransform>{bands}</VRTDataset>"
    )
    return str(path)


@pytest.mark.parametrize("aligned", [False, True], ids=["warped", "on-grid"])
def test_each_band_is_masked_by_its_own_nodata(tmp_path: Path, aligned: bool) -> None:
    """A source whose bands declare different no-data values: each value masks its own band only.

    Band 1 marks no-data with -1, band 2 with -2 (and holds -1 as a value). Before each band was
    warped on its own, a warp masked every band with band 1's value: band 2's -2 came out as data
    and its -1 as no-data.
    """
    rng = np.random.default_rng(3)
    if aligned:
        values = rng.random((8, 46, 56))
        transform = Affine(0.001, 0, -120.003, 0, -0.001, 38.043)
    else:
        values = rng.random((8, 4, 4))
        transform = Affine(0.02, 0, -120.02, 0, -0.02, 38.06)
    values[0, 1, 1] = -1.0  # band 1: no-data
    values[1, 1, 1] = -1.0  # band 2: a value
    values[1, 2, 2] = -2.0  # band 2: no-data
    tif = write_tif(tmp_path / "bands.tif", values, transform, "EPSG:4326", nodata=None)
    path = write_vrt(tmp_path / "bands.vrt", tif, [-1.0, -2.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0])
    with rasterio.open(path) as src:
        assert src.nodatavals[:2] == (-1.0, -2.0) and on_grid(src, GRID) == aligned
    out = read_window(path, GRID, *FULL, halo=2)
    assert not np.isin(out, [-2.0]).any()  # every band-2 no-data pixel is NaN
    assert not np.isnan(out[0]).all() and np.isnan(out[0]).any()
    assert np.isnan(out[1]).any() and (out[1] == np.float32(-1.0)).any()  # -1 is data in band 2
    assert not (out[0] == -1.0).any()
    # Band 2's holes are where its own -2 lies, not where band 1's -1 does.
    assert not np.array_equal(np.isnan(out[0]), np.isnan(out[1]))
    # The one-band-at-a-time reader (nearest: gathered through one warped pixel mapping) agrees.
    bands = WindShareBands(path, GRID, *FULL, halo=2, dtype="float64")
    for i in range(2):
        np.testing.assert_array_equal(bands[i], out[i])


def test_nearest_gather_gives_the_pixels_of_a_per_band_warp(tmp_path: Path) -> None:
    """WindShareBands' nearest gather equals GDAL's nearest warp of each band, no-data and edges included."""
    rng = np.random.default_rng(4)
    shares = rng.random((8, 4, 5))
    shares[3, 1, 2] = -1.0  # a hole in one band
    shares[:, 0, 0] = -1.0  # a pixel without shares
    # A source that ends at 38.006 N: the window (from 37.997 N) reaches past its southern edge.
    transform = Affine(0.013, 0, -120.007, 0, -0.009, 38.042)
    path = write_tif(tmp_path / "wind.tif", shares, transform, "EPSG:4326", nodata=-1.0)
    bands = WindShareBands(path, GRID, *FULL, halo=3)
    rows, cols = slice(-3, 43), slice(-3, 53)
    with open_raster(path) as src:
        assert not on_grid(src, GRID)
        for i in range(8):
            warped = reproject_to_grid(src, GRID, rows, cols, "nearest", indexes=[i + 1], dtype="float32")[0]
            np.testing.assert_array_equal(bands[i], warped)
            assert bands[i].flags.c_contiguous
    assert np.isnan(bands[3]).sum() > np.isnan(bands[0]).sum() > 0
    assert np.isnan(bands[0][:8]).all() and np.isfinite(bands[0][10:]).any()  # south of the source


def test_a_window_warped_in_strips_equals_one_whole_window_warp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strips (here of 7 rows) give exactly the pixels of one reproject call over the window."""
    path, _ = albers_source(tmp_path)
    monkeypatch.setattr(raster_windows, "_WARP_STRIP_ROWS", 7)
    for resampling in ("nearest", "bilinear"):
        out = read_window(path, GRID, *FULL, halo=1, resampling=resampling, dtype="float32")
        assert out.dtype == np.float32 and out.flags.c_contiguous
        west, _, _, north = GRID.bounds(slice(-1, 41), slice(-1, 51))
        whole = np.full((42, 52), np.nan, dtype=np.float32)
        with rasterio.open(path) as src:
            reproject(
                source=rasterio.band(src, 1),
                destination=whole,
                src_nodata=src.nodata,
                dst_transform=Affine(0.001, 0, west, 0, -0.001, north),
                dst_crs=GRID.crs,
                dst_nodata=np.nan,
                resampling=Resampling[resampling],
                tolerance=0.0,
            )
        np.testing.assert_array_equal(out, whole[::-1])
        assert np.isnan(out).any() and np.isfinite(out).any()


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


def _copy_as(source: str, target: Path, data: np.ndarray | None = None, **profile: object) -> str:
    """A copy of ``source`` with some of its profile (and optionally its data) replaced."""
    with rasterio.open(source) as src:
        merged = src.profile | profile
        values = src.read() if data is None else data
    with rasterio.open(target, "w", **merged) as dst:
        dst.write(values.astype(merged["dtype"]))
    return str(target)


def _warped_copy(source: str, target: Path, crs: str, pixel: float) -> str:
    """``source`` warped (nearest) onto a north-up ``pixel`` lattice in ``crs`` covering it."""
    from rasterio.warp import calculate_default_transform

    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds, resolution=pixel
        )
        out = np.full((src.count, height, width), src.nodata, dtype=src.dtypes[0])
        reproject(
            rasterio.band(src, list(range(1, src.count + 1))),
            out,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=src.nodata,
            resampling=Resampling.nearest,
        )
        profile = src.profile | {"crs": crs, "transform": transform, "width": width, "height": height}
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(out)
    return str(target)


def test_burn_probability_in_another_projected_crs_works(
    small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path
) -> None:
    """EPSG:5070 is what the USFS publishes, not a requirement: California Albers (EPSG:3310) works."""
    other = _warped_copy(small_inputs.burn_probability, tmp_path / "bp_3310.tif", "EPSG:3310", 250.0)
    inputs = small_inputs.model_copy(update={"burn_probability": other})
    validate_inputs(inputs, small_grid)
    full = (slice(0, small_grid.shape[0]), slice(0, small_grid.shape[1]))
    native = read_burn_probability(small_inputs.burn_probability, small_grid, *full)
    moved = read_burn_probability(other, small_grid, *full)
    # Two nearest warps move the coast by up to a source pixel; elsewhere the same field.
    assert np.isfinite(moved).mean() == pytest.approx(np.isfinite(native).mean(), abs=0.05)
    both = np.isfinite(moved) & np.isfinite(native) & (native > 0)
    assert np.corrcoef(moved[both], native[both])[0, 1] > 0.9
    # And seam-free: a region read on its own equals the same pixels of the whole-domain read.
    region = region_of_chunk(small_grid, 1, 2)
    part = read_burn_probability(other, small_grid, region.rows, region.cols, halo=7)
    whole = read_burn_probability(other, small_grid, *full, halo=7)
    np.testing.assert_array_equal(
        part, whole[region.rows.start : region.rows.stop + 14, region.cols.start : region.cols.stop + 14]
    )


def test_conditional_risk_off_the_output_grid_is_warped(
    small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path
) -> None:
    """Once refused ("not on the output grid"): the output grid's CRS and pixel size, shifted half a pixel."""
    full = (slice(0, small_grid.shape[0]), slice(0, small_grid.shape[1]))
    values = read_conditional_risk(small_inputs.conditional_risk, small_grid, *full, halo=4)[::-1]  # north-up
    a, _, c, _, e, f = small_grid.transform
    shifted = Affine(a, 0, c - 4 * a + a / 2, 0, -e, f + (small_grid.shape[0] + 4) * e)
    path = write_tif(tmp_path / "cr_shift.tif", np.where(np.isnan(values), -9999.0, values), shifted, "EPSG:4326")
    validate_input("conditional_risk", path, small_grid)
    with rasterio.open(path) as src:
        assert not on_grid(src, small_grid)
    out = read_conditional_risk(path, small_grid, *full)
    # Nearest from half a pixel east: each pixel takes its eastern or its own neighbour's value.
    own = values[::-1][4:-4, 4:-4]
    east = values[::-1][4:-4, 5:-3]
    assert np.all((out == own) | (out == east) | (np.isnan(out) & (np.isnan(own) | np.isnan(east))))


def test_a_mislabelled_crs_is_refused(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    """Metres labelled as degrees would 'cover' the globe: the label is refused, not the coverage."""
    wrong = _copy_as(small_inputs.burn_probability, tmp_path / "bp_labelled_4326.tif", crs="EPSG:4326")
    inputs = small_inputs.model_copy(update={"burn_probability": wrong})
    _expect_error(inputs, small_grid, wrong, "geographic CRS (degrees)", "CRS label is wrong", "gdal_edit.py -a_srs")
    # And degrees labelled as a projected CRS.
    degrees = _copy_as(small_inputs.wind_direction, tmp_path / "wind_labelled_5070.tif", crs="EPSG:5070")
    inputs = small_inputs.model_copy(update={"wind_direction": degrees})
    _expect_error(inputs, small_grid, degrees, "a projected CRS", "look like longitudes and latitudes", "EPSG:4326")


def test_a_raster_without_a_crs_is_refused(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    with rasterio.open(small_inputs.conditional_risk) as src:
        data, transform = src.read(), src.transform
    bare = write_tif(tmp_path / "cr_no_crs.tif", data, transform, None)
    inputs = small_inputs.model_copy(update={"conditional_risk": bare})
    _expect_error(inputs, small_grid, bare, "has no CRS", "gdal_edit.py -a_srs")


@pytest.mark.parametrize(
    ("role", "dtype", "words"),
    [
        pytest.param("burn_probability", "uint8", ["is uint8", "integer type cannot hold", "float32"], id="bp-uint8"),
        pytest.param("wind_direction", "int16", ["is int16", "integer type cannot hold"], id="wind-int16"),
        pytest.param("conditional_risk", "complex64", ["is complex64", "not a real number type"], id="cr-complex"),
    ],
)
def test_a_data_type_that_cannot_hold_the_values_is_refused(
    small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path, role: str, dtype: str, words: list[str]
) -> None:
    bad = _copy_as(getattr(small_inputs, role), tmp_path / f"{role}_{dtype}.tif", dtype=dtype, nodata=None)
    _expect_error(small_inputs.model_copy(update={role: bad}), small_grid, bad, *words)


def test_integer_conditional_risk_is_accepted(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    """0-100 fits an integer type: the USFS could as well publish it as int16."""
    with rasterio.open(small_inputs.conditional_risk) as src:
        data = np.where(src.read() == src.nodata, -1, np.round(src.read()))
    ints = _copy_as(small_inputs.conditional_risk, tmp_path / "cr_int16.tif", data, dtype="int16", nodata=-1)
    validate_input("conditional_risk", ints, small_grid)
    region = region_of_chunk(small_grid, 1, 1)
    values = read_conditional_risk(ints, small_grid, region.rows, region.cols)
    finite = values[np.isfinite(values)]
    assert finite.size and np.array_equal(finite, np.round(finite)) and np.isnan(values).any()


def test_a_scale_the_model_would_not_apply_is_refused(
    small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path
) -> None:
    scaled = _copy_as(small_inputs.conditional_risk, tmp_path / "cr_scaled.tif")
    with rasterio.open(scaled, "r+") as dst:
        dst.scales = (0.01,)
    _expect_error(small_inputs.model_copy(update={"conditional_risk": scaled}), small_grid, scaled, "scale", "-unscale")


def test_a_nodata_value_inside_the_valid_range_is_refused(
    small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path
) -> None:
    zero = _copy_as(small_inputs.burn_probability, tmp_path / "bp_nodata0.tif", nodata=0.0)
    inputs = small_inputs.model_copy(update={"burn_probability": zero})
    _expect_error(inputs, small_grid, zero, "no-data 0", "non-burnable", "gdal_edit.py -a_nodata")


def test_an_undeclared_fill_value_is_named(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    bare = _copy_as(small_inputs.conditional_risk, tmp_path / "cr_no_nodata.tif", nodata=None)
    inputs = small_inputs.model_copy(update={"conditional_risk": bare})
    _expect_error(inputs, small_grid, bare, "outside 0 to 100", "declares no no-data value", "-a_nodata -9999")


def test_extent_that_does_not_cover_the_grid(small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path) -> None:
    with rasterio.open(small_inputs.conditional_risk) as src:
        data, t, crs = src.read(), src.transform, src.crs
    half = write_tif(tmp_path / "cr_half.tif", data[:, :, : data.shape[2] // 2], t, crs.to_string())
    inputs = small_inputs.model_copy(update={"conditional_risk": half})
    _expect_error(inputs, small_grid, half, "does not cover", "EPSG:5070")


def test_conditional_risk_with_two_bands_is_refused(
    small_grid: GridSpec, small_inputs: InputSet, tmp_path: Path
) -> None:
    with rasterio.open(small_inputs.conditional_risk) as src:
        data, t = src.read(), src.transform
    two = write_tif(tmp_path / "cr_2.tif", np.concatenate([data, data]), t, "EPSG:5070")
    inputs = small_inputs.model_copy(update={"conditional_risk": two})
    _expect_error(inputs, small_grid, two, "2 band(s), expected 1")
    with pytest.raises(InputError, match=r"cr_2\.tif has 2 bands, expected 1"):
        read_conditional_risk(two, small_grid, slice(0, 64), slice(0, 64))


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
    with rasterio.open(small_inputs.conditional_risk) as src:
        # The USFS product's native form: 30 m EPSG:5070, its own lattice, not the output grid.
        assert src.crs.to_epsg() == 5070 and src.res == (30.0, 30.0) and not on_grid(src, small_grid)
        assert src.profile["tiled"] and src.nodata == -9999.0
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

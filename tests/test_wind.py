"""The wind shares from hourly weather: FFWI, the percentile, the histogram, the synthetic cube.

Small hand-checked cases first (a few pixels and hours whose selected hours and histogram can
be worked out on paper), then the synthetic cube against a straightforward numpy loop.
"""

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from risk_model.grid import load_grid
from risk_model.input_set import InputError, InputSet
from risk_model.synthetic_wind import CONUS404_PROJ, generate_hourly_cube, hourly_cube
from risk_model.wind import (
    DIRECTIONS,
    HourlyDatasetError,
    direction_sector,
    equilibrium_moisture_content,
    fire_weather_wind_shares,
    fosberg_ffwi,
    relative_humidity,
    saturation_vapour_pressure,
    shares_version,
)
from risk_model.wind_files import (
    check_hourly_dataset,
    check_shares_current,
    open_hourly,
    read_shares_version,
    write_shares_geotiff,
)
from risk_model.wind_inputs import read_wind_shares


def _da(values: list[float] | float) -> xr.DataArray:
    return xr.DataArray(np.asarray(values, dtype=np.float64))


def _f_to_k(f: float) -> float:
    return (f - 32.0) * 5.0 / 9.0 + 273.15


def test_saturation_vapour_pressure_at_freezing_is_611_pa() -> None:
    assert float(saturation_vapour_pressure(_da(273.15))) == pytest.approx(611.2, abs=0.2)


def test_relative_humidity_is_100_at_the_dew_point_and_capped_above() -> None:
    rh = relative_humidity(_da([300.0, 300.0]), _da([300.0, 300.2]))
    assert rh.values.tolist() == [100.0, 100.0]
    # Dew point 10 K below 30 C: about 55 % (psychrometric tables give 55 %).
    assert float(relative_humidity(_da(303.15), _da(293.15))) == pytest.approx(55.1, abs=0.5)


def test_equilibrium_moisture_content_branches_by_hand() -> None:
    # Simard (1968): the three branches at 5, 30 and 70 % and 80 F.
    emc = equilibrium_moisture_content(_da([5.0, 30.0, 70.0]), _da(80.0)).values
    assert emc[0] == pytest.approx(0.03229 + 0.281073 * 5 - 0.000578 * 5 * 80)
    assert emc[1] == pytest.approx(2.22749 + 0.160107 * 30 - 0.01478 * 80)
    assert emc[2] == pytest.approx(21.0606 + 0.005565 * 70**2 - 0.00035 * 70 * 80 - 0.483199 * 70)


def test_ffwi_matches_the_published_formula() -> None:
    """Fosberg (1978): FFWI = eta sqrt(1 + U^2) / 0.3002, U in mph; 100 at m = 0 and 30 mph."""
    # 90 F, 15 % humidity, 20 mph, worked by hand from the published equations:
    # m = 2.22749 + 0.160107*15 - 0.01478*90 = 3.298895; m/30 = 0.1099632
    # eta = 1 - 0.2199263 + 0.0181379 - 0.0006648 = 0.7975468
    # FFWI = 0.7975468 * sqrt(401) / 0.3002 = 53.201
    mph = 1609.344 / 3600.0
    value = float(fosberg_ffwi(_da(_f_to_k(90.0)), _da(15.0), _da(20.0 * mph)))
    assert value == pytest.approx(53.201, abs=0.01)
    # The scaling: at humidity 0 the moisture content is 0.03229 % (almost 0), so 30 mph gives
    # almost exactly 100 (eta = 0.99785): 99.77.
    top = float(fosberg_ffwi(_da(_f_to_k(80.0)), _da(0.0), _da(30.0 * mph)))
    m = 0.03229 / 30
    assert top == pytest.approx((1 - 2 * m + 1.5 * m**2 - 0.5 * m**3) * math.sqrt(901) / 0.3002, rel=1e-9)
    assert 99.7 < top < 100.0


def test_sectors_follow_the_reference_classification() -> None:
    degrees = _da([0.0, 22.4, 22.5, 67.5, 180.0, 292.5, 337.4, 337.5, 359.9])
    assert direction_sector(degrees).values.tolist() == [0, 0, 1, 2, 4, 7, 7, 0, 0]


def _cube(t2: np.ndarray, td2: np.ndarray, u10: np.ndarray, v10: np.ndarray) -> xr.Dataset:
    """A hand-made dataset of ``(time, y, x)`` arrays, grid-aligned with earth north (alpha = 0)."""
    _, ny, nx = t2.shape
    zeros = np.zeros((ny, nx))
    return xr.Dataset(
        {
            "T2": (("time", "y", "x"), t2),
            "TD2": (("time", "y", "x"), td2),
            "U10": (("time", "y", "x"), u10),
            "V10": (("time", "y", "x"), v10),
            "SINALPHA": (("y", "x"), zeros),
            "COSALPHA": (("y", "x"), zeros + 1.0),
            "crs": ((), 0, {"crs_wkt": rasterio.crs.CRS.from_proj4(CONUS404_PROJ).to_wkt()}),
        },
        coords={"y": np.arange(ny) * 4000.0, "x": np.arange(nx) * 4000.0},
    )


def _from(direction_deg: float, speed: float) -> tuple[float, float]:
    rad = math.radians(direction_deg)
    return -speed * math.sin(rad), -speed * math.cos(rad)


def test_hand_checked_pixel_selects_the_top_hours_and_counts_their_directions() -> None:
    """One pixel, 5 hours, same humidity: FFWI rises with wind speed, so the speeds rank the hours.

    Speeds 1, 2, 3, 4, 5 m/s; the 60th percentile (linear) of the 5 FFWI values sits 40 % of
    the way from the 3rd to the 4th, so hours 4 and 5 are selected: from E (4 m/s) and from
    SW (5 m/s). Shares: E 0.5, SW 0.5.
    """
    directions = [0.0, 0.0, 0.0, 90.0, 225.0]
    speeds = [1.0, 2.0, 3.0, 4.0, 5.0]
    uv = [_from(d, s) for d, s in zip(directions, speeds, strict=True)]
    shape = (5, 1, 1)
    t2 = np.full(shape, 305.0)
    ds = _cube(t2, t2 - 20.0, np.array([u for u, _ in uv]).reshape(shape), np.array([v for _, v in uv]).reshape(shape))
    shares = fire_weather_wind_shares(ds, percentile=60.0)
    expected = dict.fromkeys(DIRECTIONS, 0.0) | {"E": 0.5, "SW": 0.5}
    assert shares.sel(y=0.0, x=0.0).values.tolist() == [expected[d] for d in DIRECTIONS]


def test_ties_at_the_threshold_are_all_selected_and_an_all_nan_pixel_is_nan() -> None:
    """Pixel 0: constant weather, so every hour ties at the 99th percentile: all 4 hours count
    (from N twice, from W twice: N 0.5, W 0.5). Pixel 1: no valid hour (NaN temperature): NaN
    shares. Pixel 2: the only hours at the threshold are calm: no direction, NaN shares."""
    t2 = np.full((4, 1, 3), 300.0)
    td2 = t2 - 15.0
    u10 = np.zeros((4, 1, 3))
    v10 = np.zeros((4, 1, 3))
    for hour, d in enumerate([0.0, 270.0, 0.0, 270.0]):
        u10[hour, 0, 0], v10[hour, 0, 0] = _from(d, 6.0)
    t2[:, 0, 1] = np.nan
    u10[:, 0, 2], v10[:, 0, 2] = _from(90.0, 0.2)  # calm, below 0.5 m/s
    shares = fire_weather_wind_shares(_cube(t2, td2, u10, v10), percentile=99.0)
    first = dict(zip(DIRECTIONS, shares.isel(y=0, x=0).values.tolist(), strict=True))
    assert first == dict.fromkeys(DIRECTIONS, 0.0) | {"N": 0.5, "W": 0.5}
    assert np.isnan(shares.isel(y=0, x=1).values).all()
    assert np.isnan(shares.isel(y=0, x=2).values).all()


def test_grid_relative_winds_are_rotated_to_earth() -> None:
    """A wind from grid north on a grid turned by alpha = 90 degrees is a wind from the west.

    With alpha = 90 deg, earth_u = -V10 and earth_v = U10. A grid wind U10 = 0, V10 = -5 (from
    grid north) is earth (5, 0): blowing east, so from the west.
    """
    t2 = np.full((1, 1, 1), 305.0)
    ds = _cube(t2, t2 - 25.0, np.zeros((1, 1, 1)), np.full((1, 1, 1), -5.0))
    ds["SINALPHA"][:] = 1.0
    ds["COSALPHA"][:] = 0.0
    shares = fire_weather_wind_shares(ds)
    assert shares.sel(direction="W").item() == 1.0


def test_bad_percentile_and_missing_variables_are_refused() -> None:
    t2 = np.full((2, 1, 1), 300.0)
    ds = _cube(t2, t2, t2 * 0, t2 * 0)
    with pytest.raises(ValueError, match="percentile"):
        fire_weather_wind_shares(ds, percentile=0.0)
    with pytest.raises(HourlyDatasetError, match="TD2"):
        fire_weather_wind_shares(ds.drop_vars("TD2"))


def _numpy_shares(ds: xr.Dataset, percentile: float) -> np.ndarray:
    """The shares by a straightforward per-pixel loop in numpy, independent of the module."""
    t = ds["T2"].values.astype(np.float64)
    td = ds["TD2"].values.astype(np.float64)
    u, v = ds["U10"].values.astype(np.float64), ds["V10"].values.astype(np.float64)
    sin, cos = ds["SINALPHA"].values.astype(np.float64), ds["COSALPHA"].values.astype(np.float64)
    _, ny, nx = t.shape
    out = np.full((8, ny, nx), np.nan)

    def esat(k: np.ndarray) -> np.ndarray:
        return np.asarray(
            100 * np.exp(-6096.9385 / k + 16.635794 - 2.711193e-2 * k + 1.673952e-5 * k**2 + 2.433502 * np.log(k))
        )

    for j in range(ny):
        for i in range(nx):
            ue = u[:, j, i] * cos[j, i] - v[:, j, i] * sin[j, i]
            ve = v[:, j, i] * cos[j, i] + u[:, j, i] * sin[j, i]
            speed = np.sqrt(ue**2 + ve**2)
            h = np.minimum(100 * esat(td[:, j, i]) / esat(t[:, j, i]), 100)
            f = (t[:, j, i] - 273.15) * 1.8 + 32
            m = (
                np.where(
                    h < 10,
                    0.03229 + 0.281073 * h - 0.000578 * h * f,
                    np.where(
                        h < 50,
                        2.22749 + 0.160107 * h - 0.01478 * f,
                        21.0606 + 0.005565 * h**2 - 0.00035 * h * f - 0.483199 * h,
                    ),
                )
                / 30
            )
            ffwi = (1 - 2 * m + 1.5 * m**2 - 0.5 * m**3) * np.sqrt(1 + (speed * 3600 / 1609.344) ** 2) / 0.3002
            chosen = (ffwi >= np.nanquantile(ffwi, percentile / 100)) & (speed >= 0.5)
            bearing = np.degrees(np.arctan2(-ue[chosen], -ve[chosen])) % 360
            counts = np.bincount((((bearing + 22.5) % 360) // 45).astype(int) % 8, minlength=8)
            if counts.sum():
                out[:, j, i] = counts / counts.sum()
    return out


def test_synthetic_cube_shares_equal_a_straightforward_numpy_computation(tmp_path: Path) -> None:
    grid = load_grid("demo")
    path = tmp_path / "cube.nc"
    generate_hourly_cube(grid, path, hours=240)
    with open_hourly(str(path)) as ds:
        # Odd blocks: the computation is cut in pieces that do not divide the grid.
        shares = fire_weather_wind_shares(ds, percentile=97.0, block=(7, 5))
        expected = _numpy_shares(ds.load(), 97.0)
    np.testing.assert_allclose(shares.values, expected, rtol=0, atol=1e-12)
    assert not np.isnan(expected).all()
    # Non-trivial: the prevailing direction turns from NW at the coast to NE inland.
    west = shares.isel(x=slice(0, 8)).mean(("y", "x"))
    east = shares.isel(x=slice(-8, None)).mean(("y", "x"))
    assert west.sel(direction="NW") > west.sel(direction="NE")
    assert east.sel(direction="NE") > east.sel(direction="NW")


def test_synthetic_cube_is_deterministic_and_in_conus404_form(tmp_path: Path) -> None:
    grid = load_grid("demo")
    first, second = tmp_path / "a.nc", tmp_path / "b.nc"
    assert generate_hourly_cube(grid, first) == generate_hourly_cube(grid, second)
    assert hashlib.sha256(first.read_bytes()).hexdigest() == hashlib.sha256(second.read_bytes()).hexdigest()
    assert generate_hourly_cube(grid, tmp_path / "c.nc", seed=1) != generate_hourly_cube(grid, first)
    check_hourly_dataset(str(first), grid)
    with open_hourly(str(first)) as ds:
        assert ds.sizes["time"] >= 200
        assert float(ds["x"][1] - ds["x"][0]) == 4000.0
        assert float(ds["x"][0]) % 4000.0 == 0.0  # on CONUS404's lattice
        assert ds["lat"].dims == ("y", "x")
        assert ds["crs"].attrs["grid_mapping_name"] == "lambert_conformal_conic"


def test_a_dataset_not_covering_the_grid_is_refused(tmp_path: Path) -> None:
    grid = load_grid("demo")
    cube = hourly_cube(grid, hours=72).isel(x=slice(0, 10))
    cube.to_netcdf(tmp_path / "small.nc", engine="scipy")
    with pytest.raises(HourlyDatasetError, match="does not cover grid 'demo'"):
        check_hourly_dataset(str(tmp_path / "small.nc"), grid)


def test_geotiff_round_trip_through_the_warping_reader(tmp_path: Path) -> None:
    """The shares GeoTIFF on its 4 km LCC grid reads back through read_wind_shares (nearest)."""
    grid = load_grid("demo")
    cube = tmp_path / "cube.nc"
    generate_hourly_cube(grid, cube, hours=120)
    with open_hourly(str(cube)) as ds:
        shares = fire_weather_wind_shares(ds)
    path = tmp_path / "shares.tif"
    version = shares_version("sha256:abc", 99.0)
    write_shares_geotiff(shares, path, version=version, tags={})
    assert read_shares_version(str(path)) == version
    check_shares_current(str(path), version)
    with pytest.raises(InputError, match="materialize the wind_shares asset"):
        check_shares_current(str(path), shares_version("sha256:other", 99.0))
    with rasterio.open(path) as src:
        assert src.count == 8 and src.crs == rasterio.crs.CRS.from_proj4(CONUS404_PROJ)
        assert src.res == (4000.0, 4000.0)
    read = read_wind_shares(str(path), grid, slice(0, 256), slice(1024, 1280))
    assert read.shape == (8, 256, 256)
    np.testing.assert_allclose(read.sum(axis=0), 1.0, atol=1e-6)


def test_input_set_takes_exactly_one_wind_input() -> None:
    base = {"burn_probability": "bp.tif", "conditional_risk": "cr.tif"}
    with pytest.raises(ValueError, match="exactly one wind input, got neither"):
        InputSet.model_validate(base)
    with pytest.raises(ValueError, match="got both"):
        InputSet.model_validate(base | {"wind_direction": "w.tif", "wind_hourly": "h.nc"})
    ready = InputSet.model_validate(base | {"wind_direction": "w.tif"})
    assert ready.model_dump() == base | {"wind_direction": "w.tif"}, "dumped as before: no wind_hourly key"
    hourly = InputSet.model_validate(base | {"wind_hourly": "h.nc"})
    assert hourly.roles == ("burn_probability", "conditional_risk", "wind_hourly")
    assert hourly.with_wind_shares("s.tif").wind_shares() == "s.tif"
    with pytest.raises(InputError, match="hourly dataset"):
        hourly.wind_shares()


def test_the_percentile_is_global_and_outside_the_params_version(tmp_path: Path) -> None:
    from risk_model.overrides import load_overrides
    from risk_model.params import ModelParams, ParamsError, params_version

    assert params_version(ModelParams(fire_weather_percentile=95.0)) == params_version(ModelParams())
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("y3_x4:\n  fire_weather_percentile: 95.0\n")
    with pytest.raises(ParamsError, match="fire_weather_percentile cannot be overridden per region"):
        load_overrides(overrides)
    with pytest.raises(ValueError, match="less than or equal to 100"):
        ModelParams(fire_weather_percentile=101.0)


def test_a_zarr_folder_is_versioned_by_its_files(tmp_path: Path) -> None:
    from resources.input_versions import input_version

    grid = load_grid("demo")
    store = tmp_path / "hourly.zarr"
    hourly_cube(grid, hours=72).to_zarr(store, mode="w")
    first = input_version(str(store), name="wind_hourly")
    assert first.startswith("sha256-tree:") and input_version(str(store)) == first
    check_hourly_dataset(str(store), grid)
    hourly_cube(grid, seed=1, hours=72).to_zarr(store, mode="w")
    assert input_version(str(store)) != first

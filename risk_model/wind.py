"""Fire-weather wind-direction shares from an hourly CONUS404-like dataset.

The reference (carbonplan/ocr) derives the 8 wind-direction shares the model weights its
spread kernels with from CONUS404 hourly weather: per pixel, the hours whose Fosberg fire
weather index (FFWI) is at or above its 99th percentile over the record are the fire-weather
hours, and the share of a direction is the fraction of those hours the wind came from it.
This module computes them with xarray and numpy (dask is not needed), one spatial block at a
time, and writes them as an 8-band GeoTIFF on the dataset's own 4 km grid and CRS, which the
region computation reads with :func:`risk_model.wind_inputs.read_wind_shares` (nearest resampling).

The hourly dataset uses the CONUS404 names and units (as in the USGS HyTEST ``conus404``
Zarr store the reference reads):

========== ============================================= =======
``T2``     2 m air temperature                           K
``TD2``    2 m dew-point temperature                     K
``U10``    10 m wind, x component, **grid-relative**     m/s
``V10``    10 m wind, y component, **grid-relative**     m/s
``SINALPHA``, ``COSALPHA``  sine and cosine of the angle between grid and earth north
                            (time-invariant, ``(y, x)``)
========== ============================================= =======

Dimensions ``(time, y, x)``; ``x`` and ``y`` are regularly spaced projected coordinates in
metres (the cell centres); the CRS is the WKT in the ``crs_wkt`` (or ``spatial_ref``) attribute
of the variable named by ``T2``'s ``grid_mapping`` attribute, or of a variable ``crs``
(CF grid mapping, as CONUS404 has). 2-D ``lat``/``lon`` may be present and are not used.

Where this differs from the reference, on purpose:

* FFWI is the published formula (Fosberg 1978): wind speed in **mph** and the ``1 / 0.3002``
  scaling that makes 100 the index of zero moisture and a 30 mph wind. The reference feeds
  the wind in m/s and leaves the scaling out. The scaling does not change which hours pass a
  per-pixel percentile; the wind unit does (``sqrt(1 + U**2)`` weighs wind against humidity).
* Relative humidity above 100 % (dew point a hair above the temperature) is taken as 100 %;
  the reference gives such hours no FFWI at all.
* Calm hours (wind below ``calm_speed_ms``, default 0.5 m/s as xclim's calm threshold) have
  no direction and are left out of the histogram; the reference (through xclim) files them
  under north.
* A pixel without any fire-weather hour with a direction gets NaN shares. The reference
  stores 8 zeros there, which its composite turns into NaN: the result downstream is the same.
"""

import math
import warnings
from typing import Final, cast

import numpy as np
import numpy.typing as npt
import xarray as xr

# Light, so that deciding a build (the versions alone) does not import xarray or SciPy.
from risk_model.code_version import WIND_CODE_VERSION as WIND_CODE_VERSION
from risk_model.code_version import shares_version as shares_version
from risk_model.digest import digest
from risk_model.input_set import InputError
from risk_model.inputs import WIND_BANDS
from risk_model.params import ModelParams

FloatArray = npt.NDArray[np.float64]

#: The 8 "from" directions, in band order (as :func:`risk_model.wind_inputs.read_wind_shares` reads them).
DIRECTIONS: Final = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
#: CONUS404 variables the shares are computed from.
REQUIRED_VARIABLES: Final = ("T2", "TD2", "U10", "V10", "SINALPHA", "COSALPHA")
#: GeoTIFF tag holding the version of the shares a file holds (see :func:`shares_version`).
VERSION_TAG: Final = "WIND_SHARES_VERSION"
#: Wind below this (m/s) has no direction: xclim's default calm threshold.
CALM_SPEED_MS: Final = 0.5
#: Pixels per side of the blocks computed at once (see :func:`fire_weather_wind_shares`).
DEFAULT_BLOCK: Final = (32, 32)
MS_TO_MPH: Final = 3600.0 / 1609.344
#: Fosberg's scaling: FFWI = 100 for zero moisture content and a 30 mph wind.
FFWI_SCALE: Final = 0.3002


class HourlyDatasetError(InputError):
    """An hourly dataset that cannot be opened, lacks a variable, or does not fit the grid."""


def wind_params_version(params: ModelParams) -> str:
    """Content hash of the parameters the shares depend on (only the FFWI percentile)."""
    return digest({"fire_weather_percentile": params.fire_weather_percentile, "code": WIND_CODE_VERSION})


def saturation_vapour_pressure(temperature_k: xr.DataArray) -> xr.DataArray:
    """Saturation vapour pressure over water (Pa), Sonntag (1990).

    The reference's relative humidity (xclim's ``relative_humidity_from_dewpoint``) uses this
    formula by default. 611.2 Pa at 273.15 K.
    """
    t = temperature_k
    log_t = cast(xr.DataArray, np.log(t))
    exponent = -6096.9385 / t + 16.635794 - 2.711193e-2 * t + 1.673952e-5 * t**2 + 2.433502 * log_t
    return 100.0 * cast(xr.DataArray, np.exp(exponent))


def relative_humidity(temperature_k: xr.DataArray, dewpoint_k: xr.DataArray) -> xr.DataArray:
    """Relative humidity (%) from temperature and dew point, capped at 100 %."""
    ratio = saturation_vapour_pressure(dewpoint_k) / saturation_vapour_pressure(temperature_k)
    return (100.0 * ratio).clip(max=100.0)


def equilibrium_moisture_content(rh_pct: xr.DataArray, temperature_f: xr.DataArray) -> xr.DataArray:
    """Equilibrium moisture content of fine fuels (%), Simard (1968), as Fosberg (1978) uses it.

    Three branches by relative humidity: below 10 %, 10-50 %, 50 % and above. NaN where the
    humidity is NaN or outside 0-100.
    """
    h, t = rh_pct, temperature_f
    low = 0.03229 + 0.281073 * h - 0.000578 * h * t
    mid = 2.22749 + 0.160107 * h - 0.01478 * t
    high = 21.0606 + 0.005565 * h**2 - 0.00035 * h * t - 0.483199 * h
    emc = low.where(h < 10, mid.where(h < 50, high))
    return emc.where((h >= 0) & (h <= 100))


def fosberg_ffwi(temperature_k: xr.DataArray, rh_pct: xr.DataArray, wind_speed_ms: xr.DataArray) -> xr.DataArray:
    """The Fosberg fire weather index (Fosberg 1978), dimensionless.

    ``FFWI = eta * sqrt(1 + U**2) / 0.3002`` with ``U`` the wind speed in mph and
    ``eta = 1 - 2 (m/30) + 1.5 (m/30)**2 - 0.5 (m/30)**3`` the moisture damping of the
    equilibrium moisture content ``m`` (%) at the temperature in degrees Fahrenheit.

    Parameters
    ----------
    temperature_k
        Air temperature (K).
    rh_pct
        Relative humidity (%).
    wind_speed_ms
        Wind speed (m/s).

    Returns
    -------
    xarray.DataArray
        FFWI, NaN where any input is NaN.
    """
    temperature_f = (temperature_k - 273.15) * 9.0 / 5.0 + 32.0
    m = equilibrium_moisture_content(rh_pct, temperature_f) / 30.0
    eta = 1.0 - 2.0 * m + 1.5 * m**2 - 0.5 * m**3
    return eta * cast(xr.DataArray, np.sqrt(1.0 + (wind_speed_ms * MS_TO_MPH) ** 2)) / FFWI_SCALE


def from_direction_deg(u_earth: xr.DataArray, v_earth: xr.DataArray) -> xr.DataArray:
    """Meteorological direction the wind blows from, degrees clockwise from north in [0, 360)."""
    return cast(xr.DataArray, np.degrees(np.arctan2(-u_earth, -v_earth))) % 360.0


def direction_sector(from_deg: xr.DataArray) -> xr.DataArray:
    """Sector 0-7 (N, NE, ..., NW) of a direction: N is [337.5, 22.5), NE [22.5, 67.5), ...

    A direction on a boundary belongs to the sector clockwise of it (22.5 is NE), as in the
    reference's ``np.digitize`` classification.
    """
    return cast(xr.DataArray, np.floor(((from_deg + 22.5) % 360.0) / 45.0)) % 8


def _block_counts(block: xr.Dataset, percentile: float, calm_speed_ms: float) -> npt.NDArray[np.int64]:
    """Fire-weather hours per direction of one block: ``(8, ny, nx)``."""
    t = block["T2"].astype(np.float64)
    rh = relative_humidity(t, block["TD2"].astype(np.float64))
    u, v = block["U10"].astype(np.float64), block["V10"].astype(np.float64)
    sin, cos = block["SINALPHA"].astype(np.float64), block["COSALPHA"].astype(np.float64)
    # Grid-relative to earth-relative (WRF's convention, as the reference rotates them).
    u_earth = u * cos - v * sin
    v_earth = v * cos + u * sin
    speed = cast(xr.DataArray, np.hypot(u_earth, v_earth))
    ffwi = fosberg_ffwi(t, rh, speed)
    with warnings.catch_warnings():
        # A pixel without any valid hour has no percentile: NaN, which selects no hour.
        warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
        threshold = ffwi.quantile(percentile / 100.0, dim="time", skipna=True).drop_vars("quantile")
    selected = (ffwi >= threshold) & (speed >= calm_speed_ms)
    sector = direction_sector(from_direction_deg(u_earth, v_earth))
    counts = [(selected & (sector == k)).sum("time").transpose("y", "x").values for k in range(WIND_BANDS)]
    return np.stack(counts).astype(np.int64)


def check_variables(ds: xr.Dataset, label: str) -> None:
    missing = [name for name in REQUIRED_VARIABLES if name not in ds.variables]
    if missing:
        raise HourlyDatasetError(
            f"{label} lacks the variable(s) {', '.join(missing)}: the wind shares need CONUS404's "
            f"{', '.join(REQUIRED_VARIABLES)} (T2/TD2 in K, U10/V10 grid-relative in m/s, SINALPHA/COSALPHA "
            "the grid's rotation; merge CONUS404's time-invariant fields if only those are missing)"
        )
    for name in ("T2", "TD2", "U10", "V10"):
        if set(ds[name].dims) != {"time", "y", "x"}:
            raise HourlyDatasetError(
                f"{label}: {name} has dimensions {ds[name].dims}, expected (time, y, x): rename the dimensions"
            )
    for name in ("SINALPHA", "COSALPHA"):
        if not set(ds[name].dims) <= {"time", "y", "x"} or not {"y", "x"} <= set(ds[name].dims):
            raise HourlyDatasetError(f"{label}: {name} has dimensions {ds[name].dims}, expected (y, x)")
    if ds.sizes["time"] < 1:
        raise HourlyDatasetError(f"{label} holds no hour: use a dataset with the hourly record")


def fire_weather_wind_shares(
    ds: xr.Dataset,
    *,
    percentile: float = 99.0,
    block: tuple[int, int] = DEFAULT_BLOCK,
    calm_speed_ms: float = CALM_SPEED_MS,
) -> xr.DataArray:
    """The 8 wind-direction shares of the fire-weather hours of every pixel.

    Per pixel: FFWI of every hour (:func:`fosberg_ffwi`, from ``T2``, ``TD2`` and the
    earth-relative 10 m wind); its ``percentile`` over the hours (linear interpolation, NaN
    hours left out); the hours at or above it are the fire-weather hours (ties at the
    threshold are all in); their "from" directions are counted in 8 sectors (calm hours left
    out) and divided by their number.

    Memory: the dataset is read and computed one block of ``block`` pixels at a time, every
    hour of it at once; the output is ``8 x ny x nx`` float64. A block holds a dozen float64
    arrays of ``hours x block`` (inputs, humidity, rotated winds, speed, FFWI, the percentile's
    sorted copy, masks): measured peak 122 B per pixel-hour (``benchmarks/bench_wind.py``), so
    about 1.0 GiB for a CONUS404 year (8,760 hours) and the default 32 x 32 block, whatever the
    size of the domain (the full CONUS404 grid, 1,367 x 1,015, adds 89 MB of output). A dataset
    chunked over space with the whole record in each chunk (as the reference rechunks CONUS404)
    is read once; with chunks spanning few hours and a large area each block re-reads its
    chunks, so keep the block a divisor of the spatial chunk size or rechunk first.

    Parameters
    ----------
    ds
        The hourly dataset (see the module docstring for its variables); lazily opened is
        best: only one block is loaded at a time.
    percentile
        The FFWI percentile (0-100] that starts the fire-weather hours (reference: 99).
    block
        ``(rows, columns)`` of the blocks computed at once.
    calm_speed_ms
        Hours with less wind than this have no direction and are not counted.

    Returns
    -------
    xarray.DataArray
        ``(direction, y, x)`` float64 shares, ``direction`` labelled N, NE, ..., NW, with the
        dataset's ``y`` and ``x``; each pixel's shares sum to 1, or are all NaN where no
        fire-weather hour has a direction. Attributes: ``crs_wkt``, ``percentile``, ``hours``.

    Raises
    ------
    HourlyDatasetError
        If a variable is missing or has other dimensions, or there is no CRS.
    ValueError
        If ``percentile`` or ``block`` is out of range.
    """
    if not 0.0 < percentile <= 100.0 or math.isnan(percentile):
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if min(block) < 1:
        raise ValueError(f"block sides must be >= 1, got {block}")
    check_variables(ds, "the hourly dataset")
    crs_wkt = dataset_crs_wkt(ds, "the hourly dataset")
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    counts = np.zeros((WIND_BANDS, ny, nx), dtype=np.int64)
    variables = ds[list(REQUIRED_VARIABLES)]
    for y0 in range(0, ny, block[0]):
        for x0 in range(0, nx, block[1]):
            window = {"y": slice(y0, y0 + block[0]), "x": slice(x0, x0 + block[1])}
            part = variables.isel(window).load()
            counts[:, window["y"], window["x"]] = _block_counts(part, percentile, calm_speed_ms)
    total = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, counts / np.maximum(total, 1), np.nan)
    return xr.DataArray(
        shares,
        dims=("direction", "y", "x"),
        coords={"direction": list(DIRECTIONS), "y": ds["y"].values, "x": ds["x"].values},
        name="wind_direction_shares",
        attrs={"crs_wkt": crs_wkt, "percentile": percentile, "hours": int(ds.sizes["time"])},
    )


def dataset_crs_wkt(ds: xr.Dataset, label: str) -> str:
    """The WKT of the dataset's CRS (CF grid mapping: ``crs_wkt`` or ``spatial_ref`` attribute)."""
    candidates = [str(ds["T2"].attrs["grid_mapping"])] if "T2" in ds and "grid_mapping" in ds["T2"].attrs else []
    candidates += ["crs", "spatial_ref"]
    for name in candidates:
        if name in ds.variables:
            attrs = ds[name].attrs
            wkt = attrs.get("crs_wkt") or attrs.get("spatial_ref")
            if wkt:
                return str(wkt)
    raise HourlyDatasetError(
        f"{label} has no CRS: add a grid-mapping variable `crs` with a `crs_wkt` attribute (CONUS404 has one)"
    )

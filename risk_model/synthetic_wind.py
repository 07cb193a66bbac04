"""A seeded synthetic hourly weather cube shaped like CONUS404, for demos and tests.

No CONUS404 data is reachable offline, so :func:`generate_hourly_cube` writes one with its
form: CONUS404's Lambert conformal conic projection (WRF's, :data:`CONUS404_PROJ`) at 4 km,
cell centres on CONUS404's lattice (multiples of 4,000 m from the projection origin), ``y``
ascending south to north as WRF writes it, 2-D ``lat``/``lon``, a CF ``crs`` grid-mapping
variable, and the variables of :mod:`risk_model.wind` with CONUS404's names and units:
``T2`` and ``TD2`` (K), grid-relative ``U10``/``V10`` (m/s) and ``SINALPHA``/``COSALPHA``.
It covers a grid's extent plus :data:`MARGIN_DEG` with :data:`HOURS` hourly steps.

The weather: a diurnal temperature cycle with a sea breeze from the west, and a few dry,
hot, windy episodes during which the wind blows from a prevailing direction that turns from
north-westerly at the coast (the grid's western edge) to north-easterly inland (its eastern
edge); each episode is stronger in some places than others, so the hours passing each
pixel's FFWI percentile differ from pixel to pixel. Written as NetCDF-3 (xarray's SciPy
backend, no extra library); the same seed gives a byte-identical file.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xarray as xr
from rasterio.crs import CRS
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds

from risk_model.grid import GridSpec
from risk_model.input_set import HOURLY_FILENAME
from risk_model.input_set import local_hourly_input_set as local_hourly_input_set
from risk_model.synthetic import _smooth_noise

FloatArray = npt.NDArray[np.float64]

#: CONUS404's WRF projection: Lambert conformal conic, true latitudes 30 and 50 N, centred on
#: 39.1 N 97.9 W, on WRF's sphere of radius 6,370 km.
CONUS404_PROJ = "+proj=lcc +lat_1=30 +lat_2=50 +lat_0=39.100006 +lon_0=-97.9 +x_0=0 +y_0=0 +R=6370000 +units=m +no_defs"
CELL_M = 4000.0
HOURS = 504
START = "2021-08-01T00:00"
MARGIN_DEG = 0.25
FILENAME = HOURLY_FILENAME
MANIFEST = "conus404_hourly_synthetic.json"
# Bump when the generated content changes for the same seed.
GENERATOR_VERSION = 1
_EPISODES = 6


def _cone_factor() -> float:
    """The Lambert cone constant of :data:`CONUS404_PROJ` (standard parallels 30 and 50 N)."""
    p1, p2 = math.radians(30.0), math.radians(50.0)
    return math.log(math.cos(p1) / math.cos(p2)) / math.log(
        math.tan(math.pi / 4 + p2 / 2) / math.tan(math.pi / 4 + p1 / 2)
    )


def _lattice(grid: GridSpec) -> tuple[FloatArray, FloatArray]:
    """Cell centres (x, y ascending) on CONUS404's 4 km lattice covering the grid plus the margin."""
    west, south, east, north = grid.bounds(slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    m = MARGIN_DEG
    left, bottom, right, top = transform_bounds(
        grid.crs, CONUS404_PROJ, west - m, south - m, east + m, north + m, densify_pts=21
    )
    x = np.arange(math.floor(left / CELL_M), math.ceil(right / CELL_M) + 1) * CELL_M
    y = np.arange(math.floor(bottom / CELL_M), math.ceil(top / CELL_M) + 1) * CELL_M
    return x.astype(np.float64), y.astype(np.float64)


def _wind_from(bearing_deg: FloatArray, speed: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Earth-relative (u, v) of a wind blowing from ``bearing_deg`` at ``speed``."""
    rad = np.radians(bearing_deg)
    return -speed * np.sin(rad), -speed * np.cos(rad)


def hourly_cube(grid: GridSpec, seed: int = 0, hours: int = HOURS) -> xr.Dataset:
    """The synthetic hourly dataset covering ``grid`` (see the module docstring); ``hours`` >= 72."""
    if hours < 72:
        raise ValueError(f"the synthetic cube needs at least 72 hours for its episodes, got {hours}")
    x, y = _lattice(grid)
    ny, nx = y.size, x.size
    xx, yy = np.meshgrid(x, y)
    lon_list, lat_list = transform_points(CONUS404_PROJ, "EPSG:4326", xx.ravel().tolist(), yy.ravel().tolist())
    lon = np.asarray(lon_list).reshape(ny, nx)
    lat = np.asarray(lat_list).reshape(ny, nx)
    alpha = np.radians(_cone_factor() * (lon - (-97.9)))
    west, _, east, _ = grid.bounds(slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    inland = np.clip((lon - west) / (east - west), 0.0, 1.0)

    rng = np.random.default_rng([seed, 10])
    wobble = (_smooth_noise(rng, (ny, nx), 4.0) - 0.5) * 30.0
    prevailing = 315.0 + 90.0 * inland + wobble  # fire-weather "from" bearing, NW -> NE inland

    t = np.arange(hours, dtype=np.float64)
    episode = np.zeros((hours, ny, nx))
    starts = np.sort(rng.choice(np.arange(12, hours - 36), size=_EPISODES, replace=False))
    for start in starts:
        length = int(rng.integers(10, 30))
        shape = np.clip(np.sin(np.pi * (t - start) / length), 0.0, None) * ((t >= start) & (t < start + length))
        # Each episode peaks in its own places: a different pixel ranking of hours per pixel.
        where = 0.3 + 0.7 * _smooth_noise(rng, (ny, nx), 3.0)
        episode = np.maximum(episode, shape[:, None, None] * where[None])

    breeze_from = 270.0 + 50.0 * rng.standard_normal((hours, ny, nx))
    breeze_speed = 1.0 + 4.0 * rng.random((hours, ny, nx))
    fire_from = prevailing[None] + 12.0 * rng.standard_normal((hours, ny, nx))
    fire_speed = 6.0 + 9.0 * episode
    ub, vb = _wind_from(breeze_from, breeze_speed)
    uf, vf = _wind_from(fire_from, fire_speed)
    u_earth = (1.0 - episode) * ub + episode * uf
    v_earth = (1.0 - episode) * vb + episode * vf
    # Grid-relative, as WRF writes them: the inverse of the rotation the shares apply.
    cos, sin = np.cos(alpha)[None], np.sin(alpha)[None]
    u10 = u_earth * cos + v_earth * sin
    v10 = v_earth * cos - u_earth * sin

    diurnal = np.sin(2.0 * np.pi * (t - 9.0) / 24.0)[:, None, None]
    t2 = 289.0 + 7.0 * diurnal + 4.0 * inland[None] + 6.0 * episode + 0.5 * rng.standard_normal((hours, ny, nx))
    depression = 6.0 + 4.0 * rng.random((hours, ny, nx)) + 22.0 * episode
    td2 = t2 - depression

    crs = CRS.from_proj4(CONUS404_PROJ)
    dims3 = ("time", "y", "x")

    def var(data: FloatArray, units: str, long_name: str) -> xr.Variable:
        attrs = {"units": units, "long_name": long_name, "grid_mapping": "crs"}
        return xr.Variable(dims3 if data.ndim == 3 else ("y", "x"), data.astype(np.float32), attrs)

    return xr.Dataset(
        {
            "T2": var(t2, "K", "temperature at 2 m"),
            "TD2": var(td2, "K", "dew point temperature at 2 m"),
            "U10": var(u10, "m s-1", "grid-relative x wind at 10 m"),
            "V10": var(v10, "m s-1", "grid-relative y wind at 10 m"),
            "SINALPHA": var(np.sin(alpha), "1", "sine of the grid rotation to earth north"),
            "COSALPHA": var(np.cos(alpha), "1", "cosine of the grid rotation to earth north"),
            "crs": xr.Variable(
                (),
                np.int32(0),
                {
                    "grid_mapping_name": "lambert_conformal_conic",
                    "standard_parallel": np.array([30.0, 50.0]),
                    "longitude_of_central_meridian": -97.9,
                    "latitude_of_projection_origin": 39.100006,
                    "earth_radius": 6370000.0,
                    "crs_wkt": crs.to_wkt(),
                },
            ),
        },
        coords={
            "time": np.datetime64(START, "ns") + np.arange(hours).astype("timedelta64[h]"),
            "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate"}),
            "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate"}),
            "lat": (("y", "x"), lat, {"units": "degrees_north"}),
            "lon": (("y", "x"), lon, {"units": "degrees_east"}),
        },
        attrs={"title": "synthetic CONUS404-like hourly cube", "seed": seed, "generator_version": GENERATOR_VERSION},
    )


def generate_hourly_cube(grid: GridSpec, path: Path, seed: int = 0, hours: int = HOURS) -> str:
    """Write the synthetic hourly cube of ``grid`` to ``path`` (NetCDF-3); return its SHA-256.

    Written under a name of this process and renamed into place, so a concurrent reader never
    sees half a file. The same seed gives byte-identical files.
    """
    ds = hourly_cube(grid, seed, hours)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    encoding = {"time": {"units": f"hours since {START.replace('T', ' ')}", "dtype": "int32"}}
    ds.to_netcdf(partial, engine="scipy", format="NETCDF3_64BIT", encoding=encoding)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    os.replace(partial, path)
    return digest


def ensure_hourly_cube(grid: GridSpec, inputs_dir: Path, force: bool = False) -> Path:
    """Generate the cube of ``grid`` into ``inputs_dir`` unless it is there, unchanged, already."""
    path, manifest_path = inputs_dir / FILENAME, inputs_dir / MANIFEST
    if not force and manifest_path.is_file() and path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if (
            manifest.get("grid_fingerprint") == grid.fingerprint
            and manifest.get("generator_version") == GENERATOR_VERSION
            and manifest.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
        ):
            return path
    sha = generate_hourly_cube(grid, path)
    manifest = {
        "generator": "risk_model.synthetic_wind.generate_hourly_cube",
        "generator_version": GENERATOR_VERSION,
        "seed": 0,
        "grid": grid.name,
        "grid_fingerprint": grid.fingerprint,
        "file": FILENAME,
        "sha256": sha,
    }
    partial = inputs_dir / f".{MANIFEST}.{os.getpid()}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(partial, manifest_path)
    return path

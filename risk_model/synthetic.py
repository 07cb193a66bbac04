"""Seeded synthetic inputs, shaped like the real ones, for demos and tests.

No real input is reachable offline, so :func:`generate_inputs` writes three GeoTIFFs with
the structure the model meets in production, each in the native form of the dataset it stands
for (its CRS, pixel size and an extent of its own, not the output grid's):

* burn probability on a 270 m EPSG:5070 grid covering the output grid plus a margin: a
  smooth, spatially correlated field of about 0.0005-0.06, with non-burnable patches (0: lakes,
  towns, rock), a few isolated one-pixel holes, and no-data over the ocean (the Riley et al.
  product's form);
* conditional risk 0-100 on a 30 m EPSG:5070 grid covering the output grid plus a margin,
  no-data over the ocean (the USFS Wildfire Risk to Communities product's form);
* 8-band fire-weather wind-direction shares on a 0.05 degree EPSG:4326 grid, summing to 1
  per pixel, whose prevailing direction turns from north-westerly at the coast to
  north-easterly inland.

The ocean lies west of a wiggly coastline between 1.13 and 1.87 chunk widths from the
grid's western edge, so the first chunk column is all ocean and the second is part ocean.
Files are tiled and deflate-compressed; the same seed gives byte-identical files.
:func:`write_conus_footprint` writes a coarse CONUS outline for listing the regions of the
production grid.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.features
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import xy
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds
from scipy import ndimage

from risk_model.errors import BadInputError
from risk_model.grid import GridSpec
from risk_model.input_set import FILENAMES, InputSet
from risk_model.input_set import local_input_set as local_input_set

FloatArray = npt.NDArray[np.float64]

NODATA = -9999.0
#: The CRS the USFS publishes both burn probability and conditional risk in (CONUS Albers).
USFS_CRS = "EPSG:5070"
BP_PIXEL_M = 270.0
BP_MARGIN_DEG = 0.1
CR_PIXEL_M = 30.0
#: Conditional risk reaches this far past the grid: more than a demo region's halo (62 px of
#: 0.000308 degrees, 0.019 degrees), as the national product does everywhere inland.
CR_MARGIN_DEG = 0.03
#: Rows of a raster whose coordinates are interpolated at once (bounded memory).
_ROWS_PER_BLOCK = 256
#: Pixels between exactly transformed coordinates when locating the coast (see :func:`_ocean`).
_LONLAT_STEP_PX = 8
WIND_PIXEL_DEG = 0.05
WIND_MARGIN_DEG = 0.25
CONUS_PIXEL_DEG = 0.02
# Bump when the generated content changes for the same seed.
# 2: conditional risk in its native form (30 m EPSG:5070) instead of on the output grid.
GENERATOR_VERSION = 2

# A rough outline of the contiguous US (lon, lat), clockwise from Cape Flattery.
CONUS_OUTLINE: tuple[tuple[float, float], ...] = (
    (-124.7, 48.4), (-123.0, 49.0), (-95.2, 49.0), (-89.6, 48.0), (-84.5, 46.5),
    (-82.5, 45.3), (-83.0, 42.0), (-79.0, 43.3), (-76.5, 44.0), (-74.9, 45.0),
    (-71.5, 45.0), (-69.2, 47.4), (-67.8, 47.1), (-67.0, 44.8), (-70.6, 43.0),
    (-70.0, 41.6), (-74.0, 40.5), (-76.0, 37.0), (-75.5, 35.2), (-79.0, 33.5),
    (-81.4, 30.7), (-80.1, 26.5), (-81.0, 25.2), (-82.8, 27.8), (-85.0, 29.7),
    (-89.0, 30.2), (-90.5, 29.0), (-94.0, 29.6), (-97.4, 27.8), (-97.4, 25.9),
    (-99.5, 27.5), (-101.4, 29.8), (-103.0, 29.0), (-104.5, 29.6), (-106.5, 31.8),
    (-108.2, 31.3), (-111.0, 31.3), (-114.7, 32.7), (-117.1, 32.5), (-118.5, 34.0),
    (-120.6, 34.6), (-121.9, 36.3), (-122.5, 37.5), (-123.7, 38.9), (-124.4, 40.4),
    (-124.0, 43.0), (-124.1, 46.3),
)  # fmt: skip


def _unit(values: FloatArray) -> FloatArray:
    """Scale to [0, 1]."""
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> FloatArray:
    """Spatially correlated noise in [0, 1] with correlation length ``scale_px``.

    Noise is drawn on a grid ``scale_px`` times coarser, smoothed, then interpolated up: the
    cost stays small for millions of pixels.
    """
    factor = max(scale_px, 1.0)
    coarse_shape = (math.ceil(shape[0] / factor) + 4, math.ceil(shape[1] / factor) + 4)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 1.0, mode="wrap")
    rows = np.arange(shape[0]) / factor + 2.0
    cols = np.arange(shape[1]) / factor + 2.0
    coords = np.meshgrid(rows, cols, indexing="ij")
    fine: FloatArray = ndimage.map_coordinates(coarse, coords, order=3, mode="nearest")
    return _unit(fine)


def coast_longitude(grid: GridSpec, latitude: FloatArray, seed: int) -> FloatArray:
    """Longitude of the synthetic coastline at ``latitude``: ocean lies to its west.

    The coast wanders between 1.13 and 1.87 chunk widths east of the grid's western edge.
    """
    rng = np.random.default_rng([seed, 1])
    phase = rng.uniform(0, 2 * math.pi, size=2)
    south = grid.transform[5]
    height = grid.shape[0] * grid.transform[4]
    t = (latitude - south) / height
    chunks = 1.5 + 0.25 * np.sin(2 * math.pi * 2.3 * t + phase[0]) + 0.12 * np.sin(2 * math.pi * 7.1 * t + phase[1])
    result: FloatArray = grid.transform[2] + chunks * grid.chunks[1] * grid.transform[0]
    return result


def _write_tif(path: Path, data: npt.NDArray[np.float32], transform: Affine, crs: str, nodata: float) -> str:
    """Write a tiled, deflate-compressed float32 GeoTIFF (bands, rows, cols); return its sha256."""
    bands, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": "float32",
        "crs": CRS.from_user_input(crs),
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 3,  # floating-point predictor: smooth fields compress several times better
    }
    # Written under a name of this process and renamed into place: another build generating
    # the same inputs at the same time never sees (or replaces) a half-written file.
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with rasterio.open(partial, "w", **profile) as dst:
        dst.write(data)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    os.replace(partial, path)
    return digest


def _usfs_lattice(grid: GridSpec, pixel_m: float, margin_deg: float) -> tuple[Affine, int, int]:
    """North-up transform, height and width of a :data:`USFS_CRS` raster covering the grid plus a margin.

    The origin is snapped to multiples of the pixel, as on the national products' lattices.
    """
    full = (slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    west, south, east, north = grid.bounds(*full)
    m = margin_deg
    left, bottom, right, top = transform_bounds(
        grid.crs, USFS_CRS, west - m, south - m, east + m, north + m, densify_pts=21
    )
    left, top = math.floor(left / pixel_m) * pixel_m, math.ceil(top / pixel_m) * pixel_m
    width = math.ceil((right - left) / pixel_m)
    height = math.ceil((top - bottom) / pixel_m)
    return Affine(pixel_m, 0.0, left, 0.0, -pixel_m, top), height, width


def _lerp(coarse: FloatArray, at: FloatArray, axis: int) -> FloatArray:
    """Linear interpolation of ``coarse`` along ``axis`` at fractional indices ``at``."""
    low = np.minimum(np.floor(at).astype(np.int64), coarse.shape[axis] - 2)
    weight = at - low
    result: FloatArray
    if axis == 0:
        result = coarse[low] * (1 - weight)[:, None] + coarse[low + 1] * weight[:, None]
    else:
        result = coarse[:, low] * (1 - weight) + coarse[:, low + 1] * weight
    return result


def _ocean(grid: GridSpec, transform: Affine, height: int, width: int, seed: int) -> npt.NDArray[np.bool_]:
    """Pixels of a :data:`USFS_CRS` raster whose centres lie west of the synthetic coast.

    Longitudes and latitudes are transformed exactly on every :data:`_LONLAT_STEP_PX`-th pixel
    centre and interpolated linearly in between: PROJ takes about 1 us a point, 9 s for the demo's
    30 m raster, and the projection is so smooth over 8 pixels that the interpolated coordinates
    are within 1e-8 degrees of exact ones (measured over the demo raster), far below a pixel.
    """
    step = _LONLAT_STEP_PX
    rows = np.append(np.arange(0, height - 1, step), height - 1).astype(np.float64)
    cols = np.append(np.arange(0, width - 1, step), width - 1).astype(np.float64)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    xs, ys = xy(transform, r.ravel(), c.ravel(), offset="center")
    lon, lat = transform_points(USFS_CRS, grid.crs, xs, ys)
    coarse = [np.asarray(lon).reshape(r.shape), np.asarray(lat).reshape(r.shape)]
    # Fractional position of every pixel row and column in the coarse lattice (its last step may
    # be shorter): bilinear interpolation on a lattice is one pass along rows, one along columns.
    at_row = np.interp(np.arange(height), rows, np.arange(len(rows)))
    at_col = np.interp(np.arange(width), cols, np.arange(len(cols)))
    ocean = np.empty((height, width), dtype=bool)
    for start in range(0, height, _ROWS_PER_BLOCK):
        block = at_row[start : start + _ROWS_PER_BLOCK]
        block_lon, block_lat = (_lerp(_lerp(values, block, 0), at_col, 1) for values in coarse)
        ocean[start : start + len(block)] = block_lon < coast_longitude(grid, block_lat, seed)
    return ocean


def _burn_probability(grid: GridSpec, seed: int) -> tuple[npt.NDArray[np.float32], Affine]:
    """Burn probability on a 270 m EPSG:5070 grid (north-up), with ocean no-data."""
    transform, height, width = _usfs_lattice(grid, BP_PIXEL_M, BP_MARGIN_DEG)

    rng = np.random.default_rng([seed, 2])
    base = _smooth_noise(rng, (height, width), 6.0)
    eastward = np.linspace(0.0, 1.0, width)[None, :]  # drier, more fire-prone inland
    # Log-uniform-ish over 0.0005-0.06, like annual burn probabilities of the western US.
    bp = 10.0 ** (-3.3 + 2.1 * _unit(0.7 * base + 0.3 * eastward))
    non_burnable = _smooth_noise(rng, (height, width), 3.0) > 0.78  # lakes, towns, rock
    holes = rng.random((height, width)) < 0.003  # isolated non-burnable pixels
    bp[non_burnable | holes] = 0.0
    bp[_ocean(grid, transform, height, width, seed)] = NODATA
    return bp[None].astype(np.float32), transform


def _conditional_risk(grid: GridSpec, seed: int) -> tuple[npt.NDArray[np.float32], Affine]:
    """Conditional risk 0-100 on a 30 m EPSG:5070 grid (north-up), with ocean no-data.

    Generated on its own pixels, not warped from the output grid: like the USFS raster, its
    pixels are not the output grid's, and every region has to warp it.
    """
    transform, height, width = _usfs_lattice(grid, CR_PIXEL_M, CR_MARGIN_DEG)
    rng = np.random.default_rng([seed, 3])
    # Skewed towards low values, so the risk scores cover most bins; a correlation length of
    # 40 px (1.2 km), as the earlier on-grid field had.
    cr = 100.0 * _smooth_noise(rng, (height, width), 40.0) ** 3
    cr[_ocean(grid, transform, height, width, seed)] = NODATA
    return cr[None].astype(np.float32), transform


def _wind_shares(grid: GridSpec, seed: int) -> tuple[npt.NDArray[np.float32], Affine]:
    """8-band wind-direction shares on a coarse EPSG:4326 grid (north-up), summing to 1."""
    full = (slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    west, south, east, north = grid.bounds(*full)
    step, m = WIND_PIXEL_DEG, WIND_MARGIN_DEG
    left = math.floor((west - m) / step) * step
    top = math.ceil((north + m) / step) * step
    width = math.ceil((east + m - left) / step)
    height = math.ceil((top - (south - m)) / step)
    transform = Affine(step, 0.0, left, 0.0, -step, top)

    rng = np.random.default_rng([seed, 4])
    lon = left + (np.arange(width) + 0.5) * step
    inland = np.clip((lon - west) / max(east - west, step), 0.0, 1.0)[None, :]
    wobble = (_smooth_noise(rng, (height, width), 3.0) - 0.5) * 40.0
    # Prevailing "from" bearing: 315 (NW) at the coast turning to 45 (NE) inland.
    prevailing = np.radians(315.0 + 90.0 * inland + wobble)
    bearings = np.radians(45.0 * np.arange(8))[:, None, None]
    weights = np.exp(2.0 * np.cos(bearings - prevailing[None]))
    weights *= 1.0 + 0.2 * rng.random((8, height, width))
    shares = weights / weights.sum(axis=0)
    return shares.astype(np.float32), transform


#: Burn-probability multipliers of the synthetic scenarios, against the default (2011-like)
#: field. The reference publishes burn probability for the 2011 and the 2047 climate; the
#: conditional risk and the wind are the same in both. 1.5 is a stand-in that makes the 2047
#: raster visibly riskier, not a climate projection.
SYNTHETIC_SCENARIOS = {"2011": 1.0, "2047": 1.5}


class UnknownScenarioError(BadInputError, ValueError):
    """A scenario the synthetic generator has no inputs for."""


def scenario_factor(scenario: str | None) -> float:
    """The burn-probability multiplier of a synthetic ``scenario`` (1 for the default).

    Raises
    ------
    UnknownScenarioError
        If the generator has no such scenario.
    """
    if scenario is None:
        return 1.0
    if scenario not in SYNTHETIC_SCENARIOS:
        raise UnknownScenarioError(
            f"the synthetic inputs have no scenario {scenario!r} (they have {', '.join(sorted(SYNTHETIC_SCENARIOS))}): "
            "for another scenario, point RISK_INPUTS at its input set"
        )
    return SYNTHETIC_SCENARIOS[scenario]


def generate_inputs(grid: GridSpec, out_dir: Path, seed: int = 0, scenario: str | None = None) -> InputSet:
    """Write synthetic inputs for ``grid`` into ``out_dir`` and a ``manifest.json``.

    Parameters
    ----------
    grid
        The output grid (a geographic grid such as ``demo``; the rasters are sized from it).
    out_dir
        Directory to write into; created if missing, files in it are overwritten.
    seed
        Random seed; the same seed gives byte-identical files.
    scenario
        A synthetic scenario (:data:`SYNTHETIC_SCENARIOS`): its burn probability is the
        default's times the scenario's factor (capped at 1); the other inputs are the default's.

    Returns
    -------
    InputSet
        Absolute paths of the three rasters.
    """
    factor = scenario_factor(scenario)
    out_dir.mkdir(parents=True, exist_ok=True)
    bp, bp_transform = _burn_probability(grid, seed)
    bp = np.where(bp == NODATA, bp, np.minimum(bp * np.float32(factor), np.float32(1.0))).astype(np.float32)
    layers = {
        "burn_probability": (bp, bp_transform, USFS_CRS),
        "conditional_risk": (*_conditional_risk(grid, seed), USFS_CRS),
        "wind_direction": (*_wind_shares(grid, seed), "EPSG:4326"),
    }
    files = {}
    for role, (data, transform, crs) in layers.items():
        path = out_dir / FILENAMES[role]
        nodata = -1.0 if role == "wind_direction" else NODATA  # shares cover land and sea alike
        files[role] = {"file": path.name, "sha256": _write_tif(path, data, transform, crs, nodata)}
    manifest = {
        "generator": "risk_model.synthetic.generate_inputs",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "scenario": scenario,
        "grid": grid.name,
        "grid_fingerprint": grid.fingerprint,
        "files": files,
    }
    partial = out_dir / f".manifest.json.{os.getpid()}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(partial, out_dir / "manifest.json")
    return InputSet(**{role: str((out_dir / FILENAMES[role]).resolve()) for role in FILENAMES})


def write_conus_footprint(grid: GridSpec, out_dir: Path) -> Path:
    """Write a coarse burn-probability-like footprint of the contiguous US.

    :data:`CONUS_OUTLINE` is rasterised at 0.02 degrees (EPSG:4326) over the grid's extent:
    0.01 inside the outline and no-data outside. Only its valid-data mask is meant to be
    used, to list the regions of the production grid.

    Parameters
    ----------
    grid
        The grid whose extent the raster covers (``conus-30m``).
    out_dir
        Directory to write ``conus_footprint_4326.tif`` into.

    Returns
    -------
    pathlib.Path
        The raster's path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    full = (slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    west, south, east, north = grid.bounds(*full)
    step = CONUS_PIXEL_DEG
    width, height = math.ceil((east - west) / step), math.ceil((north - south) / step)
    transform = Affine(step, 0.0, west, 0.0, -step, south + height * step)
    outline = {"type": "Polygon", "coordinates": [[*CONUS_OUTLINE, CONUS_OUTLINE[0]]]}
    inside = rasterio.features.rasterize(
        [(outline, 1)], out_shape=(height, width), transform=transform, fill=0, dtype="uint8"
    )
    data = np.where(inside == 1, 0.01, NODATA).astype(np.float32)[None]
    path = out_dir / "conus_footprint_4326.tif"
    _write_tif(path, data, transform, "EPSG:4326", NODATA)
    return path


def ensure_inputs(grid: GridSpec, inputs_dir: Path, force: bool = False, scenario: str | None = None) -> InputSet:
    """Generate the synthetic inputs of ``grid`` into ``inputs_dir`` unless they are there already.

    They count as there when the manifest names this grid and generator version and every
    file's checksum still matches, so a truncated or edited file gets regenerated.
    """
    manifest_path = inputs_dir / "manifest.json"
    if not force and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        current = (
            manifest.get("grid_fingerprint") == grid.fingerprint
            and manifest.get("generator_version") == GENERATOR_VERSION
            and manifest.get("scenario") == scenario
            and all(
                (inputs_dir / entry["file"]).is_file()
                and hashlib.sha256((inputs_dir / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
                for entry in manifest.get("files", {}).values()
            )
        )
        if current:
            return local_input_set(inputs_dir)
    return generate_inputs(grid, inputs_dir, scenario=scenario)

"""Compute one region of the risk raster: read with a halo, run the science, crop, package.

A region reads every input over its window grown by a halo (:func:`window_halo`) on each
side, and every pixel is computed with the kernels of the latitude band it lies in
(:func:`pixel_bands`), never with a size taken from the window: so the cropped result equals
what a computation over the whole grid would give at those pixels, and regions can be
computed in any order, on any machine, without seams.

A production region's window (6000 x 4500 px plus a 65 px halo) is computed in float32
working arrays with the wind shares read one band at a time: its peak memory is under 2 GB
(6 GB in float64 with all 8 bands held; ``benchmarks/bench_region_memory.py``).
"""

import math

import numpy as np
import numpy.typing as npt
import xarray as xr
from rasterio.crs import CRS

from risk_model import schema
from risk_model.grid import GridSpec, Region
from risk_model.input_set import InputSet
from risk_model.inputs import read_burn_probability, read_conditional_risk
from risk_model.kernels import RowBand, halo_pixels
from risk_model.params import ModelParams
from risk_model.science import RiskArrays, wind_informed_risk
from risk_model.wind_inputs import WindShareBands

#: The working dtype of a region's computation. float32 differs from float64 by less than
#: 1e-5 relative (``tests/test_science_precision.py``), and the raster stores float32 anyway.
WORKING_DTYPE = np.float32


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float, radius_m: float) -> float:
    """Great-circle distance in metres between two points given in degrees.

    Parameters
    ----------
    lon1, lat1, lon2, lat2
        The two points, in degrees.
    radius_m
        Radius of the sphere.

    Returns
    -------
    float
        The distance along the sphere.
    """
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlam = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2.0 * radius_m * math.asin(math.sqrt(a))


def pixel_size_at(grid: GridSpec, latitude: float, params: ModelParams) -> tuple[float, float]:
    """Ground size ``(dy, dx)`` in metres of the grid's pixels at ``latitude``.

    As the reference measures it: the haversine distance across one pixel, north-south and
    east-west, on a sphere of radius ``params.earth_radius_m`` (the east-west size shrinks
    with the cosine of latitude). A projected grid's pixel size is already in metres.

    Parameters
    ----------
    grid
        The output grid.
    latitude
        Latitude in degrees where the size is wanted (a latitude band's middle).
    params
        Model parameters (Earth radius).

    Returns
    -------
    tuple of float
        ``(north-south, east-west)`` pixel size in metres.
    """
    dy_deg, dx_deg = grid.pixel_size
    if not CRS.from_user_input(grid.crs).is_geographic:
        return (dy_deg, dx_deg)
    radius = params.earth_radius_m
    return (
        haversine_m(0.0, latitude, 0.0, latitude + dy_deg, radius),
        haversine_m(0.0, latitude, dx_deg, latitude, radius),
    )


def band_of_latitude(latitude: float, params: ModelParams) -> int:
    """Index of the latitude band (``kernel_band_origin_deg``, ``kernel_band_deg``) holding ``latitude``."""
    return math.floor((latitude - params.kernel_band_origin_deg) / params.kernel_band_deg)


def band_latitude(band: int, params: ModelParams) -> float:
    """The middle latitude of band ``band``: where its pixel size, and so its kernels, are taken."""
    return params.kernel_band_origin_deg + (band + 0.5) * params.kernel_band_deg


def pixel_bands(grid: GridSpec, rows: slice, params: ModelParams) -> list[RowBand]:
    """The rows of a window grouped by latitude band, each with its band's pixel size.

    A row belongs to the band holding its pixel centres' latitude; the band is fixed by the
    latitude alone, so a pixel gets the same pixel size (and kernels) in every window that
    holds it. A projected grid has one band (its pixels have one size in metres).

    Parameters
    ----------
    grid
        The output grid.
    rows
        Rows of the window (may extend past the grid).
    params
        Model parameters (band origin and height, Earth radius).

    Returns
    -------
    list of RowBand
        Bands in row order, with rows counted from ``rows.start``.
    """
    n = rows.stop - rows.start
    if not CRS.from_user_input(grid.crs).is_geographic:
        return [RowBand(slice(0, n), pixel_size_at(grid, 0.0, params))]
    latitudes = grid.latitude(rows)
    index = np.floor((latitudes - params.kernel_band_origin_deg) / params.kernel_band_deg).astype(np.int64)
    # Latitude ascends with the row, so each band is one run of rows.
    starts = [0, *(np.flatnonzero(np.diff(index)) + 1).tolist()]
    stops = [*starts[1:], n]
    return [
        RowBand(slice(start, stop), pixel_size_at(grid, band_latitude(int(index[start]), params), params))
        for start, stop in zip(starts, stops, strict=True)
    ]


def window_halo(grid: GridSpec, rows: slice, params: ModelParams) -> int:
    """The halo a window needs: the largest halo of the latitude bands the grown window touches.

    Kernels grow poleward (the east-west pixel size shrinks), so the halo is taken over every
    band the window *with its halo* reaches, growing it until it holds.

    Parameters
    ----------
    grid
        The output grid.
    rows
        Rows of the window.
    params
        Model parameters.

    Returns
    -------
    int
        The halo in pixels.
    """
    halo = 0
    while True:
        grown = slice(rows.start - halo, rows.stop + halo)
        needed = max(halo_pixels(params, band.pixel_size_m) for band in pixel_bands(grid, grown, params))
        if needed <= halo:
            return halo
        halo = needed


def _crop(arrays: RiskArrays, halo: int) -> RiskArrays:
    inner = (slice(halo, -halo or None), slice(halo, -halo or None))
    return RiskArrays(
        burn_probability=arrays.burn_probability[inner],
        conditional_risk=arrays.conditional_risk[inner],
        risk=arrays.risk[inner],
        score=arrays.score[inner],
    )


def compute_window(
    grid: GridSpec,
    rows: slice,
    cols: slice,
    inputs: InputSet,
    params: ModelParams,
    pixel_size_m: tuple[float, float] | None = None,
    *,
    dtype: npt.DTypeLike = WORKING_DTYPE,
) -> RiskArrays | None:
    """Run the model over a window of the grid (a region, or the whole grid).

    Parameters
    ----------
    grid
        The output grid.
    rows, cols
        The window; the inputs are read over it grown by the halo.
    inputs
        Locations of the input rasters.
    params
        Model parameters.
    pixel_size_m
        ``(dy, dx)`` in metres for every pixel, overriding the latitude bands (for tests and
        studies at one fixed pixel size). By default each pixel gets the size of its
        latitude band (:func:`pixel_bands`).
    dtype
        Working dtype (:data:`WORKING_DTYPE` by default; float64 for studies of rounding).

    Returns
    -------
    RiskArrays or None
        The outputs over exactly ``rows`` x ``cols`` (grid orientation, row 0 south), or None
        when the window holds no data (conditional risk is no-data everywhere in it).

    Raises
    ------
    risk_model.input_set.InputError
        If an input cannot be read or the wind raster does not have 8 bands.
    """
    halo = halo_pixels(params, pixel_size_m) if pixel_size_m is not None else window_halo(grid, rows, params)
    # Both rasters are warped straight into the working dtype (no float64 window is held): the
    # conditional risk is float32 as published, burn probability is gap-filled in float64 at
    # its source resolution and rounded once as it is warped.
    conditional_risk = read_conditional_risk(
        inputs.conditional_risk, grid, rows, cols, halo, dtype=np.dtype(dtype).name
    )
    inner = (slice(halo, -halo or None), slice(halo, -halo or None))
    if not np.isfinite(conditional_risk[inner]).any():
        return None  # all ocean: skip reading the other inputs
    burn_probability = read_burn_probability(
        inputs.burn_probability,
        grid,
        rows,
        cols,
        halo,
        params.burn_probability_resampling,
        gap_fill_window_px=params.gap_fill_window_px,
        dtype=np.dtype(dtype).name,
    )
    # Read band by band as the model asks for them, never all 8 at once.
    wind = WindShareBands(
        inputs.wind_shares(), grid, rows, cols, halo, params.wind_resampling, dtype=np.dtype(dtype).name
    )
    grown_rows = slice(rows.start - halo, rows.stop + halo)
    geometry = pixel_size_m if pixel_size_m is not None else pixel_bands(grid, grown_rows, params)
    result = wind_informed_risk(burn_probability, conditional_risk, wind, geometry, params, dtype=dtype)
    return _crop(result, halo)


def compute_region(
    grid: GridSpec,
    region: Region,
    inputs: InputSet,
    params: ModelParams,
    *,
    pixel_size_m: tuple[float, float] | None = None,
) -> xr.Dataset:
    """Compute one region as a dataset that fits the template exactly.

    Parameters
    ----------
    grid
        The output grid.
    region
        The region (one chunk of the grid).
    inputs
        Locations of the input rasters.
    params
        Model parameters.
    pixel_size_m
        Override of the pixel size in metres for every pixel (default: per latitude band).

    Returns
    -------
    xarray.Dataset
        The variables of :data:`risk_model.schema.VARIABLES` with their dtypes and the
        template's attributes, dims ``("latitude", "longitude")`` and coordinates from
        :func:`risk_model.schema.coordinates`; :func:`risk_model.schema.empty_region` for
        an all-ocean region.

    Raises
    ------
    risk_model.input_set.InputError
        If an input cannot be read.
    """
    arrays = compute_window(grid, region.rows, region.cols, inputs, params, pixel_size_m)
    if arrays is None:
        return schema.empty_region(grid, region.rows, region.cols)
    data_vars = {
        v.name: xr.Variable(
            schema.DIMS,
            # No copy when the dtype already matches: the crop stays a view of the window.
            getattr(arrays, v.name).astype(v.dtype, copy=False),
            {"long_name": v.long_name, "units": v.units},
        )
        for v in schema.VARIABLES
    }
    return xr.Dataset(data_vars, coords=schema.coordinates(grid, region.rows, region.cols))

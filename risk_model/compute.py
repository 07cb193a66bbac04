"""Compute one region of the risk raster: read with a halo, run the science, crop, package.

A region reads every input over its window grown by :func:`risk_model.science.halo_pixels`
on each side, so the cropped result equals what a computation over the whole grid would
give at those pixels: regions can be computed in any order, on any machine, without seams.
"""

import math

import numpy as np
import xarray as xr
from rasterio.crs import CRS

from risk_model import schema
from risk_model.grid import GridSpec, Region
from risk_model.inputs import InputSet, read_wind_shares, read_window
from risk_model.params import ModelParams
from risk_model.science import RiskArrays, halo_pixels, wind_informed_risk


def pixel_size_at(grid: GridSpec, latitude: float, params: ModelParams) -> tuple[float, float]:
    """Ground size ``(dy, dx)`` in metres of the grid's pixels at ``latitude``.

    A geographic grid's degrees are turned into metres on a sphere of radius
    ``params.earth_radius_m`` (the east-west size shrinks with the cosine of latitude); a
    projected grid's pixel size is already in metres.

    Parameters
    ----------
    grid
        The output grid.
    latitude
        Latitude in degrees where the size is wanted (a region's centre).
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
    metres_per_degree = math.radians(1.0) * params.earth_radius_m
    return (dy_deg * metres_per_degree, dx_deg * metres_per_degree * math.cos(math.radians(latitude)))


def _centre_latitude(grid: GridSpec, rows: slice, cols: slice) -> float:
    _, south, _, north = grid.bounds(rows, cols)
    return (south + north) / 2


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
        ``(dy, dx)`` in metres; by default the pixel size at the window's centre latitude.
        Pass a fixed value to compare windows of different sizes exactly.

    Returns
    -------
    RiskArrays or None
        The outputs over exactly ``rows`` x ``cols`` (grid orientation, row 0 south), or None
        when the window holds no data (conditional risk is no-data everywhere in it).

    Raises
    ------
    risk_model.inputs.InputError
        If an input cannot be read or the wind raster does not have 8 bands.
    """
    size = pixel_size_m or pixel_size_at(grid, _centre_latitude(grid, rows, cols), params)
    halo = halo_pixels(params, size)
    conditional_risk = read_window(inputs.conditional_risk, grid, rows, cols, halo)
    inner = (slice(halo, -halo or None), slice(halo, -halo or None))
    if not np.isfinite(conditional_risk[inner]).any():
        return None  # all ocean: skip reading the other inputs
    burn_probability = read_window(inputs.burn_probability, grid, rows, cols, halo, params.burn_probability_resampling)
    wind = read_wind_shares(inputs.wind_direction, grid, rows, cols, halo, params.wind_resampling)
    result = wind_informed_risk(burn_probability, conditional_risk, wind, size, params)
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
        Override of the pixel size in metres (default: at the region's centre latitude).

    Returns
    -------
    xarray.Dataset
        The variables of :data:`risk_model.schema.VARIABLES` with their dtypes and the
        template's attributes, dims ``("latitude", "longitude")`` and coordinates from
        :func:`risk_model.schema.coordinates`; :func:`risk_model.schema.empty_region` for
        an all-ocean region.

    Raises
    ------
    risk_model.inputs.InputError
        If an input cannot be read.
    """
    arrays = compute_window(grid, region.rows, region.cols, inputs, params, pixel_size_m)
    if arrays is None:
        return schema.empty_region(grid, region.rows, region.cols)
    data_vars = {
        v.name: xr.Variable(
            schema.DIMS,
            getattr(arrays, v.name).astype(v.dtype),
            {"long_name": v.long_name, "units": v.units},
        )
        for v in schema.VARIABLES
    }
    return xr.Dataset(data_vars, coords=schema.coordinates(grid, region.rows, region.cols))

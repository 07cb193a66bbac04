"""Checking the input rasters against the output grid once, before any region is computed."""

from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds

from risk_model.grid import GridSpec
from risk_model.inputs import BURN_PROBABILITY_CRS, WIND_BANDS, InputError, InputSet, _grid_crs, _open, on_grid


def _covers(src: DatasetReader, grid: GridSpec) -> bool:
    """Whether the source's extent holds the whole grid (to half a source pixel)."""
    rows, cols = slice(0, grid.shape[0]), slice(0, grid.shape[1])
    bounds = transform_bounds(_grid_crs(grid), src.crs, *grid.bounds(rows, cols), densify_pts=21)
    left, bottom, right, top = src.bounds
    if bottom > top:  # a south-up source reports its bounds upside down
        bottom, top = top, bottom
    tol_x, tol_y = abs(src.transform.a) / 2, abs(src.transform.e) / 2
    return bool(
        bounds[0] >= left - tol_x
        and bounds[2] <= right + tol_x
        and bounds[1] >= bottom - tol_y
        and bounds[3] <= top + tol_y
    )


def validate_inputs(inputs: InputSet, grid: GridSpec) -> None:
    """Check that the inputs exist and fit the output grid, before any region is computed.

    Parameters
    ----------
    inputs
        The input locations.
    grid
        The output grid.

    Raises
    ------
    InputError
        Naming the file, what is wrong and what to do: a file that cannot be opened, a wrong
        band count, burn probability not in EPSG:5070, conditional risk not on the output
        grid's CRS and pixel grid, a wind raster without a CRS, or an extent that does not
        cover the grid.
    """
    checks: tuple[tuple[str, str, int], ...] = (
        ("burn_probability", inputs.burn_probability, 1),
        ("conditional_risk", inputs.conditional_risk, 1),
        ("wind_direction", inputs.wind_direction, WIND_BANDS),
    )
    for role, path, bands in checks:
        try:
            src = _open(path)
        except RasterioIOError as exc:
            raise InputError(
                f"{role} input {path} cannot be opened ({exc}): check that the file exists "
                f"(for a bucket URL, also the credentials)"
            ) from exc
        with src:
            if src.count != bands:
                raise InputError(
                    f"{role} input {path} has {src.count} band(s), expected {bands}: point {role} at the right raster"
                )
            if src.crs is None:
                raise InputError(f"{role} input {path} has no CRS: assign one (e.g. gdal_edit.py -a_srs)")
            if role == "burn_probability":
                try:
                    expected = CRS.from_user_input(BURN_PROBABILITY_CRS)
                except CRSError as exc:  # only if PROJ's database is broken
                    raise InputError(f"cannot build {BURN_PROBABILITY_CRS}: {exc}") from exc
                if src.crs != expected:
                    raise InputError(
                        f"burn_probability input {path} is in {src.crs.to_string()}, expected the "
                        f"projected {BURN_PROBABILITY_CRS}: reproject it or use the 270 m EPSG:5070 product"
                    )
            if role == "conditional_risk" and not on_grid(src, grid):
                raise InputError(
                    f"conditional_risk input {path} ({src.crs.to_string()}, pixel "
                    f"{src.transform.a:.9g} x {abs(src.transform.e):.9g}) is not on the output grid "
                    f"{grid.name!r} ({grid.crs}, pixel {grid.transform[0]:.9g} x {grid.transform[4]:.9g}, "
                    f"origin {grid.transform[2]}, {grid.transform[5]}): warp it onto that grid first"
                )
            if not _covers(src, grid):
                raise InputError(
                    f"{role} input {path} (bounds {tuple(round(v, 6) for v in src.bounds)} in "
                    f"{src.crs.to_string()}) does not cover grid {grid.name!r} (bounds "
                    f"{grid.bounds(slice(0, grid.shape[0]), slice(0, grid.shape[1]))} in {grid.crs}): "
                    f"use a raster that covers the whole grid"
                )

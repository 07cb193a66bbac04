"""Checking the input rasters against the output grid once, before any region is computed.

Besides headers (band count, CRS, pixel grid, extent), :func:`validate_input` reads the first
and the last block of each raster: a truncated or corrupt GeoTIFF usually opens (its header is
at the start) and fails only when a block is read, which would otherwise be minutes into a
build, in every region run separately. GDAL writes blocks in order, so a truncated file loses
its last block first.
"""

from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from risk_model.grid import GridSpec
from risk_model.inputs import BURN_PROBABILITY_CRS, WIND_BANDS, InputError, InputSet, _grid_crs, _open, on_grid

#: The input roles, in the order they are checked, and their band counts.
INPUT_BANDS: dict[str, int] = {"burn_probability": 1, "conditional_risk": 1, "wind_direction": WIND_BANDS}


def gdal_reason(exc: BaseException) -> str:
    """GDAL's own words for a rasterio error: its message and the GDAL errors chained under it.

    rasterio reports a failed block read as "Read failed. See previous exception for details."
    and chains GDAL's errors (``CPLE_*``) as causes; the user needs those.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip().rstrip(".")
        if text and "See previous exception" not in text and not any(text in part for part in parts):
            parts.append(text)
        current = current.__cause__ or current.__context__
    return "; ".join(parts) or type(exc).__name__


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


def _edge_blocks(src: DatasetReader) -> list[tuple[str, Window]]:
    """The first and the last block of the raster (one, if it has a single block)."""
    block_rows, block_cols = src.block_shapes[0]
    last_row = (src.height - 1) // block_rows * block_rows
    last_col = (src.width - 1) // block_cols * block_cols
    first = Window(0, 0, min(block_cols, src.width), min(block_rows, src.height))
    last = Window(last_col, last_row, src.width - last_col, src.height - last_row)
    return [("first", first)] if (last_row, last_col) == (0, 0) else [("first", first), ("last", last)]


def _check_readable(role: str, path: str, src: DatasetReader) -> None:
    """Read the first and last block of every band, so a truncated or corrupt file fails now."""
    for which, window in _edge_blocks(src):
        try:
            src.read(window=window)
        except (RasterioError, CPLE_BaseError) as exc:
            raise InputError(
                f"{role} input {path} is truncated or corrupt: GDAL cannot read its {which} block "
                f"({gdal_reason(exc)}): replace it with a complete copy (download or generate it again)"
            ) from exc


def validate_input(role: str, path: str, grid: GridSpec) -> None:
    """Check that one input exists, is readable and fits the output grid.

    Parameters
    ----------
    role
        ``burn_probability``, ``conditional_risk`` or ``wind_direction``.
    path
        Local path or ``gs://`` / ``s3://`` URL.
    grid
        The output grid.

    Raises
    ------
    InputError
        Naming the file, what is wrong and what to do (see :func:`validate_inputs`).
    """
    bands = INPUT_BANDS[role]
    try:
        src = _open(path)
    except (RasterioError, CPLE_BaseError) as exc:
        raise InputError(
            f"{role} input {path} cannot be opened ({gdal_reason(exc)}): check that the file exists and is a "
            f"GeoTIFF (for a bucket URL, also the credentials)"
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
        _check_readable(role, path, src)


def input_problems(inputs: InputSet, grid: GridSpec) -> list[InputError]:
    """Every input's problem (at most one each, in :data:`INPUT_BANDS` order); empty: all fit."""
    problems = []
    for role in INPUT_BANDS:
        try:
            validate_input(role, str(getattr(inputs, role)), grid)
        except InputError as err:
            problems.append(err)
    return problems


def validate_inputs(inputs: InputSet, grid: GridSpec) -> None:
    """Check that the inputs exist, are readable and fit the output grid, before any region is computed.

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
        grid's CRS and pixel grid, a wind raster without a CRS, an extent that does not
        cover the grid, or a block GDAL cannot read (a truncated or corrupt file). The first
        problem found, in :data:`INPUT_BANDS` order.
    """
    for role in INPUT_BANDS:
        validate_input(role, str(getattr(inputs, role)), grid)

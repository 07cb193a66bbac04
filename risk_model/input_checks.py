"""Checking the input rasters against the output grid once, before any region is computed.

Inputs are taken in their native form (any CRS, resolution and extent: each region's window is
warped from the source's own pixels), so nothing here asks a raster to be on the output grid or
in one particular CRS. What is checked is what can actually be wrong with a raster as a user has
it, each with what to do about it: the band count; a CRS is present; the coordinates are
plausible for that CRS (:func:`_check_crs_plausible`: degrees under a geographic CRS, not degrees
under a projected one, which catches a raster labelled with the wrong CRS); the data type
(:data:`FLOAT_ONLY`) and no scale or offset the model would not apply; the no-data value is not a
valid value; the extent covers the grid (the grid's bounds densified into the source's CRS).

Besides headers, :func:`validate_input` reads the first
and the last block of each raster: a truncated or corrupt GeoTIFF usually opens (its header is
at the start) and fails only when a block is read, which would otherwise be minutes into a
build, in every region run separately. GDAL writes blocks in order, so a truncated file loses
its last block first.

It then checks the values (:data:`VALUE_RANGES`; the wind shares of a pixel must sum to 1 within
:data:`WIND_SHARE_SUM_TOL`): of the whole raster when it is small (up to
:data:`FULL_VALUE_CHECK` values), otherwise of :data:`VALUE_CHECK_BLOCKS` blocks spread evenly
over it, the first and the last included. No-data and NaN pixels are not data and are skipped.
"""

import numpy as np
import numpy.typing as npt
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from risk_model.grid import GridSpec
from risk_model.input_set import InputError, InputSet
from risk_model.inputs import WIND_BANDS
from risk_model.raster_windows import grid_crs, open_raster
from risk_model.wind_files import check_hourly_dataset

#: The input roles, in the order they are checked, and their band counts.
INPUT_BANDS: dict[str, int] = {"burn_probability": 1, "conditional_risk": 1, "wind_direction": WIND_BANDS}

#: Where an input holds data (no-data and NaN excluded), its values must lie in ``[low, high]``:
#: role to ``(low, high, what the values are)``. Infinities are out of every range.
VALUE_RANGES: dict[str, tuple[float, float, str]] = {
    "burn_probability": (0.0, 1.0, "an annual burn probability"),
    "conditional_risk": (0.0, 100.0, "conditional risk to potential structures"),
    "wind_direction": (0.0, 1.0, "shares of the fire-weather wind directions"),
}
#: How far the 8 wind shares of a pixel (all 8 holding data) may sum from 1. The model
#: renormalises them (:func:`risk_model.wind_inputs.read_wind_shares`), which absorbs float32 rounding
#: (about 1e-6) and shares rounded to three decimals (at most 0.004); a sum further off means
#: the raster is not shares at all (percentages, counts, a band missing or repeated).
WIND_SHARE_SUM_TOL = 0.01
#: Rasters with at most this many values (pixels x bands) have every value checked; larger ones
#: (production rasters, billions of pixels) are checked on a sample of blocks.
FULL_VALUE_CHECK = 16 * 2**20
#: Blocks read for the value check of a large raster, evenly spread, first and last included.
VALUE_CHECK_BLOCKS = 32
#: Roles whose values are fractions of 1 (a probability, shares): an integer raster cannot hold
#: them, so one is a scaled product (e.g. 0-10000) or a class map, not the values the model
#: needs. Conditional risk (0-100) may be stored as integers.
FLOAT_ONLY = frozenset({"burn_probability", "wind_direction"})


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
    bounds = transform_bounds(grid_crs(grid), src.crs, *grid.bounds(rows, cols), densify_pts=21)
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


def _check_crs_plausible(role: str, path: str, src: DatasetReader) -> None:
    """Refuse coordinates that cannot be in the units of the raster's CRS (a CRS label that is wrong).

    A geographic CRS means degrees: bounds beyond -180..360 (0..360 longitudes are valid) or
    -90..90 are metres, and the raster was labelled with a geographic CRS it was not made in.
    Under a projected CRS (metres or feet), bounds that all fit in +-180 x +-90 are degrees: such
    a raster would span at most 360 m, where an input has to cover a whole grid of kilometres.
    Either way, the coverage check would be meaningless (metres read as degrees cover the globe)
    and every window would be warped from the wrong place.
    """
    left, bottom, right, top = src.bounds
    bottom, top = min(bottom, top), max(bottom, top)
    kind = src.crs.to_string()
    if src.crs.is_geographic:
        if left < -180.5 or right > 360.5 or bottom < -90.5 or top > 90.5:
            raise InputError(
                f"{role} input {path} is labelled {kind}, a geographic CRS (degrees), but its bounds "
                f"{tuple(round(v, 3) for v in src.bounds)} are not longitudes and latitudes: the raster is "
                f"projected and its CRS label is wrong; assign the CRS it was made in (gdal_edit.py -a_srs, "
                f"e.g. EPSG:5070 for the USFS products)"
            )
    elif left >= -180.5 and right <= 180.5 and bottom >= -90.5 and top <= 90.5:
        raise InputError(
            f"{role} input {path} is labelled {kind}, a projected CRS, but its bounds "
            f"{tuple(round(v, 6) for v in src.bounds)} look like longitudes and latitudes: "
            f"assign the geographic CRS it was made in (gdal_edit.py -a_srs EPSG:4326)"
        )


def _check_dtype(role: str, path: str, src: DatasetReader) -> None:
    """Refuse data types the values cannot be in, and a scale or offset the model would ignore."""
    for band, dtype in enumerate(src.dtypes, start=1):
        kind = np.dtype(dtype).kind
        if kind not in "fiu":  # complex, or anything else GDAL may hand back
            raise InputError(f"{role} input {path} band {band} is {dtype}, not a real number type: write it as float32")
        if role in FLOAT_ONLY and kind != "f":
            low, high, what = VALUE_RANGES[role]
            raise InputError(
                f"{role} input {path} band {band} is {dtype}: {what} lies between {low:g} and {high:g}, "
                f"which an integer type cannot hold (a scaled product or a class map?): convert it to "
                f"float32 holding the values themselves (for a scaled product, divide by its scale factor)"
            )
    if any(scale != 1 for scale in src.scales) or any(offset != 0 for offset in src.offsets):
        raise InputError(
            f"{role} input {path} declares scale {src.scales} and offset {src.offsets}, which the model "
            f"does not apply (it reads the stored values): write the unscaled values (gdal_translate -unscale)"
        )


def _check_nodata(role: str, path: str, src: DatasetReader) -> None:
    """Refuse a no-data value that is also a valid value: every real pixel equal to it would vanish."""
    low, high, what = VALUE_RANGES[role]
    nodata = src.nodata
    if nodata is not None and not np.isnan(nodata) and low <= nodata <= high:
        hint = " (0 marks non-burnable land, which the spread depends on)" if role == "burn_probability" else ""
        raise InputError(
            f"{role} input {path} declares no-data {nodata:g}, a valid value of {what} ({low:g} to "
            f"{high:g}){hint}: pixels holding it would be read as missing; if the file marks missing pixels "
            f"with another value set no-data to that (gdal_edit.py -a_nodata), else to a value outside "
            f"{low:g} to {high:g} (e.g. -9999) that no pixel holds"
        )


def _edge_blocks(src: DatasetReader) -> list[tuple[str, Window]]:
    """The first and the last block of the raster (one, if it has a single block)."""
    block_rows, block_cols = src.block_shapes[0]
    last_row = (src.height - 1) // block_rows * block_rows
    last_col = (src.width - 1) // block_cols * block_cols
    first = Window(0, 0, min(block_cols, src.width), min(block_rows, src.height))
    last = Window(last_col, last_row, src.width - last_col, src.height - last_row)
    return [("first", first)] if (last_row, last_col) == (0, 0) else [("first", first), ("last", last)]


def _read(role: str, path: str, src: DatasetReader, which: str, window: Window) -> npt.NDArray[np.float64]:
    """Every band of ``window`` as float64, NaN where no-data.

    Raises
    ------
    InputError
        If GDAL cannot read the block (a truncated or corrupt file).
    """
    try:
        data = src.read(window=window, masked=True, out_dtype="float64")
    except (RasterioError, CPLE_BaseError) as exc:
        raise InputError(
            f"{role} input {path} is truncated or corrupt: GDAL cannot read its {which} block "
            f"({gdal_reason(exc)}): replace it with a complete copy (download or generate it again)"
        ) from exc
    filled: npt.NDArray[np.float64] = np.ma.filled(data, np.nan)
    return filled


def _check_readable(role: str, path: str, src: DatasetReader) -> None:
    """Read the first and last block of every band, so a truncated or corrupt file fails now."""
    for which, window in _edge_blocks(src):
        _read(role, path, src, which, window)


def _value_windows(src: DatasetReader) -> list[Window]:
    """The windows whose values are checked: the whole raster if small, else a sample of blocks."""
    if src.width * src.height * src.count <= FULL_VALUE_CHECK:
        return [Window(0, 0, src.width, src.height)]
    block_rows, block_cols = src.block_shapes[0]
    per_row = -(-src.width // block_cols)
    total = per_row * -(-src.height // block_rows)
    picks = sorted({round(i) for i in np.linspace(0, total - 1, min(VALUE_CHECK_BLOCKS, total))})
    windows = []
    for index in picks:
        row, col = divmod(index, per_row)
        row_off, col_off = row * block_rows, col * block_cols
        windows.append(
            Window(col_off, row_off, min(block_cols, src.width - col_off), min(block_rows, src.height - row_off))
        )
    return windows


def _where(window: Window, index: tuple[int, ...]) -> str:
    """``row R, column C`` of the raster for an index ``(row, col)`` inside ``window``."""
    return f"row {int(window.row_off) + index[-2]}, column {int(window.col_off) + index[-1]}"


def _check_values(role: str, path: str, src: DatasetReader) -> None:
    """Refuse values out of :data:`VALUE_RANGES`, and wind shares that do not sum to 1.

    Raises
    ------
    InputError
        Naming the file, how many values are wrong, their range, where the first one is, and the fix.
    """
    low, high, what = VALUE_RANGES[role]
    bad, bad_min, bad_max, first = 0, np.inf, -np.inf, ""
    off, off_min, off_max, first_off = 0, np.inf, -np.inf, ""
    sampled = ""
    windows = _value_windows(src)
    if len(windows) > 1:
        sampled = f" (in {len(windows)} blocks sampled over the raster)"
    for window in windows:
        data = _read(role, path, src, "sampled", window)
        outside = ~np.isnan(data) & ((data < low) | (data > high))
        if outside.any():
            bad += int(outside.sum())
            bad_min, bad_max = min(bad_min, float(data[outside].min())), max(bad_max, float(data[outside].max()))
            first = first or _where(window, tuple(int(i) for i in np.argwhere(outside)[0]))
        if role == "wind_direction":
            total = data.sum(axis=0)  # NaN where any band is no-data: not checked
            wrong = np.isfinite(total) & (np.abs(total - 1.0) > WIND_SHARE_SUM_TOL)
            if wrong.any():
                off += int(wrong.sum())
                off_min, off_max = min(off_min, float(total[wrong].min())), max(off_max, float(total[wrong].max()))
                first_off = first_off or _where(window, tuple(int(i) for i in np.argwhere(wrong)[0]))
    if bad:
        # A fill value with no no-data declared is the usual cause of one repeated stray value.
        fill = (
            f"; the file declares no no-data value: if {bad_min:.6g} marks missing pixels, declare it "
            f"(gdal_edit.py -a_nodata {bad_min:.6g})"
            if src.nodata is None and bad_min == bad_max
            else ""
        )
        raise InputError(
            f"{role} input {path} holds {bad} value(s) outside {low:g} to {high:g} ({what}){sampled}: "
            f"from {bad_min:.6g} to {bad_max:.6g}, the first at {first}: fix the raster (or mark those "
            f"pixels no-data) so that every value is between {low:g} and {high:g}{fill}"
        )
    if off:
        raise InputError(
            f"{role} input {path}: the {WIND_BANDS} wind-direction shares of {off} pixel(s) do not sum to 1"
            f"{sampled} (sums from {off_min:.6g} to {off_max:.6g}, tolerance {WIND_SHARE_SUM_TOL:g}), the "
            f"first at {first_off}: each pixel's shares (from N, NE, E, SE, S, SW, W, NW) must sum to 1; "
            "if they are percentages divide them by 100, and check that no band is missing or repeated"
        )


def validate_input(role: str, path: str, grid: GridSpec) -> None:
    """Check that one input exists, is readable, holds plausible values and covers the output grid.

    Any CRS and resolution are accepted: regions are warped from the source's own pixels.

    Parameters
    ----------
    role
        ``burn_probability``, ``conditional_risk``, ``wind_direction`` or ``wind_hourly`` (an
        hourly dataset: its variables, CRS and coverage, see
        :func:`risk_model.wind.check_hourly_dataset`).
    path
        Local path or ``gs://`` / ``s3://`` URL.
    grid
        The output grid.

    Raises
    ------
    InputError
        Naming the file, what is wrong and what to do (see :func:`validate_inputs`).
    """
    if role == "wind_hourly":
        check_hourly_dataset(path, grid)
        return
    bands = INPUT_BANDS[role]
    try:
        src = open_raster(path)
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
            raise InputError(
                f"{role} input {path} has no CRS: assign the one it was made in (gdal_edit.py -a_srs, "
                f"e.g. EPSG:5070 for the USFS products)"
            )
        _check_crs_plausible(role, path, src)
        _check_dtype(role, path, src)
        _check_nodata(role, path, src)
        try:
            covers = _covers(src, grid)
        except (RasterioError, CPLE_BaseError) as exc:
            # PROJ knows no operation between the two CRSs (an engineering or local CRS, a
            # custom WKT without a datum): no region could be warped from this raster.
            raise InputError(
                f"{role} input {path} is in a CRS that cannot be transformed to the grid's {grid.crs} "
                f"({gdal_reason(exc)[:200]}): reproject it to a standard CRS (e.g. gdalwarp -t_srs EPSG:5070) "
                f"or, if the label is wrong, assign the CRS it was made in (gdal_edit.py -a_srs)"
            ) from exc
        if not covers:
            raise InputError(
                f"{role} input {path} (bounds {tuple(round(v, 6) for v in src.bounds)} in "
                f"{src.crs.to_string()}) does not cover grid {grid.name!r} (bounds "
                f"{grid.bounds(slice(0, grid.shape[0]), slice(0, grid.shape[1]))} in {grid.crs}): "
                f"use a raster that covers the whole grid"
            )
        _check_readable(role, path, src)
        _check_values(role, path, src)


def input_problems(inputs: InputSet, grid: GridSpec) -> list[InputError]:
    """Every input's problem (at most one each, in the order of ``inputs.roles``); empty: all fit."""
    problems = []
    for role in inputs.roles:
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
        band count, no CRS, coordinates that cannot be in the CRS's units (a wrong CRS label), a
        data type that cannot hold the values (or a scale or offset), a no-data value that is
        also a valid value, an extent that does not cover the grid, a block GDAL cannot read (a
        truncated or corrupt file), values out of :data:`VALUE_RANGES` or wind shares that do
        not sum to 1; for an hourly wind dataset, what
        :func:`risk_model.wind.check_hourly_dataset` checks. The first problem found, in the
        order of ``inputs.roles``.
    """
    for role in inputs.roles:
        validate_input(role, str(getattr(inputs, role)), grid)

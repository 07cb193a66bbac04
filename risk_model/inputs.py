"""The input rasters over a region's window: any one source, the conditional risk, and the burn
probability gap-filled at its own resolution.

Every input is read in its native form and warped onto the output grid with the region's halo
(:mod:`risk_model.raster_windows`, which also says how arrays are oriented and masked). The
arrays are float64 unless a dtype is asked for; the bands of
:class:`~risk_model.wind_inputs.WindShareBands` are float32 unless asked otherwise.
"""

import numpy as np
from rasterio.errors import RasterioIOError

from risk_model.grid import GridSpec
from risk_model.input_set import InputError
from risk_model.raster_windows import (
    SOURCE_MARGIN_PX,
    FloatArray,
    Floats,
    ResamplingName,
    expanded_window,
    on_grid,
    open_raster,
    read_env,
    read_on_grid,
    read_source_window,
    reproject_to_grid,
    source_window,
    warp_into,
)
from risk_model.science import gap_fill

WIND_BANDS = 8
#: Resampling of the conditional risk onto the output grid. The reference (carbonplan/ocr) warps
#: the USFS 30 m EPSG:5070 raster to its 30 m EPSG:4326 grid with odc-geo's ``xr_reproject`` at its
#: default, nearest (``ocr/input_datasets/tensor/usfs_scott_2024.py``). Nearest also keeps every
#: value one the publisher wrote and the coast (no-data) crisp. The model parameters have no
#: setting for it, unlike burn probability and wind, so it is a constant.
CONDITIONAL_RISK_RESAMPLING: ResamplingName = "nearest"


def read_window(
    path: str,
    grid: GridSpec,
    rows: slice,
    cols: slice,
    halo: int = 0,
    resampling: ResamplingName = "nearest",
    *,
    dtype: str = "float64",
) -> Floats:
    """Read a source over a window of the output grid, grown by a halo.

    A source already on the output grid (same CRS and pixel grid) is read with a rasterio
    window; any other source is warped with :func:`rasterio.warp.reproject` onto the
    window's pixels (exact transformer, so values do not depend on the window).

    Parameters
    ----------
    path
        Local path or ``gs://`` / ``s3://`` URL of the source raster.
    grid
        The output grid.
    rows, cols
        The window of the grid (a region's ``rows`` and ``cols``).
    halo
        Pixels to add on every side. The grown window may extend past the grid: there it
        holds whatever the source holds, or NaN outside the source.
    resampling
        Resampling used when the source has to be warped.
    dtype
        dtype of the result, float64 or float32. The bands are read (or warped) straight into
        it, so a float32 read of a float32 source never holds a float64 copy.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` for a one-band source and ``(bands, ny, nx)`` otherwise, C-contiguous, with
        row 0 at the south; NaN where the band's own no-data value (or mask) says so, and
        outside the source.

    Raises
    ------
    InputError
        If the source cannot be opened.
    """
    rows, cols = expanded_window(grid, rows, cols, halo)
    try:
        with read_env(), open_raster(path) as src:
            if on_grid(src, grid):
                out = read_on_grid(src, grid, rows, cols, dtype=dtype)
            else:
                out = reproject_to_grid(src, grid, rows, cols, resampling, dtype=dtype)
    except RasterioIOError as exc:
        raise InputError(f"cannot read input raster {path}: {exc}") from exc
    return out[0] if out.shape[0] == 1 else out


def read_conditional_risk(
    path: str, grid: GridSpec, rows: slice, cols: slice, halo: int = 0, *, dtype: str = "float64"
) -> Floats:
    """Read the conditional risk over a window, warped by :data:`CONDITIONAL_RISK_RESAMPLING`.

    Parameters
    ----------
    path, grid, rows, cols, halo, dtype
        As for :func:`read_window`. A region reads it in its working dtype (float32): the
        published raster is float32, so nothing is lost and no float64 window is held.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` of ``dtype``, row 0 at the south; NaN where the source is no-data or absent.

    Raises
    ------
    InputError
        If the source cannot be opened or does not have one band.
    """
    values = read_window(path, grid, rows, cols, halo, CONDITIONAL_RISK_RESAMPLING, dtype=dtype)
    if values.ndim != 2:
        raise InputError(
            f"conditional-risk input {path} has {values.shape[0]} bands, expected 1: point it at the "
            "conditional risk to potential structures raster"
        )
    return values


def read_burn_probability(
    path: str,
    grid: GridSpec,
    rows: slice,
    cols: slice,
    halo: int = 0,
    resampling: ResamplingName = "nearest",
    *,
    gap_fill_window_px: int | None = 3,
    dtype: str = "float64",
) -> Floats:
    """Read burn probability over a window, gap-filled at the source's own resolution.

    As the reference does: isolated holes are filled (:func:`risk_model.science.gap_fill`) on
    the source's pixels (270 m for the USFS product), then the filled source is resampled to
    the window (nearest by default, which keeps the 0 mask). The part of the source read is
    the window's footprint plus a margin of source pixels, aligned to the source's own pixel
    grid, so a pixel's value does not depend on the window it is read in.

    Parameters
    ----------
    path, grid, rows, cols, halo, resampling
        As for :func:`read_window`.
    gap_fill_window_px
        Side of the gap fill's averaging window (odd), or None to read without filling.
    dtype
        dtype of the result. The gap fill runs in float64 on the source's pixels whatever it
        is; the filled values are warped straight into ``dtype`` (rounded once, as
        ``astype`` would), so no float64 window is held.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` of ``dtype``, C-contiguous, row 0 at the south; NaN where the source is
        no-data or absent.

    Raises
    ------
    InputError
        If the source cannot be opened or has no CRS.
    """
    rows, cols = expanded_window(grid, rows, cols, halo)
    out: Floats
    try:
        with read_env(), open_raster(path) as src:
            if on_grid(src, grid):
                # The source's pixels are the grid's: fill with a margin, then crop it off.
                m = SOURCE_MARGIN_PX
                outer = (slice(rows.start - m, rows.stop + m), slice(cols.start - m, cols.stop + m))
                filled: FloatArray = np.asarray(read_on_grid(src, grid, *outer)[0], dtype=np.float64)
                if gap_fill_window_px is not None:
                    filled = gap_fill(filled, window_px=gap_fill_window_px)
                out = filled[m:-m, m:-m].astype(dtype)
            else:
                if src.crs is None:
                    raise InputError(
                        f"burn-probability input {path} has no CRS: set one (e.g. with gdal_edit.py -a_srs)"
                    )
                window = source_window(src, grid, rows, cols)
                source: FloatArray = np.asarray(read_source_window(src, window), dtype=np.float64)
                if gap_fill_window_px is not None:
                    source = gap_fill(source, window_px=gap_fill_window_px)
                out = np.empty((rows.stop - rows.start, cols.stop - cols.start), dtype=dtype)
                warp_into(
                    out,
                    grid,
                    rows,
                    cols,
                    resampling,
                    source=source,
                    src_transform=src.window_transform(window),
                    src_crs=src.crs,
                    src_nodata=np.nan,
                )
    except RasterioIOError as exc:
        raise InputError(f"cannot read input raster {path}: {exc}") from exc
    return out

"""Reading a window of the output grid from any raster: read on the grid, or warped onto it.

The machinery under every input read (:mod:`risk_model.inputs`, :mod:`risk_model.wind_inputs`).
A source is read in its native form: its CRS, pixel size and extent come from the file, and a
window is warped from the source's own pixels onto the output grid, so no input has to be
prepared on the output grid first. A source that happens to be on the output grid is read with
a plain rasterio window instead.

Rasters are named by a path or URL string. Local paths and ``gs://`` / ``s3://`` URLs all go
through the same :func:`rasterio.open` call; rasterio maps the URL schemes to GDAL's
``/vsigs/`` and ``/vsis3/`` file systems, and credentials come from GDAL's usual
environment variables.

Every array returned here is in the output grid's orientation: row 0 is the southern edge
(latitude ascending), although GeoTIFFs are normally stored north-up, and C-contiguous (a
north-up source's rows are flipped as they are copied in). Every band is masked with its own
no-data value.
"""

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from risk_model.grid import GridSpec

FloatArray = npt.NDArray[np.float64]
Floats = npt.NDArray[np.floating[Any]]
ResamplingName = Literal["nearest", "bilinear", "cubic", "average"]
# Pixel grids agree when sizes match to this relative tolerance and origins to this
# fraction of a pixel: JSON and GeoTIFF round-trip coefficients to about 1e-15.
_SIZE_RTOL = 1e-9
_ALIGN_TOL = 1e-6


def expanded_window(grid: GridSpec, rows: slice, cols: slice, halo: int) -> tuple[slice, slice]:
    """Row and column slices of ``rows`` x ``cols`` grown by ``halo`` on every side.

    The result may extend past the grid (negative starts, stops past the shape).
    """
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    return slice(rows.start - halo, rows.stop + halo), slice(cols.start - halo, cols.stop + halo)


def open_raster(path: str) -> DatasetReader:
    dataset: DatasetReader = rasterio.open(path)
    return dataset


#: GDAL's block cache (MB) while a window is read. GDAL's default is 5 % of the machine's memory
#: (1.2 GB on a 24 GB machine), so a production window's warp kept every decoded source tile it
#: touched, ~200 MB of conditional risk, and the process kept that memory after the dataset
#: was closed: the region's peak grew by it. The strips of a warp revisit only the tiles of the
#: previous strip, a few MB: 64 MB keeps the cost of a read unchanged (benchmarks/profile_region_steps.py).
READ_CACHE_MB = 64


def read_env() -> rasterio.Env:
    """The GDAL settings every window read runs in: the block cache bounded to :data:`READ_CACHE_MB`.

    Options of an enclosing :class:`rasterio.Env` (credentials, for example) stay in force.
    """
    return rasterio.Env(GDAL_CACHEMAX=READ_CACHE_MB)


def grid_crs(grid: GridSpec) -> CRS:
    return CRS.from_user_input(grid.crs)


def on_grid(src: DatasetReader, grid: GridSpec) -> bool:
    """Whether ``src`` shares the grid's CRS and pixel grid (sizes and aligned origin).

    The source may be stored north-up or south-up and may cover any extent.
    """
    if src.crs is None or src.crs != grid_crs(grid):
        return False
    t: Affine = src.transform
    a, e = grid.transform[0], grid.transform[4]
    if t.b != 0 or t.d != 0:
        return False
    if not (math.isclose(t.a, a, rel_tol=_SIZE_RTOL) and math.isclose(abs(t.e), e, rel_tol=_SIZE_RTOL)):
        return False
    col_shift = (t.c - grid.transform[2]) / a
    row_shift = (t.f - grid.transform[5]) / e
    return abs(col_shift - round(col_shift)) < _ALIGN_TOL and abs(row_shift - round(row_shift)) < _ALIGN_TOL


def read_on_grid(
    src: DatasetReader,
    grid: GridSpec,
    rows: slice,
    cols: slice,
    *,
    indexes: list[int] | None = None,
    dtype: str = "float64",
) -> Floats:
    """Windowed read of an on-grid source's bands ``indexes`` (default all); NaN outside it and at no-data.

    Each band is masked by its own GDAL mask band (its own no-data value, or the dataset's
    mask), so a band-specific no-data value is honoured. The result is C-contiguous with row 0
    at the south: a north-up source's rows are flipped while they are copied in, not after.
    """
    ny, nx = rows.stop - rows.start, cols.stop - cols.start
    west, south, east, north = grid.bounds(rows, cols)
    window = from_bounds(west, south, east, north, transform=src.transform)
    # from_bounds returns fractional offsets only through float rounding: the grids are aligned.
    col_off, row_off = round(window.col_off), round(window.row_off)
    indexes = indexes or list(range(1, src.count + 1))
    out = np.full((len(indexes), ny, nx), np.nan, dtype=dtype)
    c0, c1 = max(col_off, 0), min(col_off + nx, src.width)
    r0, r1 = max(row_off, 0), min(row_off + ny, src.height)
    if c0 < c1 and r0 < r1:
        data = src.read(indexes, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True, out_dtype=dtype)
        # The window was cut in the source's row order; a north-up source has row 0 at the top.
        if src.transform.e < 0:
            out[:, ny - (r1 - row_off) : ny - (r0 - row_off), c0 - col_off : c1 - col_off] = data.filled(np.nan)[
                :, ::-1
            ]
        else:
            out[:, r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = data.filled(np.nan)
    return out


#: Rows of the output warped per :func:`rasterio.warp.reproject` call. Each strip is warped into
#: a small buffer and flipped into the south-up result, so no full-size north-up array or copy
#: exists beside the result (a production window is 28 Mpx: 108 MiB per float32 band).
_WARP_STRIP_ROWS = 512


def reproject_to_grid(
    src: DatasetReader,
    grid: GridSpec,
    rows: slice,
    cols: slice,
    resampling: ResamplingName,
    *,
    indexes: list[int] | None = None,
    dtype: str = "float64",
) -> Floats:
    """Warp a source's bands ``indexes`` (default all) onto the window's pixels; NaN outside it and at no-data.

    Each band is warped on its own with its own no-data value (``src.nodatavals``): a
    multi-band warp would apply band 1's value to every band and, with rasterio's
    ``UNIFIED_SRC_NODATA=YES``, treat a pixel as no-data only where *every* band is, copying
    one band's no-data value into the output as if it were data. The window is warped in
    strips (:func:`warp_into`); the result is C-contiguous with row 0 at the south.
    """
    ny, nx = rows.stop - rows.start, cols.stop - cols.start
    indexes = indexes or list(range(1, src.count + 1))
    out = np.empty((len(indexes), ny, nx), dtype=dtype)
    for k, index in enumerate(indexes):
        warp_into(
            out[k], grid, rows, cols, resampling, source=rasterio.band(src, index), src_nodata=src.nodatavals[index - 1]
        )
    return out


def warp_into(
    out: npt.NDArray[Any],
    grid: GridSpec,
    rows: slice,
    cols: slice,
    resampling: ResamplingName,
    *,
    fill: float = np.nan,
    **source: Any,
) -> None:
    """Warp one band (``source``: :func:`rasterio.warp.reproject`'s source arguments) into ``out``, by strips.

    ``out`` is the window's ``(ny, nx)`` array, row 0 at the south; ``fill`` (NaN by default)
    is written where no source pixel lands, and is the destination's no-data value. Each strip of
    :data:`_WARP_STRIP_ROWS` rows is warped onto its north-up twin (GDAL's usual orientation)
    in a small buffer and flipped into place; it is placed with :meth:`GridSpec.bounds` as a
    region window of those rows would be, so a pixel's value does not depend on the strip.
    """
    ny, nx = out.shape
    a, e = grid.transform[0], grid.transform[4]
    crs = grid_crs(grid)
    strip = np.empty((min(_WARP_STRIP_ROWS, ny), nx), dtype=out.dtype)
    for start in range(0, ny, _WARP_STRIP_ROWS):
        stop = min(start + _WARP_STRIP_ROWS, ny)
        west, _, _, north = grid.bounds(slice(rows.start + start, rows.start + stop), cols)
        buffer = strip[: stop - start]
        buffer.fill(fill)
        reproject(
            destination=buffer,
            dst_transform=Affine(a, 0.0, west, 0.0, -e, north),
            dst_crs=crs,
            dst_nodata=fill,
            resampling=Resampling[resampling],
            # The approximate transformer interpolates coordinates along each output line, so a
            # pixel's value would depend on the window it was warped in; exact keeps regions
            # equal to a whole-domain warp.
            tolerance=0.0,
            **source,
        )
        out[start:stop] = buffer[::-1]


#: Source pixels read around the part of a source a window needs: one for the gap fill's
# neighbourhood of the outermost needed pixel, the rest for resampling kernels (cubic reaches
# two pixels) and for curved edges of a warped window's footprint.
SOURCE_MARGIN_PX = 4


def source_window(src: DatasetReader, grid: GridSpec, rows: slice, cols: slice) -> Window:
    """The part of ``src`` a warp of the window ``rows`` x ``cols`` reads, in whole source pixels.

    The window's footprint in the source's CRS plus :data:`SOURCE_MARGIN_PX` source pixels,
    with integer offsets on the source's own pixel grid (it may extend past the source).
    """
    west, south, east, north = transform_bounds(grid_crs(grid), src.crs, *grid.bounds(rows, cols), densify_pts=21)
    box = from_bounds(west, south, east, north, transform=src.transform)
    margin = SOURCE_MARGIN_PX
    col0 = math.floor(min(box.col_off, box.col_off + box.width)) - margin
    row0 = math.floor(min(box.row_off, box.row_off + box.height)) - margin
    col1 = math.ceil(max(box.col_off, box.col_off + box.width)) + margin
    row1 = math.ceil(max(box.row_off, box.row_off + box.height)) + margin
    return Window(col0, row0, col1 - col0, row1 - row0)


def read_source_window(src: DatasetReader, window: Window, *, index: int = 1, dtype: str = "float64") -> Floats:
    """Band ``index`` of ``src`` over ``window`` (which may extend past it), NaN outside and at its no-data."""
    out = np.full((int(window.height), int(window.width)), np.nan, dtype=dtype)
    col_off, row_off = int(window.col_off), int(window.row_off)
    c0, c1 = max(col_off, 0), min(col_off + int(window.width), src.width)
    r0, r1 = max(row_off, 0), min(row_off + int(window.height), src.height)
    if c0 < c1 and r0 < r1:
        data = src.read(index, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True, out_dtype=dtype)
        out[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = data.filled(np.nan)
    return out

"""Reading the 8 wind-direction share bands over a region's window: all at once, or one band at a time.

The reading machinery (windowed reads, warps) is :mod:`risk_model.raster_windows`.
"""

from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReader

from risk_model.grid import GridSpec
from risk_model.input_set import InputError
from risk_model.inputs import WIND_BANDS, read_window
from risk_model.raster_windows import (
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

#: Rows per gather of :class:`NearestIndex` (numpy turns a small-integer index into ``intp``
#: first: 8 bytes per pixel for the whole window at once, ~20 MB per strip of 512 rows).
_GATHER_ROWS = 512


class NearestIndex:
    """Which source pixel each pixel of a window takes under nearest resampling: warped once, for every band.

    GDAL's nearest warp of a band copies, to each output pixel, the value of the source pixel
    under its centre (no-data stays no-data). Which pixel that is depends only on the two
    grids, not on the band: so the source's pixel *numbers* are warped once (nearest, exact
    transformer, the same strips as :func:`risk_model.raster_windows.warp_into` uses for any band) and
    each band is then a gather of its values by those numbers, which gives the pixels of a
    per-band warp at a fraction of its cost (a production window's exact transformer costs
    ~1 s per band; the gather ~0.1 s). ``tests/test_inputs.py`` checks the equality.

    Parameters
    ----------
    src
        The open source (not on the output grid).
    grid, rows, cols
        The output grid and the window (halo included).
    """

    def __init__(self, src: DatasetReader, grid: GridSpec, rows: slice, cols: slice) -> None:
        self.window = source_window(src, grid, rows, cols)
        self.size = int(self.window.height) * int(self.window.width)
        # The smallest unsigned type holding every pixel number and one more, the "no source
        # pixel" mark (the gather reads it from a NaN appended to the band).
        dtype = next(t for t in (np.uint16, np.uint32, np.uint64) if self.size < np.iinfo(t).max)
        numbers = np.arange(self.size, dtype=dtype).reshape(int(self.window.height), int(self.window.width))
        self.index: npt.NDArray[Any] = np.empty((rows.stop - rows.start, cols.stop - cols.start), dtype=dtype)
        warp_into(
            self.index,
            grid,
            rows,
            cols,
            "nearest",
            fill=self.size,
            source=numbers,
            src_transform=src.window_transform(self.window),
            src_crs=src.crs,
            src_nodata=None,
        )

    def gather(self, src: DatasetReader, index: int, dtype: str) -> Floats:
        """Band ``index`` (1-based) of ``src`` on the window: ``(ny, nx)``, row 0 south, NaN at its no-data."""
        values = np.empty(self.size + 1, dtype=dtype)
        values[: self.size] = read_source_window(src, self.window, index=index, dtype=dtype).ravel()
        values[self.size] = np.nan
        out = np.empty(self.index.shape, dtype=dtype)
        for start in range(0, out.shape[0], _GATHER_ROWS):
            np.take(values, self.index[start : start + _GATHER_ROWS], out=out[start : start + _GATHER_ROWS])
        return out


def read_wind_shares(
    path: str,
    grid: GridSpec,
    rows: slice,
    cols: slice,
    halo: int = 0,
    resampling: ResamplingName = "nearest",
) -> FloatArray:
    """Read the 8 wind-direction shares and renormalise them to sum to 1 per pixel.

    Resampling a coarse share raster mixes neighbouring pixels whose shares each sum to 1,
    so the sum stays close to 1 but not exactly; dividing by it restores the distribution.
    Pixels whose shares are missing or sum to 0 are NaN.

    Parameters
    ----------
    path, grid, rows, cols, halo, resampling
        As for :func:`read_window`.

    Returns
    -------
    numpy.ndarray
        ``(8, ny, nx)`` float64.

    Raises
    ------
    InputError
        If the source cannot be opened or does not have 8 bands.
    """
    shares: FloatArray = np.asarray(read_window(path, grid, rows, cols, halo, resampling), dtype=np.float64)
    if shares.ndim != 3 or shares.shape[0] != WIND_BANDS:
        raise wind_band_count_error(path, 1 if shares.ndim == 2 else shares.shape[0])
    total = shares.sum(axis=0)
    valid = np.isfinite(total) & (total > 0)
    # In place: a production window's 8 float64 bands are ~1.8 GB.
    shares /= np.where(valid, total, 1.0)
    shares[:, ~valid] = np.nan
    return shares


def wind_band_count_error(path: str, count: int) -> InputError:
    return InputError(
        f"wind-direction input {path} has {count} band(s), "
        f"expected {WIND_BANDS} (shares from N, NE, E, SE, S, SW, W, NW)"
    )


class WindShareBands:
    """The 8 wind-direction share bands over a window, each read when it is indexed.

    The same pixels as :func:`read_wind_shares` without holding the 8 bands at once: a
    production window's bands are 1.8 GB in float64, one float32 band 0.11 GB. The bands are
    *not* renormalised: :func:`risk_model.science.wind_informed_risk` does that, accumulating
    their sum as it goes (the sum needs every band, which this reader never holds together).
    Each indexing reads (or warps) the band again, so read each band once. With nearest
    resampling (the default) off the output grid, the pixel mapping is warped once
    (:class:`NearestIndex`) and each band is gathered through it.

    Parameters
    ----------
    path, grid, rows, cols, halo, resampling
        As for :func:`read_window`.
    dtype
        dtype of the bands returned.

    Raises
    ------
    InputError
        If the source cannot be opened or does not have 8 bands (checked when constructed).
    """

    def __init__(
        self,
        path: str,
        grid: GridSpec,
        rows: slice,
        cols: slice,
        halo: int = 0,
        resampling: ResamplingName = "nearest",
        *,
        dtype: str = "float32",
    ) -> None:
        self._path, self._grid, self._resampling, self._dtype = path, grid, resampling, dtype
        self._rows, self._cols = expanded_window(grid, rows, cols, halo)
        self._nearest: NearestIndex | None = None
        try:
            with read_env(), open_raster(path) as src:
                if src.count != WIND_BANDS:
                    raise wind_band_count_error(path, src.count)
                if resampling == "nearest" and src.crs is not None and not on_grid(src, grid):
                    self._nearest = NearestIndex(src, grid, self._rows, self._cols)
        except RasterioIOError as exc:
            raise InputError(f"cannot read input raster {path}: {exc}") from exc

    def __len__(self) -> int:
        """The number of bands, 8."""
        return WIND_BANDS

    def __getitem__(self, index: int) -> Floats:
        """Band ``index`` (0 for N, ..., 7 for NW), ``(ny, nx)``, row 0 at the south; NaN where missing.

        Raises
        ------
        IndexError
            If ``index`` is not 0-7.
        InputError
            If the source cannot be read.
        """
        if not 0 <= index < WIND_BANDS:
            raise IndexError(f"wind share band {index} out of range 0-{WIND_BANDS - 1}")
        grid, rows, cols = self._grid, self._rows, self._cols
        try:
            with read_env(), open_raster(self._path) as src:
                if self._nearest is not None:
                    return self._nearest.gather(src, index + 1, self._dtype)
                if on_grid(src, grid):
                    out = read_on_grid(src, grid, rows, cols, indexes=[index + 1], dtype=self._dtype)
                else:
                    out = reproject_to_grid(
                        src, grid, rows, cols, self._resampling, indexes=[index + 1], dtype=self._dtype
                    )
        except RasterioIOError as exc:
            raise InputError(f"cannot read input raster {self._path}: {exc}") from exc
        # Already south-up and contiguous (the readers flip rows as they copy them in).
        band: Floats = out[0]
        return band

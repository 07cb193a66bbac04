"""Reading the 8 wind-direction share bands over a region's window: all at once, or one band at a time.

The reading machinery (windowed reads, warps) is :mod:`risk_model.inputs`.
"""

import numpy as np
from rasterio.errors import RasterioIOError

from risk_model.grid import GridSpec
from risk_model.input_set import InputError
from risk_model.inputs import (
    WIND_BANDS,
    FloatArray,
    Floats,
    ResamplingName,
    expanded_window,
    on_grid,
    open_raster,
    read_on_grid,
    read_window,
    reproject_to_grid,
)


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
    shares = read_window(path, grid, rows, cols, halo, resampling)
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
    Each indexing reads (or warps) the band again, so read each band once.

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
        try:
            with open_raster(path) as src:
                count = src.count
        except RasterioIOError as exc:
            raise InputError(f"cannot read input raster {path}: {exc}") from exc
        if count != WIND_BANDS:
            raise wind_band_count_error(path, count)

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
            with open_raster(self._path) as src:
                if on_grid(src, grid):
                    out = read_on_grid(src, grid, rows, cols, indexes=[index + 1], dtype=self._dtype)
                else:
                    out = reproject_to_grid(
                        src, grid, rows, cols, self._resampling, indexes=[index + 1], dtype=self._dtype
                    )
        except RasterioIOError as exc:
            raise InputError(f"cannot read input raster {self._path}: {exc}") from exc
        # Returned as the flipped (south-up) view, not copied: the model only reads a band
        # elementwise, and a contiguous copy would cost a second band's memory.
        band: Floats = out[0]
        return band

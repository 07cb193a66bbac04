"""The wind-informed wildfire-risk model: pure numpy/scipy arrays, no I/O.

The model is the reference model of carbonplan/ocr (``ocr/risks/fire.py``) with every
constant in :class:`~risk_model.params.ModelParams`; the defaults are the reference's. Steps,
with the reference behaviour first and the named options after it:

1. **Gap fill** (:func:`gap_fill`, applied by :func:`risk_model.inputs.read_burn_probability`
   at the burn probability's *source* resolution, 270 m, before it is resampled). A pixel
   without burn probability (NaN or <= 0) whose four edge neighbours all have one (> 0)
   takes the mean of its ``gap_fill_window_px`` square window, NaN left out and zeros
   (its own included) counted. The source is then resampled to the output grid by
   ``burn_probability_resampling`` (reference: nearest, which keeps the 0 mask).
2. **Directional kernels** (:func:`spread_kernels`). For each of the 8 wind directions N, NE,
   E, SE, S, SW, W, NW (the direction the wind blows *from*), a binary ellipse with
   semi-axes ``kernel_semi_major_m`` along the wind and ``kernel_semi_minor_m`` across it,
   whose centre lies ``kernel_offset_m`` *upwind* of the target pixel: the target gathers
   burn probability from upwind, so a wind from the west carries burn probability east.
   The kernels are sized in pixels from the pixel size in metres (north-south and east-west
   sizes differ on a longitude/latitude grid) and normalised to sum to 1.
3. **Position decides geometry.** The pixel size is that of the fixed latitude band a pixel
   lies in (``kernel_band_origin_deg``, ``kernel_band_deg``; see
   :func:`risk_model.compute.pixel_bands`), never that of the window being computed: a
   window spanning two bands computes each band's rows with that band's kernels
   (:class:`RowBand`), so a pixel's value is the same whichever region computes it. The
   reference sizes the kernels at each region's centre latitude; the default bands are its
   regions' rows, so pixels inside a reference region get the reference's kernels.
4. **Spread** (:func:`spread`). Per direction, ``spread_iterations`` rounds of zero-ignoring
   normalised convolution ``A <- conv(A, w) / conv(A > 0, w)`` (0 where no burning pixel is
   in reach, and where the convolved burn probability is below ``spread_clip``), starting
   from the burn probability with NaN as 0: a pixel takes the mean of the burning pixels
   that can reach it.
5. **Composite.** The 8 spread fields weighted by the per-pixel wind-direction shares
   (renormalised to sum 1), used where the burn probability is exactly 0; the burn
   probability is kept wherever it is non-zero, and NaN burn probability stays NaN (the
   reference). Where the shares are missing or all 0 the composite is NaN (reference) or,
   with ``missing_wind: equal_shares``, the mean of the 8 spread fields.
6. **Blur** (:func:`blur`). The reference's Gaussian: a ``blur_kernel_px`` square kernel
   (17) with sigma ``blur_sigma_px`` (2.9) pixels on both axes, normalised to sum 1,
   separable, no-data propagating (any NaN in reach makes the pixel NaN). Options:
   ``blur_nodata: renormalise`` ignores no-data and ocean (normalised by the blurred
   validity mask: coasts and holes keep their neighbours' mean); ``blur_scale: metres``
   sizes the Gaussian in metres per latitude band (``blur_sigma_m``, ``blur_radius_m``).
7. **Risk and score.** ``risk = burn probability x conditional risk``; the score is the
   index of the first bin whose upper edge is >= risk (0 for risk 0, capped at 10).

Arrays use the grid's orientation: row 0 is the southern edge and rows run north, columns
run east. The working arrays are float64 by default; :func:`wind_informed_risk` can keep them
in float32 (what a production region uses, for memory: see its ``dtype``), while the
convolutions of the spread always compute in float64 and count burning pixels exactly.
The conditional risk, once read onto the output grid, defines the data mask:
where it is NaN (ocean) every float output is NaN and the score is ``SCORE_NODATA`` (a
platform convention: the reference masks risk, not burn probability, by conditional risk).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from risk_model.params import ModelParams
from risk_model.schema import SCORE_NODATA

FloatArray = npt.NDArray[np.float64]
#: A working array of the model: float64, or float32 (see :func:`wind_informed_risk`).
Floats = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]

# The direction the wind blows from, with its compass bearing in degrees; the order is the
# band order of the wind-direction-share input.
DIRECTIONS: tuple[str, ...] = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
BEARINGS: dict[str, float] = {d: 45.0 * i for i, d in enumerate(DIRECTIONS)}

# Points exactly on the ellipse (common for round pixel sizes) must not flip in or out with
# the last bit of a floating-point product.
_ELLIPSE_EPS = 1e-9


@dataclass(frozen=True)
class RiskArrays:
    """Outputs of :func:`wind_informed_risk`, all on the input grid.

    Attributes
    ----------
    burn_probability
        Wind-spread, blurred burn probability (NaN over no-data).
    conditional_risk
        The conditional-risk input (NaN over no-data).
    risk
        ``burn_probability * conditional_risk`` (NaN over no-data).
    score
        ``uint8`` score 0-10, ``SCORE_NODATA`` over no-data.
    """

    burn_probability: Floats
    conditional_risk: Floats
    risk: Floats
    score: npt.NDArray[np.uint8]


@dataclass(frozen=True)
class RowBand:
    """Consecutive rows of a window whose pixels share one pixel size, hence one set of kernels.

    Attributes
    ----------
    rows
        The rows, as a slice of the window's rows (``start`` and ``stop`` set, step 1).
    pixel_size_m
        ``(dy, dx)`` in metres, north-south and east-west.
    """

    rows: slice
    pixel_size_m: tuple[float, float]


#: The pixel geometry of a window: one size for all its pixels (a number for square pixels or
#: ``(dy, dx)``), or the row bands of :func:`risk_model.compute.pixel_bands`.
PixelGeometry = float | tuple[float, float] | Sequence[RowBand]


class ShareBands(Protocol):
    """The 8 wind-direction share bands of a window, in :data:`DIRECTIONS` order.

    An ``(8, ny, nx)`` array is one; :class:`risk_model.inputs.WindShareBands` is another,
    which reads a band only when it is indexed, so a production window never holds all 8
    (they are 1.8 GB in float64). The model indexes each band once.
    """

    def __len__(self) -> int:
        """The number of bands (8)."""
        ...

    def __getitem__(self, index: int, /) -> npt.NDArray[Any]:
        """Band ``index`` as a ``(ny, nx)`` float array; NaN where missing."""
        ...


def _pixel_size(pixel_size_m: float | tuple[float, float]) -> tuple[float, float]:
    """``(dy, dx)`` in metres from a scalar (square pixels) or a pair."""
    if isinstance(pixel_size_m, tuple):
        dy, dx = pixel_size_m
    else:
        dy = dx = float(pixel_size_m)
    if not (dy > 0 and dx > 0 and math.isfinite(dy) and math.isfinite(dx)):
        raise ValueError(f"pixel sizes must be positive and finite, got {pixel_size_m!r}")
    return float(dy), float(dx)


def row_bands(geometry: PixelGeometry, n_rows: int) -> list[RowBand]:
    """The row bands of a window of ``n_rows`` rows, checked to cover each row exactly once.

    Parameters
    ----------
    geometry
        One pixel size for the whole window, or its row bands.
    n_rows
        Rows of the window.

    Returns
    -------
    list of RowBand
        Bands in row order; a single band for a single pixel size.

    Raises
    ------
    ValueError
        If a pixel size is not positive, or the bands do not tile ``0 .. n_rows`` in order.
    """
    if isinstance(geometry, (int, float)) or (
        isinstance(geometry, tuple) and len(geometry) == 2 and not isinstance(geometry[0], RowBand)
    ):
        size = _pixel_size(geometry)
        return [RowBand(slice(0, n_rows), size)]
    bands = [RowBand(slice(int(b.rows.start), int(b.rows.stop)), _pixel_size(b.pixel_size_m)) for b in geometry]
    stops = [0, *(b.rows.stop for b in bands)]
    if not bands or [b.rows.start for b in bands] != stops[:-1] or stops[-1] != n_rows:
        raise ValueError(f"row bands must tile rows 0..{n_rows} in order, got {[b.rows for b in bands]}")
    if any(b.rows.stop <= b.rows.start for b in bands):
        raise ValueError(f"row bands must not be empty, got {[b.rows for b in bands]}")
    return bands


def kernel_mask(
    direction: str, params: ModelParams, pixel_size_m: float | tuple[float, float]
) -> npt.NDArray[np.bool_]:
    """The binary spread footprint of one wind direction, as a convolution kernel.

    Element ``[R + i, C + j]`` (``R, C`` the centre indices) is True when burn probability at a
    pixel spreads to the pixel ``i`` rows north and ``j`` columns east of it, i.e. when that
    displacement lies in the ellipse centred ``kernel_offset_m`` downwind. Used with
    :func:`scipy.ndimage.convolve` this is the same as a target gathering from the ellipse
    centred ``kernel_offset_m`` upwind of it. The array is the smallest odd box centred on
    the origin that holds the footprint.

    Parameters
    ----------
    direction
        One of :data:`DIRECTIONS`: the direction the wind blows *from*.
    params
        Model parameters (kernel geometry).
    pixel_size_m
        Pixel size in metres, ``(dy, dx)`` (north-south, east-west) or one number.

    Returns
    -------
    numpy.ndarray
        Boolean array of shape ``(2R + 1, 2C + 1)``.
    """
    dy, dx = _pixel_size(pixel_size_m)
    theta = math.radians(BEARINGS[direction])
    # Unit vector (east, north) pointing downwind: the wind from bearing theta blows away from it.
    down_e, down_n = -math.sin(theta), -math.cos(theta)
    a, b, off = params.kernel_semi_major_m, params.kernel_semi_minor_m, params.kernel_offset_m
    reach = a + off  # no point of the ellipse is farther than this from the origin
    half_r, half_c = math.ceil(reach / dy), math.ceil(reach / dx)
    north = np.arange(-half_r, half_r + 1, dtype=np.float64)[:, None] * dy
    east = np.arange(-half_c, half_c + 1, dtype=np.float64)[None, :] * dx
    rel_e, rel_n = east - off * down_e, north - off * down_n
    along = rel_e * down_e + rel_n * down_n
    across = -rel_e * down_n + rel_n * down_e
    inside: npt.NDArray[np.bool_] = (along / a) ** 2 + (across / b) ** 2 <= 1.0 + _ELLIPSE_EPS
    rows, cols = np.nonzero(inside)
    r = int(np.max(np.abs(rows - half_r)))
    c = int(np.max(np.abs(cols - half_c)))
    return inside[half_r - r : half_r + r + 1, half_c - c : half_c + c + 1]


def spread_kernels(params: ModelParams, pixel_size_m: float | tuple[float, float]) -> dict[str, FloatArray]:
    """The 8 normalised spread kernels, keyed by the direction the wind blows from.

    Parameters
    ----------
    params
        Model parameters (kernel geometry).
    pixel_size_m
        Pixel size in metres, ``(dy, dx)`` or one number.

    Returns
    -------
    dict
        ``{direction: kernel}``; each kernel is :func:`kernel_mask` divided by its count,
        so it sums to 1.
    """
    kernels = {}
    for direction in DIRECTIONS:
        mask = kernel_mask(direction, params, pixel_size_m)
        kernels[direction] = mask / np.count_nonzero(mask)
    return kernels


def gaussian_weights(size_px: int, sigma_px: float) -> FloatArray:
    """A 1-D Gaussian of ``size_px`` taps (odd) and standard deviation ``sigma_px``, summing to 1.

    This is OpenCV's ``getGaussianKernel``, which the reference's ``cv.GaussianBlur`` applies
    along both axes: ``exp(-x**2 / (2 sigma**2))`` at ``x = -(size - 1) / 2 .. (size - 1) / 2``,
    divided by its sum.

    Parameters
    ----------
    size_px
        Number of taps, odd.
    sigma_px
        Standard deviation in pixels, > 0.

    Returns
    -------
    numpy.ndarray
        The weights.

    Raises
    ------
    ValueError
        If ``size_px`` is not a positive odd number or ``sigma_px`` is not positive.
    """
    if size_px < 1 or size_px % 2 != 1 or not sigma_px > 0:
        raise ValueError(f"need an odd size >= 1 and sigma > 0, got size {size_px}, sigma {sigma_px}")
    x = np.arange(size_px, dtype=np.float64) - (size_px - 1) / 2
    weights = np.exp(-(x**2) / (2.0 * sigma_px**2))
    result: FloatArray = weights / weights.sum()
    return result


def blur_weights(params: ModelParams, pixel_size_m: float | tuple[float, float]) -> tuple[FloatArray, FloatArray]:
    """The separable blur's 1-D weights ``(along columns (N-S), along rows (E-W))``.

    With ``blur_scale: pixels`` (the reference) both are :func:`gaussian_weights` of
    ``blur_kernel_px`` and ``blur_sigma_px`` whatever the pixel size; with ``metres`` the
    sigma and the truncation radius are converted to pixels with ``pixel_size_m``.

    Parameters
    ----------
    params
        Model parameters.
    pixel_size_m
        Pixel size in metres, ``(dy, dx)`` or one number (only used with ``metres``).

    Returns
    -------
    tuple of numpy.ndarray
        Odd-length weights, each summing to 1.
    """
    if params.blur_scale == "pixels":
        weights = gaussian_weights(params.blur_kernel_px, params.blur_sigma_px)
        return weights, weights
    dy, dx = _pixel_size(pixel_size_m)
    rows = gaussian_weights(2 * round(params.blur_radius_m / dy) + 1, params.blur_sigma_m / dy)
    cols = gaussian_weights(2 * round(params.blur_radius_m / dx) + 1, params.blur_sigma_m / dx)
    return rows, cols


def halo_pixels(params: ModelParams, pixel_size_m: float | tuple[float, float]) -> int:
    """Pixels a window must extend past a region on each side for an exact result.

    An output pixel depends on the composite within the blur's half width, which depends on
    the spread fields there (the composite is per pixel), which depend on the burn
    probability within ``spread_iterations`` kernel reaches. So the halo is
    ``iterations * kernel reach + blur half width``, taken per axis (the kernel reach is the
    largest row or column offset of any of the 8 kernels) and the larger axis returned.
    Pixels beyond it cannot change the region. (The gap fill runs on the source, before the
    window is resampled, and adds nothing here.)

    Parameters
    ----------
    params
        Model parameters.
    pixel_size_m
        Pixel size in metres, ``(dy, dx)`` or one number. A window spanning several
        latitude bands needs the largest halo of its bands.

    Returns
    -------
    int
        The halo in pixels, the same on all four sides.
    """
    reach_r = reach_c = 0
    for direction in DIRECTIONS:
        shape = kernel_mask(direction, params, pixel_size_m).shape
        reach_r, reach_c = max(reach_r, shape[0] // 2), max(reach_c, shape[1] // 2)
    blur_rows, blur_cols = blur_weights(params, pixel_size_m)
    n = params.spread_iterations
    return max(n * reach_r + len(blur_rows) // 2, n * reach_c + len(blur_cols) // 2)


def gap_fill(burn_probability: FloatArray, *, window_px: int = 3) -> FloatArray:
    """Fill isolated holes in the burn probability, as the reference does at 270 m.

    A pixel whose value is NaN or <= 0 and whose four edge neighbours are all > 0 takes the
    mean of the ``window_px`` x ``window_px`` window centred on it, NaN left out and zeros
    counted (its own 0 included); every other pixel is returned unchanged. Pixels outside the
    array count as having no burn probability, so the outermost pixels are never filled:
    read the source with a margin (:func:`risk_model.inputs.read_burn_probability` does).

    Parameters
    ----------
    burn_probability
        Burn probability on its source grid, NaN where missing.
    window_px
        Side of the averaging window, odd.

    Returns
    -------
    numpy.ndarray
        A filled copy.
    """
    positive = burn_probability > 0  # NaN compares False
    padded = np.pad(positive, 1, constant_values=False)
    four = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    holes = four & ~positive
    filled = burn_probability.copy()
    if not holes.any():
        return filled
    finite = np.isfinite(burn_probability)
    ones = np.ones((window_px, window_px))
    total = ndimage.correlate(np.where(finite, burn_probability, 0.0), ones, mode="constant")
    count = ndimage.correlate(finite.astype(np.float64), ones, mode="constant")
    filled[holes] = total[holes] / count[holes]  # count >= 4 at every hole: its four neighbours
    return filled


# Rows per strip of the spread's convolutions. scipy's oaconvolve holds about 6 times its input
# in temporaries: 1.2 GB for a whole production window (6130 x 4630 px) in float64, ~130 MB
# for 512 rows. Each strip recomputes a kernel height of overlap (11-37 rows at 30 m), ~5 %.
# Measured by benchmarks/bench_convolution.py --production.
_STRIP_ROWS = 512
# Kernels of at most this many cells count burning pixels with a float32 FFT, rounded to the
# integer count: its error (~1e-7 of the count's scale) stays far below the 0.5 that rounding
# tolerates. Larger kernels (only with extreme parameters) count in float64.
_FLOAT32_COUNT_CELLS = 2**16


def _spread_rows(values: Floats, out: Floats, rows: slice, kernel: FloatArray, clip: float) -> None:
    """One round of the spread for ``rows`` of ``values``, written to the same rows of ``out``.

    The numerator ``conv(A, w)`` is an overlap-add FFT convolution in float64 whatever the
    working dtype: a float32 FFT's error is about 1e-7 of the largest value in reach of the
    transform, which is 1e-4 relative to the small means next to a weak fire. The denominator
    ``conv(A > 0, w)`` is ``k / cells`` for an integer count ``k`` of burning pixels in reach,
    so it is counted exactly: an FFT of the binary footprint, rounded to the nearest integer.

    Overlap-add FFT convolution (:func:`scipy.signal.oaconvolve`) was chosen by
    ``benchmarks/bench_convolution.py``: 3.5x faster than :func:`scipy.ndimage.convolve` on a
    production window and 4x on 1500 x 1500 px, agreeing with it to ~2e-16. Kernels have odd
    sides, so ``mode="same"`` is centred exactly as ``ndimage.convolve`` is, with zeros
    outside the array.
    """
    # Imported here: scipy.signal takes about a second to import, which every process that
    # imports the model (the CLI, a rerun with nothing to compute) would pay for nothing.
    from scipy.signal import oaconvolve

    footprint = kernel > 0
    cells = int(np.count_nonzero(footprint))
    ones = footprint.astype(np.float32 if cells <= _FLOAT32_COUNT_CELLS else np.float64)
    half = kernel.shape[0] // 2  # an output row depends on the rows within half a kernel height
    n = values.shape[0]
    for start in range(rows.start, rows.stop, _STRIP_ROWS):
        stop = min(start + _STRIP_ROWS, rows.stop)
        lo, hi = max(0, start - half), min(n, stop + half)
        inner = slice(start - lo, stop - lo)
        block = values[lo:hi].astype(np.float64, copy=False)
        numerator = oaconvolve(block, kernel, mode="same")[inner]
        counts = np.rint(oaconvolve((block > 0).astype(ones.dtype), ones, mode="same")[inner])
        reached = (counts > 0) & (numerator >= clip)
        # numerator / (counts / cells), in place; FFT noise may leave a mean of positive
        # values a hair below 0: clip it.
        np.divide(numerator, counts, out=numerator, where=reached)
        numerator *= cells
        np.maximum(numerator, 0.0, out=numerator)
        numerator[~reached] = 0.0
        out[start:stop] = numerator


def _spread_bands(values: Floats, segments: Sequence[tuple[slice, FloatArray]], iterations: int, clip: float) -> Floats:
    """:func:`spread` with each band of rows taking its own kernel (rows of ``values``).

    Returns a new array of ``values``' dtype; ``values`` is not modified.
    """
    for _ in range(iterations):
        result = np.empty_like(values)  # the segments tile the rows: every row is written
        for rows, kernel in segments:
            _spread_rows(values, result, rows, kernel, clip)
        values = result
    return values


def spread(burn_probability: Floats, kernel: FloatArray, iterations: int, *, clip: float = 0.0) -> Floats:
    """Zero-ignoring normalised convolution, repeated.

    Each round every pixel takes the kernel-weighted mean of the *positive* values in its
    reach, ``conv(A, w) / conv(A > 0, w)``, and 0 where no positive value is in reach or
    where ``conv(A, w) < clip`` (the reference clips at 1e-11).

    Parameters
    ----------
    burn_probability
        Non-negative burn probability without NaN (float32 or float64).
    kernel
        A normalised binary kernel (all non-zero weights equal).
    iterations
        Number of rounds, >= 1.
    clip
        Convolved burn probability below this counts as 0.

    Returns
    -------
    numpy.ndarray
        The spread field, >= 0, of the input's dtype (convolved in float64 either way).
    """
    return _spread_bands(burn_probability, [(slice(0, burn_probability.shape[0]), kernel)], iterations, clip)


def _composite(source: Floats, wind_shares: ShareBands, bands: list[RowBand], params: ModelParams) -> Floats:
    """The 8 spread fields weighted by the renormalised shares; NaN or equal shares where none.

    One share band at a time, each indexed once: ``sum_i(share_i * spread_i) / sum_i(share_i)``
    is accumulated as the two sums, and divided at the end.
    """
    shape = source.shape
    burns = bool(source.any())
    kernels: dict[tuple[float, float], dict[str, FloatArray]] = {}
    for band in bands:
        if band.pixel_size_m not in kernels:
            kernels[band.pixel_size_m] = spread_kernels(params, band.pixel_size_m)
    total = np.zeros_like(source)
    composite = np.zeros_like(source)
    # Where the shares are missing, ``equal_shares`` takes the mean of the 8 spread fields.
    unweighted = np.zeros_like(source) if params.missing_wind == "equal_shares" and burns else None
    for i, direction in enumerate(DIRECTIONS):
        share = wind_shares[i]
        if share.shape != shape:
            raise ValueError(f"shape mismatch: wind share band {i} is {share.shape}, expected {shape}")
        total += share  # NaN in any band makes the total NaN
        if not burns:
            continue
        if unweighted is None and not np.any((share != 0) & ~np.isnan(share)):
            continue  # this wind never blows here: its spread would be weighted by 0
        segments = [(band.rows, kernels[band.pixel_size_m][direction]) for band in bands]
        field = _spread_bands(source, segments, params.spread_iterations, params.spread_clip)
        if unweighted is not None:
            unweighted += field
        field *= share
        composite += field
        del field  # before the next band is read
    valid = np.isfinite(total) & (total > 0)
    np.divide(composite, total, out=composite, where=valid)
    missing = ~valid
    if params.missing_wind == "nan":
        composite[missing] = np.nan
    elif unweighted is not None:
        composite[missing] = unweighted[missing] / len(DIRECTIONS)
    else:
        composite[missing] = 0.0  # nothing burns: every spread field is 0
    return composite


def _separable(values: Floats, bands: list[RowBand], weights: list[tuple[FloatArray, FloatArray]]) -> Floats:
    """Correlate along columns, then along rows, each band of rows with its own weights.

    Zeros outside the array; NaN anywhere in reach makes the result NaN (all weights are > 0).
    The result has ``values``' dtype (ndimage accumulates in float64 either way).
    """
    n = values.shape[0]
    if len(bands) == 1:
        along_cols, along_rows = weights[0]
        columns = ndimage.correlate1d(values, along_cols, axis=0, mode="constant")
        result: Floats = ndimage.correlate1d(columns, along_rows, axis=1, mode="constant")
        return result
    columns = np.empty_like(values)
    for band, (along_cols, _) in zip(bands, weights, strict=True):
        half = len(along_cols) // 2
        lo, hi = max(0, band.rows.start - half), min(n, band.rows.stop + half)
        inner = slice(band.rows.start - lo, band.rows.stop - lo)
        columns[band.rows] = ndimage.correlate1d(values[lo:hi], along_cols, axis=0, mode="constant")[inner]
    result = np.empty_like(values)
    for band, (_, along_rows) in zip(bands, weights, strict=True):
        result[band.rows] = ndimage.correlate1d(columns[band.rows], along_rows, axis=1, mode="constant")
    return result


def blur(values: Floats, land: BoolArray, params: ModelParams, pixel_size_m: PixelGeometry) -> Floats:
    """The final Gaussian blur (see :func:`blur_weights` for its size).

    ``blur_nodata: propagate`` (the reference, whose ``cv.GaussianBlur`` propagates NaN): a NaN
    anywhere within the kernel makes the pixel NaN; ``land`` is not used. ``renormalise``:
    only finite land pixels count, the sum is divided by the blurred validity mask, and
    pixels that are not valid themselves are NaN.

    Parameters
    ----------
    values
        The composite burn probability, NaN where missing.
    land
        True where the pixel holds data (conditional risk is finite).
    params
        Model parameters.
    pixel_size_m
        One pixel size or the window's row bands (used with ``blur_scale: metres``).

    Returns
    -------
    numpy.ndarray
        The blurred field, of ``values``' dtype.
    """
    bands = row_bands(pixel_size_m, values.shape[0])
    if params.blur_scale == "pixels":
        bands = [RowBand(slice(0, values.shape[0]), bands[0].pixel_size_m)]  # one kernel everywhere
    weights = [blur_weights(params, band.pixel_size_m) for band in bands]
    if params.blur_nodata == "propagate":
        return _separable(values, bands, weights)
    valid = np.isfinite(values) & land
    numerator = _separable(np.where(valid, values, 0.0), bands, weights)
    denominator = _separable(valid.astype(values.dtype), bands, weights)
    out = np.full_like(values, np.nan)
    # The centre weight of the Gaussian is > 0, so every valid pixel has a denominator > 0.
    out[valid] = numerator[valid] / denominator[valid]
    return out


def score(risk: Floats, params: ModelParams) -> npt.NDArray[np.uint8]:
    """The 0-10 score of a risk array.

    Risk 0 scores 0; risk in ``(0, edge[0]]`` scores 1, ..., ``(edge[8], edge[9]]`` scores
    10, and anything above the last edge also scores 10. NaN scores ``SCORE_NODATA``.

    Parameters
    ----------
    risk
        Non-negative risk, NaN over no-data (float32 or float64).
    params
        Model parameters (bin edges).

    Returns
    -------
    numpy.ndarray
        ``uint8`` scores.
    """
    # The bin is the number of edges (0 included) below the risk, which is what
    # np.digitize(risk, (0, *edges), right=True) returns, counted in uint8: digitize would make
    # float64 and int64 copies of the array (0.4 GB each for a production window). The edges are
    # float64 scalars, so a float32 risk is compared exactly, not with edges rounded to float32.
    scores = np.zeros(risk.shape, dtype=np.uint8)
    for edge in np.asarray((0.0, *params.score_bin_edges), dtype=np.float64):
        scores += risk > edge  # NaN compares False
    np.minimum(scores, len(params.score_bin_edges), out=scores)
    scores[np.isnan(risk)] = SCORE_NODATA
    return scores


def wind_informed_risk(
    burn_probability: Floats,
    conditional_risk: Floats,
    wind_shares: ShareBands,
    pixel_size_m: PixelGeometry,
    params: ModelParams,
    *,
    dtype: npt.DTypeLike = np.float64,
) -> RiskArrays:
    """Run the wind-informed risk model on one window (see the module docstring).

    Parameters
    ----------
    burn_probability
        Annual burn probability ``(ny, nx)`` on the output grid, already gap-filled at its
        source resolution (:func:`risk_model.inputs.read_burn_probability`); NaN where
        missing, 0 where not burnable.
    conditional_risk
        Conditional risk to potential structures ``(ny, nx)``, 0-100; NaN marks no-data
        (ocean) for every output.
    wind_shares
        Fire-weather wind-direction shares, 8 bands of ``(ny, nx)`` in :data:`DIRECTIONS`
        order (the direction the wind blows from): an ``(8, ny, nx)`` array, or bands read
        one at a time (:class:`ShareBands`). Renormalised to sum to 1 per pixel. Pixels with
        missing or all-zero shares follow ``params.missing_wind``.
    pixel_size_m
        Pixel size in metres, ``(dy, dx)`` (north-south, east-west) or one number, for the
        whole window; or the window's row bands (:func:`risk_model.compute.pixel_bands`), so
        that each pixel's kernels depend on its position only.
    params
        Model parameters.
    dtype
        The working arrays' dtype, float64 or float32. float32 halves the memory of a window
        (a production region's peak drops from about 6 GB to under 2 GB together with the
        one-band-at-a-time shares); its results differ from float64 by less than 1e-5
        relative (``tests/test_science_precision.py``), because every step but the
        convolutions adds non-negative terms and the convolutions run in float64.

    Returns
    -------
    RiskArrays
        The outputs, of ``dtype`` (the score ``uint8``). Only pixels at least
        :func:`halo_pixels` away from the window's edges are exact; the caller crops the rest.

    Raises
    ------
    ValueError
        If the array shapes do not match, the row bands do not tile the window's rows, or
        ``dtype`` is not float32 or float64.
    """
    working = np.dtype(dtype)
    if working not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {working}")
    shape = burn_probability.shape
    shares_shape = getattr(wind_shares, "shape", (len(wind_shares), *shape))
    if conditional_risk.shape != shape or tuple(shares_shape) != (len(DIRECTIONS), *shape):
        raise ValueError(
            f"shape mismatch: burn_probability {shape}, conditional_risk {conditional_risk.shape}, "
            f"wind_shares {tuple(shares_shape)} (expected (8, *{shape}))"
        )
    bands = row_bands(pixel_size_m, shape[0])
    land = np.isfinite(conditional_risk)
    source = np.where(burn_probability > 0, burn_probability, 0.0).astype(working, copy=False)  # NaN does not burn
    composite = _composite(source, wind_shares, bands, params)
    del source
    # The reference keeps the burn probability wherever it is not exactly 0: NaN stays NaN.
    np.copyto(composite, burn_probability, where=burn_probability != 0)
    blurred = blur(composite, land, params, bands)
    del composite
    blurred[~land] = np.nan
    conditional = conditional_risk.astype(working)  # a copy: the caller's array is not changed
    conditional[~land] = np.nan
    risk = blurred * conditional
    return RiskArrays(burn_probability=blurred, conditional_risk=conditional, risk=risk, score=score(risk, params))

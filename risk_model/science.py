"""The wind-informed wildfire-risk model: pure numpy/scipy on float64 arrays, no I/O.

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
run east. The conditional risk, once read onto the output grid, defines the data mask:
where it is NaN (ocean) every float output is NaN and the score is ``SCORE_NODATA`` (a
platform convention: the reference masks risk, not burn probability, by conditional risk).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from risk_model.params import ModelParams
from risk_model.schema import SCORE_NODATA

FloatArray = npt.NDArray[np.float64]
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

    burn_probability: FloatArray
    conditional_risk: FloatArray
    risk: FloatArray
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


def convolve(values: FloatArray, kernel: FloatArray) -> FloatArray:
    """Convolution with zeros outside the array, same shape as ``values``.

    Chosen by ``benchmarks/bench_convolution.py``: overlap-add FFT convolution is 3.5x faster
    than :func:`scipy.ndimage.convolve` on a production window (6136 x 4636 px) and 4x on
    1500 x 1500, and agrees with it (``mode="constant"``) to ~2e-16. On a demo window (392 px)
    plain ``fftconvolve`` is ~2 ms per call faster, which is not worth a second code path.
    Kernels have odd sides, so ``mode="same"`` is centred exactly as ``ndimage.convolve`` is.
    """
    # Imported here: scipy.signal takes about a second to import, which every process that
    # imports the model (the CLI, a rerun with nothing to compute) would pay for nothing.
    from scipy.signal import oaconvolve

    result: FloatArray = oaconvolve(values, kernel, mode="same")
    return result


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


def _spread_bands(
    values: FloatArray, segments: Sequence[tuple[slice, FloatArray]], iterations: int, clip: float
) -> FloatArray:
    """:func:`spread` with each band of rows taking its own kernel (rows of ``values``)."""
    n = values.shape[0]
    for _ in range(iterations):
        burning = (values > 0).astype(np.float64)
        result = np.zeros_like(values)
        for rows, kernel in segments:
            # The rows a band's output depends on: the band and a kernel half-height around it.
            half = kernel.shape[0] // 2
            lo, hi = max(0, rows.start - half), min(n, rows.stop + half)
            inner = slice(rows.start - lo, rows.stop - lo)
            numerator = convolve(values[lo:hi], kernel)[inner]
            denominator = convolve(burning[lo:hi], kernel)[inner]
            # The denominator is k / n for an integer count k of burning pixels in reach; FFT
            # noise (~1e-16) is far below half of the smallest weight, so this is exact.
            reached = (denominator > 0.5 * float(kernel[kernel > 0].min())) & (numerator >= clip)
            band = result[rows]
            # Clip FFT noise: the mean of positive values cannot be negative.
            band[reached] = np.maximum(numerator[reached] / denominator[reached], 0.0)
        values = result
    return values


def spread(burn_probability: FloatArray, kernel: FloatArray, iterations: int, *, clip: float = 0.0) -> FloatArray:
    """Zero-ignoring normalised convolution, repeated.

    Each round every pixel takes the kernel-weighted mean of the *positive* values in its
    reach, ``conv(A, w) / conv(A > 0, w)``, and 0 where no positive value is in reach or
    where ``conv(A, w) < clip`` (the reference clips at 1e-11).

    Parameters
    ----------
    burn_probability
        Non-negative burn probability without NaN.
    kernel
        A normalised binary kernel (all non-zero weights equal).
    iterations
        Number of rounds.
    clip
        Convolved burn probability below this counts as 0.

    Returns
    -------
    numpy.ndarray
        The spread field, >= 0.
    """
    return _spread_bands(burn_probability, [(slice(0, burn_probability.shape[0]), kernel)], iterations, clip)


def _composite(source: FloatArray, wind_shares: FloatArray, bands: list[RowBand], params: ModelParams) -> FloatArray:
    """The 8 spread fields weighted by the renormalised shares; NaN or equal shares where none."""
    total = wind_shares.sum(axis=0)
    valid = np.isfinite(total) & (total > 0)  # NaN in any band makes the total NaN
    total = np.where(valid, total, 1.0)
    fallback = 0.0 if params.missing_wind == "nan" else 1.0 / len(DIRECTIONS)
    composite = np.zeros(source.shape)
    if source.any():
        kernels: dict[tuple[float, float], dict[str, FloatArray]] = {}
        for band in bands:
            if band.pixel_size_m not in kernels:
                kernels[band.pixel_size_m] = spread_kernels(params, band.pixel_size_m)
        for i, direction in enumerate(DIRECTIONS):
            # One direction's shares at a time: a production window's 8 bands are ~1.8 GB.
            share = np.where(valid, wind_shares[i] / total, fallback)
            if not share.any():
                continue  # this wind never blows here: its spread would be weighted by 0
            segments = [(band.rows, kernels[band.pixel_size_m][direction]) for band in bands]
            composite += share * _spread_bands(source, segments, params.spread_iterations, params.spread_clip)
    if params.missing_wind == "nan":
        composite[~valid] = np.nan
    return composite


def _separable(values: FloatArray, bands: list[RowBand], weights: list[tuple[FloatArray, FloatArray]]) -> FloatArray:
    """Correlate along columns, then along rows, each band of rows with its own weights.

    Zeros outside the array; NaN anywhere in reach makes the result NaN (all weights are > 0).
    """
    n = values.shape[0]
    if len(bands) == 1:
        along_cols, along_rows = weights[0]
        columns = ndimage.correlate1d(values, along_cols, axis=0, mode="constant")
        result: FloatArray = ndimage.correlate1d(columns, along_rows, axis=1, mode="constant")
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


def blur(values: FloatArray, land: BoolArray, params: ModelParams, pixel_size_m: PixelGeometry) -> FloatArray:
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
        The blurred field.
    """
    bands = row_bands(pixel_size_m, values.shape[0])
    if params.blur_scale == "pixels":
        bands = [RowBand(slice(0, values.shape[0]), bands[0].pixel_size_m)]  # one kernel everywhere
    weights = [blur_weights(params, band.pixel_size_m) for band in bands]
    if params.blur_nodata == "propagate":
        return _separable(values, bands, weights)
    valid = np.isfinite(values) & land
    numerator = _separable(np.where(valid, values, 0.0), bands, weights)
    denominator = _separable(valid.astype(np.float64), bands, weights)
    out = np.full_like(values, np.nan)
    # The centre weight of the Gaussian is > 0, so every valid pixel has a denominator > 0.
    out[valid] = numerator[valid] / denominator[valid]
    return out


def score(risk: FloatArray, params: ModelParams) -> npt.NDArray[np.uint8]:
    """The 0-10 score of a risk array.

    Risk 0 scores 0; risk in ``(0, edge[0]]`` scores 1, ..., ``(edge[8], edge[9]]`` scores
    10, and anything above the last edge also scores 10. NaN scores ``SCORE_NODATA``.

    Parameters
    ----------
    risk
        Non-negative risk, NaN over no-data.
    params
        Model parameters (bin edges).

    Returns
    -------
    numpy.ndarray
        ``uint8`` scores.
    """
    edges = np.asarray((0.0, *params.score_bin_edges))
    # right=True: a value equal to an upper edge falls in that edge's bin.
    bins = np.digitize(np.where(np.isnan(risk), 0.0, risk), edges, right=True)
    scores = np.minimum(bins, len(params.score_bin_edges)).astype(np.uint8)
    scores[np.isnan(risk)] = SCORE_NODATA
    return scores


def wind_informed_risk(
    burn_probability: FloatArray,
    conditional_risk: FloatArray,
    wind_shares: FloatArray,
    pixel_size_m: PixelGeometry,
    params: ModelParams,
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
        Fire-weather wind-direction shares ``(8, ny, nx)`` in :data:`DIRECTIONS` order (the
        direction the wind blows from); renormalised to sum to 1 per pixel. Pixels with
        missing or all-zero shares follow ``params.missing_wind``.
    pixel_size_m
        Pixel size in metres, ``(dy, dx)`` (north-south, east-west) or one number, for the
        whole window; or the window's row bands (:func:`risk_model.compute.pixel_bands`), so
        that each pixel's kernels depend on its position only.
    params
        Model parameters.

    Returns
    -------
    RiskArrays
        The outputs. Only pixels at least :func:`halo_pixels` away from the window's edges
        are exact; the caller crops the rest.

    Raises
    ------
    ValueError
        If the array shapes do not match, or the row bands do not tile the window's rows.
    """
    shape = burn_probability.shape
    if conditional_risk.shape != shape or wind_shares.shape != (len(DIRECTIONS), *shape):
        raise ValueError(
            f"shape mismatch: burn_probability {shape}, conditional_risk {conditional_risk.shape}, "
            f"wind_shares {wind_shares.shape} (expected (8, *{shape}))"
        )
    bands = row_bands(pixel_size_m, shape[0])
    land = np.isfinite(conditional_risk)
    source = np.where(burn_probability > 0, burn_probability, 0.0)  # NaN does not burn
    composite = _composite(source, wind_shares, bands, params)
    # The reference keeps the burn probability wherever it is not exactly 0: NaN stays NaN.
    combined = np.where(burn_probability == 0, composite, burn_probability)
    blurred = blur(combined, land, params, bands)
    blurred[~land] = np.nan
    conditional = np.where(land, conditional_risk, np.nan)
    risk = blurred * conditional
    return RiskArrays(burn_probability=blurred, conditional_risk=conditional, risk=risk, score=score(risk, params))

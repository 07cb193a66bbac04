"""The wind-informed wildfire-risk model: pure numpy/scipy on float64 arrays, no I/O.

The model follows carbonplan/ocr (``ocr/risks/fire.py``), re-derived in metres so that it
can run at any latitude:

1. **Gap fill.** A land pixel without burn probability (NaN or <= 0) whose four edge
   neighbours all have one (> 0) takes the mean of the positive values of its 3 x 3 window.
   The reference does this on its 270 m source; here it runs on the output grid, after the
   source has been resampled, because that is the array a region holds.
2. **Directional kernels.** For each of the 8 wind directions N, NE, E, SE, S, SW, W, NW
   (the direction the wind blows *from*), a binary ellipse with semi-axes
   ``kernel_semi_major_m`` along the wind and ``kernel_semi_minor_m`` across it, whose
   centre lies ``kernel_offset_m`` *upwind* of the target pixel: the target gathers burn
   probability from upwind, so a wind from the west carries burn probability to the east.
   The kernels are sized in pixels from the pixel size in metres (north-south and east-west
   sizes differ on a longitude/latitude grid) and normalised to sum to 1.
3. **Spread.** Per direction, ``spread_iterations`` rounds of zero-ignoring normalised
   convolution ``A <- conv(A, w) / conv(A > 0, w)`` (0 where no burning pixel is in reach):
   a pixel takes the mean of the burning pixels that can reach it.
4. **Composite.** The 8 spread fields weighted by the per-pixel wind-direction shares;
   the (gap-filled) burn probability is kept wherever it is positive.
5. **Blur.** A Gaussian blur (``blur_sigma_m``, truncated at ``blur_radius_m``) that ignores
   no-data pixels (it is normalised by the blurred land mask, so coasts are not darkened).
6. **Risk and score.** ``risk = burn probability x conditional risk``; the score is the
   index of the first bin whose upper edge is >= risk (0 for risk 0, capped at 10).

Arrays use the grid's orientation: row 0 is the southern edge and rows run north, columns
run east. The conditional-risk raster is on the output grid and defines the data mask:
where it is NaN (ocean) every float output is NaN and the score is ``SCORE_NODATA``.
"""

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from risk_model.params import ModelParams
from risk_model.schema import SCORE_NODATA

FloatArray = npt.NDArray[np.float64]

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


def _pixel_size(pixel_size_m: float | tuple[float, float]) -> tuple[float, float]:
    """``(dy, dx)`` in metres from a scalar (square pixels) or a pair."""
    if isinstance(pixel_size_m, tuple):
        dy, dx = pixel_size_m
    else:
        dy = dx = float(pixel_size_m)
    if not (dy > 0 and dx > 0 and math.isfinite(dy) and math.isfinite(dx)):
        raise ValueError(f"pixel sizes must be positive and finite, got {pixel_size_m!r}")
    return float(dy), float(dx)


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


def _blur_geometry(
    params: ModelParams, pixel_size_m: float | tuple[float, float]
) -> tuple[tuple[float, float], tuple[int, int]]:
    """Gaussian sigma and truncation radius, in pixels, per axis ``(rows, cols)``."""
    dy, dx = _pixel_size(pixel_size_m)
    sigma = (params.blur_sigma_m / dy, params.blur_sigma_m / dx)
    radius = (round(params.blur_radius_m / dy), round(params.blur_radius_m / dx))
    return sigma, radius


def halo_pixels(params: ModelParams, pixel_size_m: float | tuple[float, float]) -> int:
    """Pixels a window must extend past a region on each side for an exact result.

    An output pixel depends on the blurred field within the blur radius, which depends on
    the spread fields there (the composite is per pixel), which depend on the gap-filled
    burn probability within ``spread_iterations`` kernel reaches, which depends on the raw
    input within one pixel. So the halo is ``1 + iterations * kernel reach + blur radius``,
    taken per axis (the kernel reach is the largest row or column offset of any of the 8
    kernels) and the larger axis returned. Pixels beyond it cannot change the region.

    Parameters
    ----------
    params
        Model parameters.
    pixel_size_m
        Pixel size in metres, ``(dy, dx)`` or one number.

    Returns
    -------
    int
        The halo in pixels, the same on all four sides.
    """
    reach_r = reach_c = 0
    for direction in DIRECTIONS:
        shape = kernel_mask(direction, params, pixel_size_m).shape
        reach_r, reach_c = max(reach_r, shape[0] // 2), max(reach_c, shape[1] // 2)
    _, (blur_r, blur_c) = _blur_geometry(params, pixel_size_m)
    gap_fill = 1
    n = params.spread_iterations
    return max(gap_fill + n * reach_r + blur_r, gap_fill + n * reach_c + blur_c)


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


def gap_fill(burn_probability: FloatArray, land: npt.NDArray[np.bool_]) -> FloatArray:
    """Fill isolated holes in the burn probability.

    A land pixel whose value is NaN or <= 0 and whose four edge neighbours are all > 0
    takes the mean of the positive values in its 3 x 3 window; every other pixel is
    returned unchanged. Pixels outside the array count as having no burn probability.

    Parameters
    ----------
    burn_probability
        Burn probability, NaN where missing.
    land
        True where the pixel holds data (not ocean); ocean pixels are never filled.

    Returns
    -------
    numpy.ndarray
        A filled copy.
    """
    positive = burn_probability > 0  # NaN compares False
    padded = np.pad(positive, 1, constant_values=False)
    four = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    holes = four & ~positive & land
    filled = burn_probability.copy()
    if not holes.any():
        return filled
    ones = np.ones((3, 3))
    total = ndimage.correlate(np.where(positive, burn_probability, 0.0), ones, mode="constant")
    count = ndimage.correlate(positive.astype(np.float64), ones, mode="constant")
    filled[holes] = total[holes] / count[holes]  # count >= 4 at every hole
    return filled


def spread(burn_probability: FloatArray, kernel: FloatArray, iterations: int) -> FloatArray:
    """Zero-ignoring normalised convolution, repeated.

    Each round every pixel takes the kernel-weighted mean of the *positive* values in its
    reach, ``conv(A, w) / conv(A > 0, w)``, and 0 where no positive value is in reach.

    Parameters
    ----------
    burn_probability
        Non-negative burn probability without NaN.
    kernel
        A normalised binary kernel (all non-zero weights equal).
    iterations
        Number of rounds.

    Returns
    -------
    numpy.ndarray
        The spread field, >= 0.
    """
    # The denominator is k / n for an integer count k of burning pixels in reach; FFT noise
    # (~1e-16) is far below half of the smallest weight, so this threshold is exact.
    threshold = 0.5 * float(kernel[kernel > 0].min())
    values = burn_probability
    for _ in range(iterations):
        numerator = convolve(values, kernel)
        denominator = convolve((values > 0).astype(np.float64), kernel)
        reached = denominator > threshold
        values = np.zeros_like(values)
        # Clip FFT noise: the mean of positive values cannot be negative.
        values[reached] = np.maximum(numerator[reached] / denominator[reached], 0.0)
    return values


def _share_weights(wind_shares: FloatArray) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Per-pixel sum of the shares, and where it is usable (finite and > 0)."""
    total = wind_shares.sum(axis=0)
    valid = np.isfinite(total) & (total > 0)
    return np.where(valid, total, 1.0), valid


def _masked_blur(
    values: FloatArray, land: npt.NDArray[np.bool_], params: ModelParams, pixel_size_m: float | tuple[float, float]
) -> FloatArray:
    """Gaussian blur over land only (normalised by the blurred land mask); NaN over no-data."""
    sigma, radius = _blur_geometry(params, pixel_size_m)
    weight = land.astype(np.float64)
    num = ndimage.gaussian_filter(np.where(land, values, 0.0), sigma, mode="constant", radius=radius)
    den = ndimage.gaussian_filter(weight, sigma, mode="constant", radius=radius)
    out = np.full_like(values, np.nan)
    # The centre weight of the Gaussian is > 0, so every land pixel has den > 0.
    out[land] = num[land] / den[land]
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
    pixel_size_m: float | tuple[float, float],
    params: ModelParams,
) -> RiskArrays:
    """Run the wind-informed risk model on one window (see the module docstring).

    Parameters
    ----------
    burn_probability
        Annual burn probability ``(ny, nx)`` on the output grid; NaN where missing.
    conditional_risk
        Conditional risk to potential structures ``(ny, nx)``, 0-100; NaN marks no-data
        (ocean) for every output.
    wind_shares
        Fire-weather wind-direction shares ``(8, ny, nx)`` in :data:`DIRECTIONS` order (the
        direction the wind blows from); renormalised to sum to 1 per pixel, and pixels with
        missing or all-zero shares get equal shares.
    pixel_size_m
        Pixel size in metres, ``(dy, dx)`` (north-south, east-west) or one number. Use one
        fixed value for a whole region so the result does not depend on the window.
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
        If the array shapes do not match.
    """
    shape = burn_probability.shape
    if conditional_risk.shape != shape or wind_shares.shape != (len(DIRECTIONS), *shape):
        raise ValueError(
            f"shape mismatch: burn_probability {shape}, conditional_risk {conditional_risk.shape}, "
            f"wind_shares {wind_shares.shape} (expected (8, *{shape}))"
        )
    land = np.isfinite(conditional_risk)
    filled = gap_fill(burn_probability, land)
    source = np.where(filled > 0, filled, 0.0)  # NaN and ocean do not burn
    kernels = spread_kernels(params, pixel_size_m)
    composite = np.zeros(shape)
    if source.any():
        total, valid = _share_weights(wind_shares)
        for i, direction in enumerate(DIRECTIONS):
            # One direction's shares at a time: a production window's 8 bands are ~1.8 GB.
            share = np.where(valid, wind_shares[i] / total, 1.0 / len(DIRECTIONS))
            if not share.any():
                continue  # this wind never blows here: its spread would be weighted by 0
            composite += share * spread(source, kernels[direction], params.spread_iterations)
    composite = np.where(source > 0, source, composite)
    blurred = _masked_blur(composite, land, params, pixel_size_m)
    conditional = np.where(land, conditional_risk, np.nan)
    risk = blurred * conditional
    return RiskArrays(burn_probability=blurred, conditional_risk=conditional, risk=risk, score=score(risk, params))

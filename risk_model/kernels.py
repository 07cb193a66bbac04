"""The model's geometry: wind directions, row bands of one pixel size, and the kernels sized from them.

Pure numpy. :mod:`risk_model.science` runs the model with these kernels (steps 2, 3 and 6 of
its description); :func:`halo_pixels` says how far a region's window must reach.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from risk_model.params import ModelParams

FloatArray = npt.NDArray[np.float64]


# The direction the wind blows from, with its compass bearing in degrees; the order is the
# band order of the wind-direction-share input.
DIRECTIONS: tuple[str, ...] = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")

BEARINGS: dict[str, float] = {d: 45.0 * i for i, d in enumerate(DIRECTIONS)}

# Points exactly on the ellipse (common for round pixel sizes) must not flip in or out with
# the last bit of a floating-point product.
_ELLIPSE_EPS = 1e-9


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

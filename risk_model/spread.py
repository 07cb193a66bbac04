"""The spread: rounds of zero-ignoring normalised convolution (step 4 of :mod:`risk_model.science`)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
#: A working array of the model: float64, or float32.
Floats = npt.NDArray[np.floating[Any]]


# Rows per strip of the spread's convolutions. scipy's FFT convolutions hold several times their
# input in temporaries (oaconvolve about 6 times): 1.2 GB for a whole production window
# (6130 x 4630 px) in float64, ~130 MB for 512 rows. Each strip recomputes a kernel height of
# overlap (11-37 rows at 30 m), ~5 %.
# Measured by benchmarks/bench_convolution.py --production.
_STRIP_ROWS = 512

# Kernels of at most this many cells count burning pixels with a float32 FFT, rounded to the
# integer count: its error (~1e-7 of the count's scale) stays far below the 0.5 that rounding
# tolerates. Larger kernels (only with extreme parameters) count in float64.
_FLOAT32_COUNT_CELLS = 2**16


def _spread_rows(values: Floats, out: Floats, rows: slice, kernel: FloatArray, clip: float) -> None:
    """One round of the spread for ``rows`` of ``values``, written to the same rows of ``out``.

    The numerator ``conv(A, w)`` is an FFT convolution in float64 whatever the
    working dtype: a float32 FFT's error is about 1e-7 of the largest value in reach of the
    transform, which is 1e-4 relative to the small means next to a weak fire. The denominator
    ``conv(A > 0, w)`` is ``k / cells`` for an integer count ``k`` of burning pixels in reach,
    so it is counted exactly: an FFT of the binary footprint, rounded to the nearest integer.

    FFT convolution was chosen by ``benchmarks/bench_convolution.py``: overlap-add
    (:func:`scipy.signal.oaconvolve`) was 3.5x faster than :func:`scipy.ndimage.convolve` on a
    whole production window, agreeing with it to ~2e-16. On the strips convolved here (512 rows
    plus a kernel's height) one FFT of the strip (:func:`scipy.signal.fftconvolve`) is faster
    still: 1.3-2.2x oaconvolve's speed on one core (docs/benchmarks.md, issue 12), agreeing
    with it to ~2e-15 of the largest value; its float32 count is within 1e-4 of the integer for
    the model's kernels and within 0.04 for a 65,536-cell kernel, far from the 0.5 that rounding
    tolerates. Kernels have odd sides, so ``mode="same"`` is centred exactly as
    ``ndimage.convolve`` is, with zeros outside the array.
    """
    # Imported here: scipy.signal takes about a second to import, which every process that
    # imports the model (the CLI, a rerun with nothing to compute) would pay for nothing.
    from scipy.signal import fftconvolve

    footprint = kernel > 0
    cells = int(np.count_nonzero(footprint))
    ones = footprint.astype(np.float32 if cells <= _FLOAT32_COUNT_CELLS else np.float64)
    half = kernel.shape[0] // 2  # an output row depends on the rows within half a kernel height
    half_width = kernel.shape[1] // 2
    n, width = values.shape
    for start in range(rows.start, rows.stop, _STRIP_ROWS):
        stop = min(start + _STRIP_ROWS, rows.stop)
        lo, hi = max(0, start - half), min(n, stop + half)
        inner = slice(start - lo, stop - lo)
        # Only the columns within half a kernel width of a burning pixel can be reached: the
        # strip is convolved over those (ocean, lakes, non-burnable land at its sides cost
        # nothing) and the rest of its row is 0, exactly what the whole strip would give there.
        burning = np.flatnonzero(values[lo:hi].any(axis=0))
        if burning.size == 0:
            out[start:stop] = 0.0
            continue
        c0, c1 = max(0, int(burning[0]) - half_width), min(width, int(burning[-1]) + half_width + 1)
        out[start:stop, :c0] = 0.0
        out[start:stop, c1:] = 0.0
        block = values[lo:hi, c0:c1].astype(np.float64, copy=False)
        numerator = fftconvolve(block, kernel, mode="same")[inner]
        counts = np.rint(fftconvolve((block > 0).astype(ones.dtype), ones, mode="same")[inner])
        reached = (counts > 0) & (numerator >= clip)
        # numerator / (counts / cells), in place; FFT noise may leave a mean of positive
        # values a hair below 0: clip it.
        np.divide(numerator, counts, out=numerator, where=reached)
        numerator *= cells
        np.maximum(numerator, 0.0, out=numerator)
        numerator[~reached] = 0.0
        out[start:stop, c0:c1] = numerator


def spread_bands(values: Floats, segments: Sequence[tuple[slice, FloatArray]], iterations: int, clip: float) -> Floats:
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
    return spread_bands(burn_probability, [(slice(0, burn_probability.shape[0]), kernel)], iterations, clip)

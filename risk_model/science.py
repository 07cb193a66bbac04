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
2. **Directional kernels** (:func:`~risk_model.kernels.spread_kernels`). For each of the 8 wind directions N, NE,
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
   (:class:`~risk_model.kernels.RowBand`), so a pixel's value is the same whichever region computes it. The
   reference sizes the kernels at each region's centre latitude; the default bands are its
   regions' rows, so pixels inside a reference region get the reference's kernels.
4. **Spread** (:func:`~risk_model.spread.spread`). Per direction, ``spread_iterations`` rounds of zero-ignoring
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

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from risk_model.kernels import DIRECTIONS, PixelGeometry, RowBand, blur_weights, row_bands, spread_kernels
from risk_model.params import ModelParams
from risk_model.schema import SCORE_NODATA
from risk_model.spread import spread_bands

FloatArray = npt.NDArray[np.float64]
#: A working array of the model: float64, or float32 (see :func:`wind_informed_risk`).
Floats = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]


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


class ShareBands(Protocol):
    """The 8 wind-direction share bands of a window, in :data:`DIRECTIONS` order.

    An ``(8, ny, nx)`` array is one; :class:`risk_model.wind_inputs.WindShareBands` is another,
    which reads a band only when it is indexed, so a production window never holds all 8
    (they are 1.8 GB in float64). The model indexes each band once.
    """

    def __len__(self) -> int:
        """The number of bands (8)."""
        ...

    def __getitem__(self, index: int, /) -> npt.NDArray[Any]:
        """Band ``index`` as a ``(ny, nx)`` float array; NaN where missing."""
        ...


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
        field = spread_bands(source, segments, params.spread_iterations, params.spread_clip)
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

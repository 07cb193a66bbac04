"""A picture and a few numbers per region: the quicklook shown in the Dagster UI.

Every region's materialization carries a small PNG of its ``score`` and summary statistics
of its ``risk``, so a region can be judged at a glance in the UI without opening the store.

Colour scale
------------
One fixed scale for every region, so colours compare across regions and runs: score 0
(risk exactly 0) is a light neutral grey, scores 1-10 run from pale yellow to dark red
(ColorBrewer's YlOrRd, extended by one darker red for 10), and no data (score 255) is
fully transparent. The table is :data:`SCORE_COLOURS`; a test checks they agree.

=====  =========
score  colour
=====  =========
0      ``#e6e6e6``
1      ``#ffffcc``
2      ``#ffeda0``
3      ``#fed976``
4      ``#feb24c``
5      ``#fd8d3c``
6      ``#fc4e2a``
7      ``#e31a1c``
8      ``#bd0026``
9      ``#800026``
10     ``#4a0012``
255    transparent (no data)
=====  =========

Image
-----
North is up: the raster's latitude ascends (row 0 is the southern edge), so rows are
flipped. A region whose long side exceeds :data:`MAX_SIDE` pixels is reduced by an integer
factor ``ceil(long side / MAX_SIDE)`` taking the most frequent score of each block (ties go
to the lower score, and from no data to a score), so a 6000 x 4500 production region
becomes 250 x 188 pixels. The PNG is 8-bit RGBA, written with :mod:`zlib` only.

Statistics
----------
Minimum, mean and maximum of ``risk`` ignoring NaN (NaN when the region holds no data), the
share of all pixels in each score class 0-10 and the share of no-data pixels (the twelve
shares sum to 1).
"""

import base64
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from risk_model.schema import SCORE_NODATA

#: Colour of each score 0..10 (index = score), as ``#rrggbb``; no data is transparent.
SCORE_COLOURS: tuple[str, ...] = (
    "#e6e6e6",
    "#ffffcc",
    "#ffeda0",
    "#fed976",
    "#feb24c",
    "#fd8d3c",
    "#fc4e2a",
    "#e31a1c",
    "#bd0026",
    "#800026",
    "#4a0012",
)
#: RGBA of no-data pixels: fully transparent.
NODATA_RGBA: tuple[int, int, int, int] = (0, 0, 0, 0)
#: Longest side of a quicklook, in pixels.
MAX_SIDE = 256
SCORES = tuple(range(len(SCORE_COLOURS)))

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Class index of no data in block counts: after the eleven scores, so data wins ties.
_NODATA_CLASS = len(SCORE_COLOURS)


def score_rgba(score: int) -> tuple[int, int, int, int]:
    """The RGBA colour of one score value (0-10, or 255 for no data).

    Raises
    ------
    ValueError
        If ``score`` is neither 0-10 nor :data:`~risk_model.schema.SCORE_NODATA`.
    """
    if score == SCORE_NODATA:
        return NODATA_RGBA
    if score not in SCORES:
        raise ValueError(f"score {score} is not 0-10 or {SCORE_NODATA} (no data)")
    hex_colour = SCORE_COLOURS[score]
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16), 255)


def _palette() -> npt.NDArray[np.uint8]:
    # A 256-entry lookup table indexed by the uint8 score; unused entries stay transparent
    # (validation rejects those values before the lookup).
    table = np.zeros((256, 4), dtype=np.uint8)
    for value in SCORES:
        table[value] = score_rgba(value)
    table[SCORE_NODATA] = NODATA_RGBA
    return table


_PALETTE = _palette()


def _check_scores(score: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    if score.ndim != 2:
        raise ValueError(f"a score array is 2-D (latitude, longitude), got shape {score.shape}")
    if score.dtype != np.uint8:
        raise ValueError(f"a score array is uint8, got {score.dtype}")
    valid = (score <= max(SCORES)) | (score == SCORE_NODATA)
    if not valid.all():
        bad = sorted({int(v) for v in np.unique(score[~valid])})
        raise ValueError(f"score values {bad} are not 0-10 or {SCORE_NODATA} (no data)")
    return score


def downsample_scores(score: npt.NDArray[np.uint8], max_side: int = MAX_SIDE) -> npt.NDArray[np.uint8]:
    """Reduce a score array so its long side is at most ``max_side``, by block mode.

    Parameters
    ----------
    score
        ``uint8`` scores 0-10 or 255 (no data), any orientation.
    max_side
        Longest side of the result.

    Returns
    -------
    numpy.ndarray
        ``score`` itself when it is small enough; otherwise, for a factor
        ``f = ceil(long side / max_side)``, the most frequent value of every ``f x f``
        block (blocks on the far edges may be smaller). Ties go to the lower score, and from no
        data to a score, so half-land blocks on the coast stay land.

    Raises
    ------
    ValueError
        If ``score`` is not a 2-D ``uint8`` array of valid scores, or ``max_side < 1``.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    score = _check_scores(score)
    rows, cols = score.shape
    factor = math.ceil(max(rows, cols, 1) / max_side)
    if factor <= 1:
        return score
    n_classes = _NODATA_CLASS + 1
    block_cols = math.ceil(cols / factor)
    # Counting one strip of block rows at a time keeps the temporary (integer) arrays at
    # f x cols instead of the whole region (27 M pixels in production).
    column_block = (np.arange(cols) // factor) * n_classes
    out = np.empty((math.ceil(rows / factor), block_cols), dtype=np.uint8)
    for i in range(out.shape[0]):
        strip = score[i * factor : (i + 1) * factor]
        classes = np.where(strip == SCORE_NODATA, _NODATA_CLASS, strip).astype(np.intp)
        counts = np.bincount((classes + column_block).ravel(), minlength=block_cols * n_classes)
        winners = counts.reshape(block_cols, n_classes).argmax(axis=1)
        out[i] = np.where(winners == _NODATA_CLASS, SCORE_NODATA, winners)
    return out


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rgba: npt.NDArray[np.uint8]) -> bytes:
    """Encode an ``(height, width, 4)`` ``uint8`` array as an 8-bit RGBA PNG.

    Every row uses the PNG "Sub" filter (each byte minus the same channel of the pixel to
    its left), which turns runs of one colour into zeros that deflate compresses well.

    Raises
    ------
    ValueError
        If ``rgba`` is not a non-empty ``(height, width, 4)`` ``uint8`` array.
    """
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8 or 0 in rgba.shape:
        raise ValueError(f"expected a non-empty (height, width, 4) uint8 array, got {rgba.shape} {rgba.dtype}")
    height, width, _ = rgba.shape
    rows = rgba.reshape(height, width * 4)
    filtered = rows.copy()
    filtered[:, 4:] = rows[:, 4:] - rows[:, :-4]  # uint8 arithmetic wraps modulo 256, as PNG wants
    raw = np.hstack([np.ones((height, 1), dtype=np.uint8), filtered])  # filter type 1 = Sub
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bit, RGBA, deflate, no interlace
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
        + _png_chunk(b"IEND", b"")
    )


def quicklook_png(score: npt.NDArray[np.uint8], *, south_up: bool = True, max_side: int = MAX_SIDE) -> bytes:
    """The quicklook of a region's score: an RGBA PNG in the fixed colour scale, north up.

    Parameters
    ----------
    score
        ``uint8`` scores 0-10 or 255 (no data), ``(latitude, longitude)``.
    south_up
        Whether row 0 is the southern edge (latitude ascending, as in the raster); such
        arrays are flipped so the image has north at the top.
    max_side
        Longest side of the image (see :func:`downsample_scores`).

    Returns
    -------
    bytes
        The PNG file.

    Raises
    ------
    ValueError
        If ``score`` is not a 2-D ``uint8`` array of valid scores.
    """
    small = downsample_scores(score, max_side)
    if south_up:
        small = small[::-1]
    return encode_png(_PALETTE[small])


@dataclass(frozen=True)
class RegionStats:
    """Summary statistics of one region.

    Attributes
    ----------
    risk_min, risk_mean, risk_max
        Of ``risk``, ignoring NaN; NaN when every pixel is NaN.
    class_shares
        Share of all pixels with score 0, 1, ..., 10 (index = score).
    nodata_share
        Share of pixels with no score (255). With ``class_shares`` it sums to 1.
    pixels
        Number of pixels of the region.
    """

    risk_min: float
    risk_mean: float
    risk_max: float
    class_shares: tuple[float, ...]
    nodata_share: float
    pixels: int


def region_stats(risk: npt.NDArray[np.floating[Any]], score: npt.NDArray[np.uint8]) -> RegionStats:
    """Risk range and mean, and the share of pixels in each score class, of one region.

    Parameters
    ----------
    risk
        The region's ``risk`` (NaN = no data).
    score
        The region's ``score``, same shape.

    Returns
    -------
    RegionStats
        The statistics; the mean is accumulated in float64.

    Raises
    ------
    ValueError
        If the shapes differ or ``score`` holds values other than 0-10 and 255.
    """
    if risk.shape != score.shape:
        raise ValueError(f"risk {risk.shape} and score {score.shape} differ in shape")
    score = _check_scores(score)
    pixels = int(score.size)
    finite = risk[~np.isnan(risk)]
    # np.nanmin and friends warn on an all-NaN region; such a region simply has no range.
    if finite.size:
        low, mean, high = float(finite.min()), float(finite.mean(dtype=np.float64)), float(finite.max())
    else:
        low = mean = high = math.nan
    counts = np.bincount(score.ravel(), minlength=256)
    total = max(pixels, 1)
    return RegionStats(
        risk_min=low,
        risk_mean=mean,
        risk_max=high,
        class_shares=tuple(float(counts[s]) / total for s in SCORES),
        nodata_share=float(counts[SCORE_NODATA]) / total,
        pixels=pixels,
    )


def south_up(ds: xr.Dataset) -> bool:
    # The raster's latitude ascends; read it from the coordinate rather than assume it, so
    # a descending dataset is not drawn upside down.
    if "latitude" in ds.coords and ds.sizes["latitude"] > 1:
        latitude = ds["latitude"].values
        return bool(latitude[0] < latitude[-1])
    return True


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown embedding ``png`` as a data URI: the Dagster UI renders it in metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def quicklook_markdown(png: bytes, stats: RegionStats) -> str:
    """Markdown with the PNG embedded as a data URI and a table of the score classes."""
    lines = [
        png_markdown(png, "quicklook"),
        "",
        "Score 0-10 in the fixed scale of `risk_model/quicklook.py`; transparent = no data. "
        f"Risk min {stats.risk_min:.4g}, mean {stats.risk_mean:.4g}, max {stats.risk_max:.4g}.",
        "",
        "| score | colour | share |",
        "|---|---|---|",
        *(f"| {s} | `{SCORE_COLOURS[s]}` | {stats.class_shares[s]:.2%} |" for s in SCORES),
        f"| no data | transparent | {stats.nodata_share:.2%} |",
    ]
    return "\n".join(lines)

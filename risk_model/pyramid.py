"""A multiscale pyramid of the risk raster, for the web map and the release pictures.

The pyramid lives in the same Icechunk repository as the raster, as Zarr groups
``pyramid/<factor>`` beside the root arrays, so one snapshot (one release tag) holds the
raster and the levels made from exactly that raster. :func:`write_pyramid` writes the
levels into a writable session and leaves the commit to the caller, who commits them with
the release's metadata.

Levels
------
Factors are powers of two that divide both chunk sizes of the grid
(:func:`pyramid_factors`), so a block of a level never straddles a region (chunk) boundary:
a block holds data of one region only, and a level's pixel changes only when that region
is rebuilt. Every level is coarsened from the root raster itself, not from the previous
level, because a mean of NaN-ignoring means is not the NaN-ignoring mean of the block.

Reductions (:func:`coarsen`)
----------------------------
- Float variables (``burn_probability``, ``conditional_risk``, ``risk``): block mean
  ignoring NaN; NaN only where the whole block is NaN.
- ``score``: block *maximum* ignoring the no-data value 255; 255 only where the whole block
  is no data. A maximum, not a mean or mode, because a fire-risk map must not hide a
  high-risk pixel: one score-9 pixel among fifteen score-2 pixels still shows as 9, so a
  reader zoomed out never sees a safer picture than the data.

Grid edges
----------
The last chunk row or column of a grid may be partial, so its size need not be a multiple of
the factor. Such edges are padded (``boundary="pad"``), not trimmed: trimming would drop up
to ``factor - 1`` rows or columns of real data at the map's edge. A padded block reduces
over its real pixels only (the padding is NaN for floats and no data for ``score``), and
its coordinate is the centre of the full block, so every level is a regular grid with
pixel size ``factor`` times the raster's.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from risk_model.errors import BadInputError
from risk_model.grid import GridSpec
from risk_model.schema import DIMS, SCORE_NODATA, VARIABLES

#: Group that holds the levels; level ``f`` is the group ``pyramid/<f>``.
PYRAMID_GROUP = "pyramid"
#: Longest chunk side of a level's arrays: small enough for a browser to fetch one chunk per tile.
MAX_LEVEL_CHUNK = 512
#: ``kind`` attribute of a level group (the root template's is ``template``).
LEVEL_KIND = "pyramid_level"

_FILL_VALUES: dict[str, float | int] = {v.name: v.fill_value for v in VARIABLES}
# Stands in for no data while taking block maxima: below every score, so any score wins.
_SCORE_BELOW_ALL = -1


class PyramidLevelNotFoundError(BadInputError, LookupError):
    """The snapshot holds no pyramid, or no level of the requested factor."""


@dataclass(frozen=True)
class PyramidLevel:
    """One level of the pyramid as written.

    Attributes
    ----------
    factor
        Coarsening factor: one level pixel covers ``factor x factor`` raster pixels.
    shape
        ``(rows, cols)`` of the level.
    group
        Zarr group path of the level inside the repository, ``pyramid/<factor>``.
    """

    factor: int
    shape: tuple[int, int]
    group: str

    def __post_init__(self) -> None:
        # Read back from JSON commit metadata the shape is a list; keep equality with tuples.
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))

    def as_metadata(self) -> dict[str, Any]:
        """The level as JSON-able commit metadata; ``PyramidLevel(**level.as_metadata())`` restores it."""
        return {"factor": self.factor, "shape": list(self.shape), "group": self.group}


def level_group(factor: int) -> str:
    """The Zarr group path of the level of ``factor``."""
    return f"{PYRAMID_GROUP}/{factor}"


def level_shape(grid: GridSpec, factor: int) -> tuple[int, int]:
    """Shape of the level of ``factor`` of ``grid`` (partial edge blocks count as pixels)."""
    return (math.ceil(grid.shape[0] / factor), math.ceil(grid.shape[1] / factor))


def pyramid_factors(grid: GridSpec, max_side: int = 1024) -> list[int]:
    """Coarsening factors of the pyramid of ``grid``: 2, 4, 8, ...

    Every factor divides both chunk sizes of the grid, so no block straddles a region
    boundary. Factors are added until the coarsened grid's long side is at most
    ``max_side`` or the next factor would not divide the chunks. The first factor is always
    included when it divides the chunks, so even a small grid has one coarse level.

    Parameters
    ----------
    grid
        The raster's grid.
    max_side
        Long side, in pixels, at which the pyramid may stop.

    Returns
    -------
    list[int]
        Increasing factors; empty only when a chunk side is odd.

    Raises
    ------
    ValueError
        If ``max_side < 1``.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    factors: list[int] = []
    factor = 2
    while all(chunk % factor == 0 for chunk in grid.chunks):
        factors.append(factor)
        if max(level_shape(grid, factor)) <= max_side:
            break
        factor *= 2
    return factors


def _block_centres(values: npt.NDArray[np.float64], factor: int) -> npt.NDArray[np.float64]:
    """Centre of every block of ``factor`` consecutive pixel centres (the last may be partial)."""
    n = values.size
    full = n // factor
    centres = values[: full * factor].reshape(full, factor).mean(axis=1)
    if n % factor == 0:
        return centres
    # A padded block: its centre lies (factor - 1) / 2 steps past its first pixel, as for a
    # whole block, so the level stays a regular grid. The step is read from the coordinate
    # because it is regular by construction (GridSpec.latitude / longitude).
    step = float(values[-1] - values[0]) / (n - 1) if n > 1 else 0.0
    last = values[full * factor] + (factor - 1) / 2 * step
    return np.append(centres, last)


def _coarsen_score(score: xr.DataArray, factor: int) -> xr.DataArray:
    # int16 holds the scores and the stand-in for no data; the max of a block then ignores
    # no data without NaN (whose all-NaN blocks would warn and would force a float array).
    low = score.astype(np.int16).where(score != SCORE_NODATA, _SCORE_BELOW_ALL)
    # Padding (partial edge blocks) turns the array into floats padded with NaN; every block
    # still holds at least one real pixel, so max (NaN-skipping for floats) never sees an empty block.
    peak = low.coarsen({d: factor for d in DIMS}, boundary="pad").max()
    return peak.where(peak > _SCORE_BELOW_ALL, SCORE_NODATA).astype(np.uint8)


def coarsen(ds: xr.Dataset, factor: int) -> xr.Dataset:
    """Coarsen the raster dataset by ``factor`` along latitude and longitude, lazily.

    Float variables become the block mean ignoring NaN (NaN where the whole block is NaN);
    ``score`` becomes the block maximum ignoring the no-data value 255 (255 where the whole
    block is no data), so a high-risk pixel is never hidden at a coarse zoom. Shapes not
    divisible by ``factor`` are padded (see the module docstring). Dask arrays stay lazy.

    Parameters
    ----------
    ds
        The raster dataset (or a window of it), with variables over
        ``(latitude, longitude)`` and those coordinates.
    factor
        Block side in pixels, at least 1 (1 returns ``ds`` unchanged).

    Returns
    -------
    xarray.Dataset
        Same variables, dtypes and attributes; coordinates are block centres.

    Raises
    ------
    ValueError
        If ``factor < 1``, a variable is not over ``(latitude, longitude)``, or a variable is
        neither floating point nor ``score`` (there is no rule to reduce it).
    """
    if factor < 1:
        raise ValueError(f"a coarsening factor is at least 1, got {factor}")
    if factor == 1:
        return ds
    # Coordinates are recomputed below; dropping them keeps xarray from averaging padded ones.
    bare = ds.drop_vars(list(ds.coords))
    data_vars: dict[str, xr.DataArray] = {}
    for name, var in bare.data_vars.items():
        if set(var.dims) != set(DIMS):
            raise ValueError(f"variable {name!r} has dimensions {var.dims}, expected {DIMS}")
        if name == "score":
            reduced = _coarsen_score(var, factor)
        elif np.issubdtype(var.dtype, np.floating):
            # Coarsen reductions skip NaN for floats by default: the mean of a block's data
            # pixels, NaN only for an all-NaN block.
            reduced = var.coarsen({d: factor for d in DIMS}, boundary="pad").mean().astype(var.dtype)
        else:
            raise ValueError(f"no coarsening rule for variable {name!r} of dtype {var.dtype}")
        reduced.attrs = dict(var.attrs)
        data_vars[str(name)] = reduced
    coords = {
        dim: xr.Variable(dim, _block_centres(np.asarray(ds[dim].values, dtype=np.float64), factor), ds[dim].attrs)
        for dim in DIMS
    }
    return xr.Dataset(data_vars, coords=coords, attrs=dict(ds.attrs))


def level_chunks(grid: GridSpec, factor: int) -> tuple[int, int]:
    """Zarr chunk shape of the level of ``factor`` (at most :data:`MAX_LEVEL_CHUNK` per side)."""
    rows, cols = level_shape(grid, factor)
    return (min(MAX_LEVEL_CHUNK, rows), min(MAX_LEVEL_CHUNK, cols))


def level_window(rows: slice, cols: slice, factor: int) -> tuple[slice, slice]:
    """The level pixels of ``factor`` made from the raster pixels ``rows, cols`` of a region.

    A region's start is a multiple of the factor (factors divide the chunks); its end may be
    the grid's edge, whose partial block is one padded level pixel (see the module docstring).
    """
    return (
        slice(rows.start // factor, -(-rows.stop // factor)),
        slice(cols.start // factor, -(-cols.stop // factor)),
    )


def level_dataset(root: xr.Dataset, grid: GridSpec, factor: int) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    level = coarsen(root, factor)
    chunks = level_chunks(grid, factor)
    # Dask chunks equal to the Zarr chunks: each write task owns whole chunks, which is what
    # to_icechunk's safe_chunks check demands; the root's encoding (256-pixel chunks) must go.
    level = level.drop_encoding().chunk(dict(zip(DIMS, chunks, strict=True)))
    dy, dx = grid.pixel_size
    level.attrs = {
        "kind": LEVEL_KIND,
        "factor": factor,
        "pixel_size_deg": [dy * factor, dx * factor],
        "grid": grid.name,
        "grid_fingerprint": grid.fingerprint,
    }
    encoding: dict[str, dict[str, Any]] = {
        str(name): {"chunks": chunks, "fill_value": _FILL_VALUES.get(str(name), np.nan)} for name in level.data_vars
    }
    for dim, side in zip(DIMS, level_shape(grid, factor), strict=True):
        encoding[dim] = {"chunks": (side,)}
    return level, encoding

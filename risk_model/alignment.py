"""Chunk alignment: a region write must cover exactly one chunk of the grid, coordinates bit for bit."""

from typing import Any

import numpy as np
import xarray as xr

from risk_model.errors import BadInputError
from risk_model.grid import GridSpec, Region


class MisalignedRegionError(BadInputError, ValueError):
    """A region write that does not cover exactly whole chunks of the template."""


def _window_of(coord: np.ndarray[Any, Any], full_origin: float, step: float, full: np.ndarray[Any, Any]) -> slice:
    """Index window of ``coord`` inside the full coordinate ``full``, checked bit for bit."""
    start = round((float(coord[0]) - full_origin) / step - 0.5)
    stop = start + coord.size
    if start < 0 or stop > full.size or not np.array_equal(full[start:stop], coord):
        raise MisalignedRegionError(
            "the region's coordinates are not the template's: region writes need coordinates equal "
            "to the grid's bit for bit (build them with risk_model.schema.coordinates)"
        )
    return slice(start, stop)


def check_alignment(grid: GridSpec, ds: xr.Dataset, expected: Region | None = None) -> tuple[slice, slice]:
    """Locate ``ds`` in ``grid`` and refuse it unless it covers whole chunks exactly.

    xarray checks chunk alignment only for dask arrays: a misaligned numpy write silently
    rewrites part of a neighbour's chunk. This check runs before anything is written.

    Parameters
    ----------
    grid
        The grid of the template.
    ds
        The region's dataset, with ``latitude`` and ``longitude`` coordinates.
    expected
        If given, the region that ``ds`` must be exactly.

    Returns
    -------
    tuple[slice, slice]
        The row and column windows of ``ds`` in the grid.

    Raises
    ------
    MisalignedRegionError
        If the window does not start and end on chunk boundaries (or the grid's edge), or is
        not ``expected``.
    """
    rows = _window_of(ds["latitude"].values, grid.transform[5], grid.transform[4], grid.latitude())
    cols = _window_of(ds["longitude"].values, grid.transform[2], grid.transform[0], grid.longitude())
    for name, window, chunk, size in (
        ("rows", rows, grid.chunks[0], grid.shape[0]),
        ("columns", cols, grid.chunks[1], grid.shape[1]),
    ):
        end_ok = window.stop % chunk == 0 or window.stop == size
        if window.start % chunk != 0 or not end_ok or window.stop - window.start > chunk:
            raise MisalignedRegionError(
                f"refusing a misaligned region write: {name} {window.start}:{window.stop} do not match "
                f"exactly one chunk of {chunk} on grid {grid.name!r}; nothing was written"
            )
    if expected is not None and (rows, cols) != (expected.rows, expected.cols):
        raise MisalignedRegionError(
            f"the dataset covers rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}, "
            f"but region {expected.id} is rows {expected.rows.start}:{expected.rows.stop}, columns "
            f"{expected.cols.start}:{expected.cols.stop}; nothing was written"
        )
    return rows, cols

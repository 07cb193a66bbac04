"""The layout of the risk raster: variables, dtypes, fill values and the template.

The template (full size, metadata and coordinates only) and every region's dataset are
both built from this module, so a region always matches the template it is written into.
"""

from dataclasses import dataclass

import numpy as np
import xarray as xr

from risk_model.grid import GridSpec

DIMS = ("latitude", "longitude")
SCORE_NODATA = 255


@dataclass(frozen=True)
class Variable:
    """One data variable of the raster."""

    name: str
    dtype: str
    fill_value: float | int
    long_name: str
    units: str


VARIABLES: tuple[Variable, ...] = (
    Variable("burn_probability", "float32", float("nan"), "wind-spread annual burn probability", "1"),
    Variable("conditional_risk", "float32", float("nan"), "conditional risk to potential structures", "1"),
    Variable("risk", "float32", float("nan"), "risk to potential structures", "1"),
    Variable("score", "uint8", SCORE_NODATA, "risk score 0-10 (255: no data)", "1"),
)


def coordinates(grid: GridSpec, rows: slice | None = None, cols: slice | None = None) -> dict[str, xr.Variable]:
    """Latitude and longitude coordinates of a window of ``grid`` (the whole grid by default)."""
    return {
        "latitude": xr.Variable(
            "latitude", grid.latitude(rows), {"units": "degrees_north", "standard_name": "latitude"}
        ),
        "longitude": xr.Variable(
            "longitude", grid.longitude(cols), {"units": "degrees_east", "standard_name": "longitude"}
        ),
    }


def encoding(grid: GridSpec) -> dict[str, dict[str, object]]:
    """Zarr encoding of the template: one chunk per region, explicit fill values."""
    enc: dict[str, dict[str, object]] = {v.name: {"chunks": grid.chunks, "fill_value": v.fill_value} for v in VARIABLES}
    # Coordinates are small; one chunk each keeps them to one object per array.
    enc["latitude"] = {"chunks": (grid.shape[0],)}
    enc["longitude"] = {"chunks": (grid.shape[1],)}
    return enc


def template_dataset(grid: GridSpec, attrs: dict[str, str]) -> xr.Dataset:
    """The full-size, lazily filled dataset whose ``to_zarr(compute=False)`` is the template.

    Data variables are dask arrays chunked exactly like the store, so writing the template
    with ``compute=False`` stores metadata and coordinates only.
    """
    # Imported here: only the template needs dask, and every region writer process imports this
    # module (dask.array costs ~0.35 s of a writer's ~2 s of imports).
    import dask.array as da

    data_vars = {
        v.name: xr.Variable(
            DIMS,
            da.full(grid.shape, v.fill_value, dtype=v.dtype, chunks=grid.chunks),  # type: ignore[no-untyped-call]
            {"long_name": v.long_name, "units": v.units},
        )
        for v in VARIABLES
    }
    ds = xr.Dataset(data_vars, coords=coordinates(grid))
    ds.attrs.update(attrs)
    return ds


def empty_region(grid: GridSpec, rows: slice, cols: slice) -> xr.Dataset:
    """A region filled with each variable's no-data value (used for all-ocean windows)."""
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    data_vars = {v.name: xr.Variable(DIMS, np.full(shape, v.fill_value, dtype=v.dtype)) for v in VARIABLES}
    return xr.Dataset(data_vars, coords=coordinates(grid, rows, cols))

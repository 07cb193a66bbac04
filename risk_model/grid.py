"""Pinned output grids and the region registry.

A grid is data (``risk_model/data/grids/<name>.json``): CRS, affine transform, shape and
chunk shape. It is never fetched at run time. A region is exactly one Zarr chunk of that
grid; the list of regions that hold data is computed from the inputs once
(``risk regions``) and checked in as ``risk_model/data/regions/<name>.json``.

Region ids are ``y{iy}_x{ix}``: ``iy`` is the chunk row counted from the grid's first row,
which is its southern edge (latitude ascends), and ``ix`` the chunk column counted from the
west. That is the convention of the reference project (carbonplan/ocr): ``conus-30m`` is
its grid, bit for bit, and its list of regions with data is checked in as ours; ``demo`` and
``mini`` are windows of the same lattice (see ``tests/test_reference_grid.py``).

The :class:`RegionRegistry` is the single source of the region list: the Dagster
partitions definition, the IO manager and the tests all read it.
"""

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from importlib import resources as importlib_resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from affine import Affine
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from risk_model.digest import sha256_prefix
from risk_model.errors import BadInputError

if TYPE_CHECKING:
    # NumPy is imported by the two methods that use it: `risk build` reads grids and region ids
    # to decide that nothing is to run, and that decision imports no array library.
    import numpy as np
    import numpy.typing as npt

_REGION_ID = re.compile(r"^y(\d+)_x(\d+)$")
DATA_DIR = Path(str(importlib_resources.files("risk_model") / "data"))
#: The production grid: every other grid file in the same CRS must be a window of its pixel lattice.
REFERENCE_GRID = "conus-30m"
# Pixel sizes agree to this relative tolerance, origins to this fraction of a pixel: JSON
# round-trips the coefficients exactly, so anything more is a different lattice.
_LATTICE_SIZE_RTOL = 1e-12
_LATTICE_ALIGN_TOL = 1e-6

PositiveInt = Annotated[int, Field(gt=0)]


class UnknownRegionError(BadInputError, KeyError):
    """A region id that the grid's region registry does not hold."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


class GridError(BadInputError, ValueError):
    """A grid definition file that cannot be read, is invalid, or is off the production lattice."""


class UnknownGridError(BadInputError, FileNotFoundError):
    """A grid name with no definition file."""


class GridSpec(BaseModel):
    """A raster grid: CRS, affine transform, shape and chunk shape.

    Rows run with latitude ascending (the transform's ``e`` term is positive), as in the
    production raster, so row 0 is the southern edge.

    Parameters
    ----------
    name
        Short name of the grid (``demo``, ``conus-30m``).
    crs
        CRS of the grid as an authority string, e.g. ``EPSG:4326``.
    transform
        The six affine coefficients ``(a, b, c, d, e, f)`` mapping (col, row) to (x, y).
    shape
        ``(rows, cols)``.
    chunks
        Zarr chunk shape ``(rows, cols)``; one chunk is one region.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    crs: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[PositiveInt, PositiveInt]
    chunks: tuple[PositiveInt, PositiveInt]
    description: str = ""

    @field_validator("transform")
    @classmethod
    def _north_up_free_of_rotation(
        cls, value: tuple[float, float, float, float, float, float]
    ) -> tuple[float, float, float, float, float, float]:
        a, b, _, d, e, _ = value
        if b != 0 or d != 0:
            raise ValueError("rotated grids are not supported: transform terms b and d must be 0")
        if a <= 0 or e <= 0:
            raise ValueError("pixel sizes must be positive (columns east, rows north)")
        return value

    @property
    def affine(self) -> Affine:
        """The grid's transform as an :class:`affine.Affine`."""
        return Affine(*self.transform)

    @property
    def chunk_counts(self) -> tuple[int, int]:
        """Number of chunks along rows and columns."""
        return (
            math.ceil(self.shape[0] / self.chunks[0]),
            math.ceil(self.shape[1] / self.chunks[1]),
        )

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel size ``(dy, dx)`` in CRS units."""
        return (self.transform[4], self.transform[0])

    def latitude(self, rows: slice | None = None) -> "npt.NDArray[np.float64]":
        """Pixel-centre y coordinates of ``rows`` (all rows by default).

        Every caller computes coordinates through this one function, elementwise from the
        row index, so a region's coordinates equal the template's bit for bit (xarray's
        ``region="auto"`` matches coordinates exactly).
        """
        import numpy as np

        rows = rows or slice(0, self.shape[0])
        idx = np.arange(rows.start, rows.stop, dtype=np.float64)
        return self.transform[5] + (idx + 0.5) * self.transform[4]

    def longitude(self, cols: slice | None = None) -> "npt.NDArray[np.float64]":
        """Pixel-centre x coordinates of ``cols`` (all columns by default)."""
        import numpy as np

        cols = cols or slice(0, self.shape[1])
        idx = np.arange(cols.start, cols.stop, dtype=np.float64)
        return self.transform[2] + (idx + 0.5) * self.transform[0]

    def window_transform(self, rows: slice, cols: slice) -> Affine:
        """Transform of the sub-grid starting at ``(rows.start, cols.start)``."""
        return self.affine @ Affine.translation(cols.start, rows.start)

    def bounds(self, rows: slice, cols: slice) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of a window of this grid."""
        a, _, c, _, e, f = self.transform
        return (c + cols.start * a, f + rows.start * e, c + cols.stop * a, f + rows.stop * e)

    @cached_property
    def fingerprint(self) -> str:
        """A stable digest of the grid definition, stored in the template's attributes."""
        # pydantic's JSON (field order of the model), not canonical JSON: templates already
        # committed carry this fingerprint, and a new one would refuse them.
        return sha256_prefix(self.model_dump_json(exclude={"description"}), 16)


@dataclass(frozen=True)
class Region:
    """One chunk of a grid: the unit of work and of commits."""

    id: str
    iy: int
    ix: int
    rows: slice
    cols: slice
    bounds: tuple[float, float, float, float]

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the region (edge regions may be smaller than a chunk)."""
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)


def parse_region_id(region_id: str) -> tuple[int, int]:
    """Split ``y{iy}_x{ix}`` into its chunk indices.

    Raises
    ------
    UnknownRegionError
        If the id is not of that form.
    """
    match = _REGION_ID.match(region_id)
    if match is None:
        raise UnknownRegionError(
            f"region id {region_id!r} is malformed: region ids look like 'y3_x12' (chunk row, column)"
        )
    return int(match.group(1)), int(match.group(2))


def region_of_chunk(grid: GridSpec, iy: int, ix: int) -> Region:
    """The region covering chunk ``(iy, ix)`` of ``grid``."""
    ny, nx = grid.chunk_counts
    if not (0 <= iy < ny and 0 <= ix < nx):
        raise UnknownRegionError(f"region y{iy}_x{ix} is outside grid {grid.name!r}, which has {ny} x {nx} chunks")
    cy, cx = grid.chunks
    rows = slice(iy * cy, min((iy + 1) * cy, grid.shape[0]))
    cols = slice(ix * cx, min((ix + 1) * cx, grid.shape[1]))
    return Region(id=f"y{iy}_x{ix}", iy=iy, ix=ix, rows=rows, cols=cols, bounds=grid.bounds(rows, cols))


class RegionRegistry:
    """The regions of one grid that hold data: the single source of the region list.

    Parameters
    ----------
    grid
        The grid the regions cut.
    region_ids
        Ids of the regions that hold data, in any order; they are kept sorted by
        (row, column).
    """

    def __init__(self, grid: GridSpec, region_ids: list[str]) -> None:
        self.grid = grid
        regions = [region_of_chunk(grid, *parse_region_id(rid)) for rid in region_ids]
        regions.sort(key=lambda r: (r.iy, r.ix))
        self._by_id = {r.id: r for r in regions}
        if len(self._by_id) != len(regions):
            raise ValueError(f"duplicate region ids in the registry of grid {grid.name!r}")

    def __iter__(self) -> Iterator[Region]:
        return iter(self._by_id.values())

    def region_at(self, lon: float, lat: float) -> Region:
        """The region holding the point ``(lon, lat)`` (degrees, the grid's CRS).

        Raises
        ------
        UnknownRegionError
            If the point is outside the grid or in a chunk that holds no data.
        """
        col, row = ~self.grid.affine @ (lon, lat)
        if not (0 <= row < self.grid.shape[0] and 0 <= col < self.grid.shape[1]):
            west, south, east, north = self.grid.bounds(slice(0, self.grid.shape[0]), slice(0, self.grid.shape[1]))
            raise UnknownRegionError(
                f"point ({lon}, {lat}) is outside grid {self.grid.name!r}, which covers longitude "
                f"{west:.4f} to {east:.4f} and latitude {south:.4f} to {north:.4f}"
            )
        region = region_of_chunk(self.grid, int(row) // self.grid.chunks[0], int(col) // self.grid.chunks[1])
        if region.id not in self._by_id:
            raise UnknownRegionError(f"point ({lon}, {lat}) is in chunk {region.id}, which holds no data (no region)")
        return self._by_id[region.id]

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, region_id: object) -> bool:
        return region_id in self._by_id

    @property
    def ids(self) -> list[str]:
        """Region ids sorted by chunk row, then column."""
        return list(self._by_id)

    def get(self, region_id: str) -> Region:
        """The region with id ``region_id``.

        Raises
        ------
        UnknownRegionError
            If the grid has no such region, or the region holds no data.
        """
        try:
            return self._by_id[region_id]
        except KeyError:
            parse_region_id(region_id)  # a malformed id gets the more precise message
            raise UnknownRegionError(
                f"region {region_id!r} is not a region of grid {self.grid.name!r} "
                f"({len(self)} regions hold data; list them with `risk regions --grid {self.grid.name} --list`)"
            ) from None


def lattice_problem(grid: GridSpec, reference: GridSpec) -> str | None:
    """Why ``grid`` is not a window of ``reference``'s pixel lattice; ``None`` if it is (or is in another CRS).

    A window of the lattice has the reference's pixel size and an origin a whole number of pixels
    from the reference's origin, so its pixels are the reference's pixels: an input on the
    production lattice (the conditional risk) is then on the grid, and regions of both grids
    agree pixel for pixel. Grids in another CRS are not compared.
    """
    if grid.crs != reference.crs:
        return None
    a, _, c, _, e, f = grid.transform
    ra, _, rc, _, re_, rf = reference.transform
    if not (math.isclose(a, ra, rel_tol=_LATTICE_SIZE_RTOL) and math.isclose(e, re_, rel_tol=_LATTICE_SIZE_RTOL)):
        return f"its pixel size {a!r} x {e!r} is not the pixel size {ra!r} x {re_!r} of grid {reference.name!r}"
    cols, rows = (c - rc) / ra, (f - rf) / re_
    if abs(cols - round(cols)) > _LATTICE_ALIGN_TOL or abs(rows - round(rows)) > _LATTICE_ALIGN_TOL:
        near_c, near_f = rc + round(cols) * ra, rf + round(rows) * re_
        return (
            f"its origin ({c!r}, {f!r}) is {cols:.4f} columns and {rows:.4f} rows from the origin of grid "
            f"{reference.name!r}, not a whole number of pixels: the nearest origin on the lattice is "
            f"({near_c!r}, {near_f!r})"
        )
    return None


def load_grid(name: str, data_dir: Path = DATA_DIR) -> GridSpec:
    """Read the pinned grid definition ``name`` from ``data_dir/grids``.

    A grid other than :data:`REFERENCE_GRID` in the reference's CRS must be a window of its
    pixel lattice (see :func:`lattice_problem`; checked when ``data_dir`` holds the reference).

    Raises
    ------
    UnknownGridError
        If there is no such grid; the message lists the grids that exist.
    GridError
        If the file is not a valid grid definition, or is off the reference's lattice; the
        message names the file, the problem and the fix.
    """
    path = data_dir / "grids" / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (data_dir / "grids").glob("*.json"))
        raise UnknownGridError(f"unknown grid {name!r}: known grids are {', '.join(known)}")
    try:
        grid = GridSpec.model_validate_json(path.read_text())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise GridError(
            f"grid file {path} is not a valid grid definition: {problems}. Fix these fields "
            "(see risk_model/grid.py, GridSpec)"
        ) from None
    reference_path = data_dir / "grids" / f"{REFERENCE_GRID}.json"
    if name != REFERENCE_GRID and reference_path.is_file():
        problem = lattice_problem(grid, GridSpec.model_validate_json(reference_path.read_text()))
        if problem is not None:
            raise GridError(
                f"grid file {path} is misaligned: {problem}. Every grid in {grid.crs} is a window of the "
                f"{REFERENCE_GRID} lattice (its inputs are on it): move the origin onto the lattice and "
                "use its pixel size"
            )
    return grid


def regions_file(grid_name: str, data_dir: Path = DATA_DIR) -> Path:
    """Path of the checked-in region list of a grid."""
    return data_dir / "regions" / f"{grid_name}.json"


def load_registry(grid_name: str, data_dir: Path = DATA_DIR) -> RegionRegistry:
    """The region registry of the grid ``grid_name``, from the checked-in region list."""
    grid = load_grid(grid_name, data_dir)
    path = regions_file(grid_name, data_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"grid {grid_name!r} has no region list at {path}: compute it with "
            f"`risk regions --grid {grid_name} --write`"
        )
    payload = json.loads(path.read_text())
    return RegionRegistry(grid, list(payload["regions"]))

"""Which regions of a grid hold data: computed once from the inputs' footprints, checked in.

The footprint of a source is its valid-data mask, read decimated (a rasterio ``out_shape``
read, which GDAL serves from overviews when the file has them), so the same code lists the
799 chunks of the 97,579 x 208,881 production grid in seconds. The listing is conservative:
a chunk is listed when any valid source pixel might fall in it.

Run ``python -m risk_model.region_list --grid demo --write`` to regenerate a checked-in list
from synthetic inputs (the demo grid's synthetic inputs; for larger grids the coarse CONUS
footprint of :func:`risk_model.synthetic.write_conus_footprint`).

The production grid ``conus-30m`` is the reference grid of carbonplan/ocr, and its checked-in
list is the reference's own list of regions with data (``valid_region_ids.json``), not one
computed here: a list whose ``source`` starts with :data:`REFERENCE_SOURCE_PREFIX` is not
overwritten unless asked explicitly.
"""

import argparse
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.transform import xy
from rasterio.warp import transform as transform_points
from scipy import ndimage

from risk_model.grid import DATA_DIR, GridSpec, RegionRegistry, load_grid, regions_file
from risk_model.input_set import InputError, InputSet
from risk_model.synthetic import generate_inputs, write_conus_footprint

# Longest side of a decimated footprint read. Every cell corner is transformed into the grid's CRS
# (PROJ, about 1 us a point), so a source in its native CRS costs one transform per cell: 4096 x
# 4096 cells took 10-40 s for the demo's 30 m EPSG:5070 conditional risk. 1024 keeps cells far
# finer than a chunk: 84 m against the demo's 7.7 km chunks, 4.5 km across CONUS against 180 km
# (the listing is conservative either way: a cell counts when any of its pixels is valid).
MAX_FOOTPRINT_PX = 1024
# Grids with more pixels than this get the coarse CONUS footprint instead of full
# synthetic inputs when regions are listed from synthetic data.
MAX_SYNTHETIC_PIXELS = 50_000_000
# The ``source`` of a checked-in list copied from the reference project starts with this.
REFERENCE_SOURCE_PREFIX = "reference list"


def _footprint_chunks(path: str, grid: GridSpec) -> npt.NDArray[np.bool_]:
    """Chunks of ``grid`` (as a boolean chunk-grid array) that a valid pixel of ``path`` may touch."""
    ny, nx = grid.chunk_counts
    hit = np.zeros((ny + 1, nx + 1), dtype=np.int64)  # difference array, one spare row and column
    try:
        src = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"cannot open {path} to read its footprint ({exc}): check the path") from exc
    with src:
        factor = max(1, math.ceil(max(src.height, src.width) / MAX_FOOTPRINT_PX))
        out_h, out_w = math.ceil(src.height / factor), math.ceil(src.width / factor)
        # Average ignores no-data, so a decimated cell is valid when any of its pixels is.
        data = src.read(1, out_shape=(out_h, out_w), resampling=Resampling.average, masked=True)
        valid = ~np.ma.getmaskarray(data)
        if factor > 1:
            # GDAL weighs source pixels that straddle cell edges; growing the decimated mask by
            # one cell keeps the listing conservative whatever those weights round to.
            valid = ndimage.binary_dilation(valid, np.ones((3, 3), dtype=bool))
        if not valid.any():
            return np.zeros((ny, nx), dtype=bool)
        cell: Affine = src.transform @ Affine.scale(src.width / out_w, src.height / out_h)
        # Corners of every cell, in the grid's CRS (bounding boxes of reprojected cells).
        rows, cols = np.meshgrid(np.arange(out_h + 1), np.arange(out_w + 1), indexing="ij")
        xs, ys = xy(cell, rows.ravel(), cols.ravel(), offset="ul")
        grid_crs = CRS.from_user_input(grid.crs)
        if src.crs != grid_crs:
            xs, ys = transform_points(src.crs, grid_crs, xs, ys)
        gx = ((np.asarray(xs) - grid.transform[2]) / grid.transform[0]).reshape(out_h + 1, out_w + 1)
        gy = ((np.asarray(ys) - grid.transform[5]) / grid.transform[4]).reshape(out_h + 1, out_w + 1)

    corners_x = np.stack([gx[:-1, :-1], gx[:-1, 1:], gx[1:, :-1], gx[1:, 1:]])[:, valid]
    corners_y = np.stack([gy[:-1, :-1], gy[:-1, 1:], gy[1:, :-1], gy[1:, 1:]])[:, valid]
    finite = np.isfinite(corners_x).all(axis=0) & np.isfinite(corners_y).all(axis=0)
    col0, col1 = corners_x.min(axis=0)[finite], corners_x.max(axis=0)[finite]
    row0, row1 = corners_y.min(axis=0)[finite], corners_y.max(axis=0)[finite]
    inside = (col1 > 0) & (col0 < grid.shape[1]) & (row1 > 0) & (row0 < grid.shape[0])
    cy, cx = grid.chunks
    iy0 = np.clip(np.floor(row0[inside] / cy), 0, ny - 1).astype(np.int64)
    iy1 = np.clip(np.floor(row1[inside] / cy), 0, ny - 1).astype(np.int64)
    ix0 = np.clip(np.floor(col0[inside] / cx), 0, nx - 1).astype(np.int64)
    ix1 = np.clip(np.floor(col1[inside] / cx), 0, nx - 1).astype(np.int64)
    # Each cell covers the chunk rectangle [iy0, iy1] x [ix0, ix1]: mark it in a 2-D
    # difference array, whose cumulative sums count the cells covering each chunk.
    np.add.at(hit, (iy0, ix0), 1)
    np.add.at(hit, (iy0, ix1 + 1), -1)
    np.add.at(hit, (iy1 + 1, ix0), -1)
    np.add.at(hit, (iy1 + 1, ix1 + 1), 1)
    covered: npt.NDArray[np.bool_] = hit.cumsum(axis=0).cumsum(axis=1)[:ny, :nx] > 0
    return covered


def compute_region_ids(grid: GridSpec, inputs: InputSet | Sequence[str]) -> list[str]:
    """Ids of the regions of ``grid`` that may hold valid input.

    Parameters
    ----------
    grid
        The output grid.
    inputs
        An :class:`~risk_model.input_set.InputSet`, whose burn-probability and conditional-risk
        footprints are combined (the wind shares cover land and sea alike, so they are not a
        footprint), or explicit footprint rasters.

    Returns
    -------
    list of str
        Region ids ``y{iy}_x{ix}`` sorted by chunk row, then column.

    Raises
    ------
    risk_model.input_set.InputError
        If a source cannot be opened.
    """
    paths = [inputs.burn_probability, inputs.conditional_risk] if isinstance(inputs, InputSet) else list(inputs)
    covered = np.zeros(grid.chunk_counts, dtype=bool)
    for path in paths:
        covered |= _footprint_chunks(path, grid)
    return [f"y{iy}_x{ix}" for iy, ix in zip(*np.nonzero(covered), strict=True)]


def is_reference_list(grid_name: str, data_dir: Path = DATA_DIR) -> bool:
    """Whether the checked-in region list of a grid is a reference list (see :data:`REFERENCE_SOURCE_PREFIX`)."""
    path = regions_file(grid_name, data_dir)
    if not path.is_file():
        return False
    return str(json.loads(path.read_text()).get("source", "")).startswith(REFERENCE_SOURCE_PREFIX)


def write_region_list(
    grid_name: str, ids: Sequence[str], source: str, data_dir: Path = DATA_DIR, *, replace_reference: bool = False
) -> Path:
    """Write the checked-in region list of a grid.

    Parameters
    ----------
    grid_name
        Name of a grid in ``data_dir/grids``.
    ids
        Region ids; validated against the grid and sorted by chunk row, then column.
    source
        How the list was computed (the command), stored beside it.
    data_dir
        The package data directory.
    replace_reference
        Overwrite a checked-in reference list (one whose ``source`` starts with
        :data:`REFERENCE_SOURCE_PREFIX`); without it such a list is kept and an error raised.

    Returns
    -------
    pathlib.Path
        The file written, ``data_dir/regions/<grid_name>.json``.

    Raises
    ------
    risk_model.grid.UnknownRegionError
        If an id is malformed or outside the grid.
    ValueError
        If an id is repeated, or the checked-in list is a reference list and
        ``replace_reference`` is false.
    """
    registry = RegionRegistry(load_grid(grid_name, data_dir), list(ids))
    payload = {"grid": grid_name, "source": source, "regions": registry.ids}
    path = regions_file(grid_name, data_dir)
    if not replace_reference and is_reference_list(grid_name, data_dir):
        raise ValueError(
            f"the region list of grid {grid_name!r} ({path}) is the reference project's list: "
            "it is not replaced by a computed one"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def synthetic_region_ids(grid: GridSpec, work_dir: Path, seed: int = 0) -> tuple[list[str], str]:
    """Region ids of ``grid`` from synthetic inputs, and a description of how they were made.

    Grids up to :data:`MAX_SYNTHETIC_PIXELS` pixels get full synthetic inputs
    (:func:`~risk_model.synthetic.generate_inputs`); larger ones the coarse CONUS footprint.
    """
    command = f"python -m risk_model.region_list --grid {grid.name} --write"
    if grid.shape[0] * grid.shape[1] <= MAX_SYNTHETIC_PIXELS:
        inputs = generate_inputs(grid, work_dir, seed=seed)
        how = f"burn_probability and conditional_risk footprints of synthetic inputs (seed {seed})"
        return compute_region_ids(grid, inputs), f"{how}; `{command}`"
    footprint = write_conus_footprint(grid, work_dir)
    how = "footprint of the synthetic CONUS outline rasterised at 0.02 degrees"
    return compute_region_ids(grid, [str(footprint)]), f"{how}; `{command}`"


def main(argv: Sequence[str] | None = None) -> None:
    """Print, and with ``--write`` store, the region list of a grid from synthetic inputs."""
    parser = argparse.ArgumentParser(description="List the regions of a grid that hold data.")
    parser.add_argument("--grid", required=True, help="grid name (risk_model/data/grids/<name>.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    parser.add_argument("--write", action="store_true", help="write risk_model/data/regions/<grid>.json")
    args = parser.parse_args(argv)
    if args.write and is_reference_list(args.grid):
        parser.exit(2, f"the region list of {args.grid} is the reference project's list: not overwriting it\n")
    grid = load_grid(args.grid)
    with tempfile.TemporaryDirectory() as tmp:
        ids, source = synthetic_region_ids(grid, Path(tmp), seed=args.seed)
    ny, nx = grid.chunk_counts
    print(f"{args.grid}: {len(ids)} of {ny * nx} regions hold data")
    if args.write:
        print(f"wrote {write_region_list(args.grid, ids, source)}")


if __name__ == "__main__":
    main()

"""conus-30m is the reference grid, with the reference's regions; demo and mini are windows of it.

The reference is the seed project, carbonplan/ocr (at 0a1b285); the facts used here are
recorded in ``../shared/reference/README.md`` beside this repository.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from risk_model.grid import GridSpec, load_grid, load_registry, parse_region_id, regions_file
from risk_model.region_list import REFERENCE_SOURCE_PREFIX, compute_region_ids, is_reference_list
from risk_model.synthetic import write_conus_footprint

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT.parent / "shared" / "reference"

# The reference CONUS grid, from docs/methods/fire-risk/horizontal-scaling-via-spatial-chunking.ipynb
# of carbonplan/ocr (recorded in ../shared/reference/README.md):
# GeoBox((97579, 208881), Affine(0.00030799387843671866, 0.0, -128.3875562194317,
#                                0.0, 0.00030799387843671866, 22.428114227623333)), EPSG:4326,
# latitude ascending, chunks 6000 x 4500 (17 x 47 = 799 chunks).
REFERENCE_TRANSFORM = (0.00030799387843671866, 0.0, -128.3875562194317, 0.0, 0.00030799387843671866, 22.428114227623333)
REFERENCE_SHAPE = (97579, 208881)
REFERENCE_CHUNKS = (6000, 4500)
REFERENCE_CRS = "EPSG:4326"

# Windows of the production lattice.
WINDOWS = ("demo", "mini")


@pytest.fixture(scope="module")
def reference_ids() -> list[str]:
    """The 405 ids of the reference's regions with data (ocr/data/valid_region_ids.json)."""
    path = REFERENCE_DIR / "valid-region-ids.json"
    if not path.is_file():
        pytest.fail(
            f"the reference region list {path} is missing: these tests hold conus-30m against "
            f"the reference facts in ../shared/reference (a sibling of the repository, {ROOT.parent})"
        )
    ids: list[str] = json.loads(path.read_text())
    return ids


@pytest.fixture(scope="module")
def conus() -> GridSpec:
    return load_grid("conus-30m")


def test_conus_is_the_reference_grid_bit_for_bit(conus: GridSpec) -> None:
    assert conus.transform == REFERENCE_TRANSFORM
    # bit for bit, not merely equal after rounding
    assert [v.hex() for v in conus.transform] == [float(v).hex() for v in REFERENCE_TRANSFORM]
    assert conus.shape == REFERENCE_SHAPE
    assert conus.chunks == REFERENCE_CHUNKS
    assert conus.crs == REFERENCE_CRS
    assert conus.chunk_counts == (17, 47)
    assert conus.transform[4] > 0, "latitude ascends: row 0 is the southern edge"


def test_conus_region_list_is_the_reference_list(reference_ids: list[str]) -> None:
    assert len(reference_ids) == 405 == len(set(reference_ids))
    payload = json.loads(regions_file("conus-30m").read_text())
    assert payload["grid"] == "conus-30m"
    assert payload["source"].startswith(REFERENCE_SOURCE_PREFIX) and "carbonplan/ocr" in payload["source"]
    assert "valid_region_ids.json" in payload["source"]
    assert is_reference_list("conus-30m")
    assert set(payload["regions"]) == set(reference_ids)
    registry = load_registry("conus-30m")
    assert set(registry.ids) == set(reference_ids) and len(registry) == 405


def test_region_ids_count_chunk_rows_from_the_south_as_the_reference_does(
    conus: GridSpec, reference_ids: list[str]
) -> None:
    """``y{iy}_x{ix}``: ``iy`` is the chunk row counted from the south (latitude ascends).

    The reference's list has no region in its first chunk row (24.28 N and south is sea and
    Mexico, apart from islets) and reaches the 49th parallel in its last rows; counted from
    the north, its first rows would be in Canada.
    """
    registry = load_registry("conus-30m")
    rows = {parse_region_id(rid)[0] for rid in reference_ids}
    assert min(rows) == 1 and max(rows) == 14
    assert registry.region_at(-98.0, 38.5).id in reference_ids  # Kansas
    assert registry.region_at(-80.3, 25.8).id in reference_ids  # Miami
    assert registry.region_at(-97.5, 25.95).id in reference_ids  # Brownsville
    assert registry.region_at(-122.4, 47.6).id in reference_ids  # Seattle
    region = registry.get("y1_x21")
    west, south, east, north = region.bounds
    assert south < 26.05 < north and west < -98.2 < east  # the lower Rio Grande valley, Texas


def test_the_synthetic_conus_footprint_lists_about_the_reference_regions(
    conus: GridSpec, reference_ids: list[str], tmp_path: Path
) -> None:
    """Our own listing code on the reference grid agrees with the reference's list: same ids, same chunks."""
    ids = set(compute_region_ids(conus, [str(write_conus_footprint(conus, tmp_path))]))
    reference = set(reference_ids)
    # measured: 399 in common, 1 only ours, 6 only the reference's (coastal chunks the outline cuts)
    assert len(ids & reference) / len(ids | reference) > 0.95


@pytest.mark.parametrize("name", WINDOWS)
def test_windows_lie_on_the_conus_lattice(name: str, conus: GridSpec) -> None:
    grid = load_grid(name)
    assert grid.crs == conus.crs
    assert grid.pixel_size == conus.pixel_size  # exactly the same floats
    assert (grid.transform[1], grid.transform[3]) == (0.0, 0.0)
    a, _, c0, _, e, f0 = conus.transform
    col = (grid.transform[2] - c0) / a
    row = (grid.transform[5] - f0) / e
    assert abs(col - round(col)) < 1e-9 and abs(row - round(row)) < 1e-9, (col, row)
    k_col, k_row = round(col), round(row)
    assert k_row >= 0 and k_row + grid.shape[0] <= conus.shape[0]
    assert k_col >= 0 and k_col + grid.shape[1] <= conus.shape[1]
    rows, cols = slice(k_row, k_row + grid.shape[0]), slice(k_col, k_col + grid.shape[1])
    # The origin is stored as the float c0 + k * a: the value the code computes for that edge.
    assert (grid.transform[2], grid.transform[5]) == (c0 + k_col * a, f0 + k_row * e)
    assert tuple(conus.window_transform(rows, cols))[:6] == grid.transform
    assert grid.bounds(slice(0, grid.shape[0]), slice(0, grid.shape[1])) == conus.bounds(rows, cols)
    # Pixel centres equal the conus grid's bit for bit (measured; not guaranteed for any origin).
    np.testing.assert_array_equal(grid.latitude(), conus.latitude(rows))
    np.testing.assert_array_equal(grid.longitude(), conus.longitude(cols))


def test_windows_stay_on_the_northern_california_coast() -> None:
    demo, mini = load_grid("demo"), load_grid("mini")
    assert (demo.shape, demo.chunks) == ((1792, 2560), (256, 256))
    assert (mini.shape, mini.chunks) == ((256, 384), (64, 64))
    assert math.isclose(demo.transform[2], -123.2, abs_tol=0.001)
    assert math.isclose(demo.transform[5], 38.0, abs_tol=0.001)
    d_west, d_south, d_east, d_north = demo.bounds(slice(0, demo.shape[0]), slice(0, demo.shape[1]))
    m_west, m_south, m_east, m_north = mini.bounds(slice(0, mini.shape[0]), slice(0, mini.shape[1]))
    assert d_west < m_west < m_east < d_east and d_south < m_south < m_north < d_north

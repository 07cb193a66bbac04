"""The multiscale pyramid: factors, reductions, and levels written to a real Icechunk repository.

One repository (module scope) holds the demo template, three regions of known data and a
committed pyramid; the expected levels are computed here with plain numpy from the data that
was written, never with the code under test.
"""

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import icechunk
import numpy as np
import numpy.typing as npt
import pytest
import xarray as xr

from resources.local_store import LocalIcechunkStore
from resources.pyramid_store import (
    coarsest_level,
    list_levels,
    open_level,
    pyramid_matches,
    update_pyramid,
    write_pyramid,
)
from resources.region_write import write_region
from resources.template import ensure_template
from risk_model.grid import GridSpec, RegionRegistry, load_grid, load_registry
from risk_model.pictures import render_overview
from risk_model.pyramid import (
    PyramidLevel,
    PyramidLevelNotFoundError,
    coarsen,
    level_chunks,
    level_shape,
    level_window,
    pyramid_factors,
)
from risk_model.schema import DIMS, SCORE_NODATA, VARIABLES, coordinates
from risk_model.versions import BuildKey

FLOATS = [v.name for v in VARIABLES if v.name != "score"]
# Region with random data and holes, a constant region, and one on the grid's eastern edge.
RANDOM_REGION, CONSTANT_REGION, EDGE_REGION = "y0_x1", "y3_x5", "y6_x9"
UNWRITTEN_REGION = "y5_x5"


def _random_region(registry: RegionRegistry, region_id: str, seed: int) -> dict[str, npt.NDArray[Any]]:
    """Known data of one region, with the cases the reductions must get right at factor 4."""
    region = registry.get(region_id)
    rng = np.random.default_rng(seed)
    data: dict[str, npt.NDArray[Any]] = {}
    for name in FLOATS:
        values = rng.random(region.shape, dtype=np.float32)
        values[rng.random(region.shape) < 0.2] = np.nan  # scattered holes: partly empty blocks
        values[0:4, 0:4] = np.nan  # one whole 4 x 4 block without data
        data[name] = values
    score = rng.integers(0, 11, region.shape).astype(np.uint8)
    score[rng.random(region.shape) < 0.2] = SCORE_NODATA
    score[0:4, 0:4] = SCORE_NODATA  # a whole block without data
    score[4:8, 0:4] = 2
    score[5, 2] = 9  # one high-risk pixel among fifteen low ones
    score[8:12, 0:4] = SCORE_NODATA
    score[9, 1] = 1  # one data pixel in a block of no data
    data["score"] = score
    return data


def _constant_region(registry: RegionRegistry, region_id: str) -> dict[str, npt.NDArray[Any]]:
    shape = registry.get(region_id).shape
    data: dict[str, npt.NDArray[Any]] = {name: np.full(shape, 0.25, dtype=np.float32) for name in FLOATS}
    data["score"] = np.full(shape, 7, dtype=np.uint8)
    return data


def _dataset(registry: RegionRegistry, region_id: str, data: dict[str, npt.NDArray[Any]]) -> xr.Dataset:
    region = registry.get(region_id)
    return xr.Dataset(
        {name: (DIMS, values) for name, values in data.items()},
        coords=coordinates(registry.grid, region.rows, region.cols),
    )


@dataclass(frozen=True)
class Built:
    store: LocalIcechunkStore
    registry: RegionRegistry
    data: dict[str, dict[str, npt.NDArray[Any]]]
    before: str
    after: str
    levels: list[PyramidLevel]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A demo repository with three regions committed, then a pyramid committed on top."""
    registry = load_registry("demo")
    grid = registry.grid
    store = LocalIcechunkStore(path=str(tmp_path_factory.mktemp("pyramid") / "repo.icechunk"))
    ensure_template(store, grid, {})
    data = {
        RANDOM_REGION: _random_region(registry, RANDOM_REGION, seed=1),
        CONSTANT_REGION: _constant_region(registry, CONSTANT_REGION),
        EDGE_REGION: _random_region(registry, EDGE_REGION, seed=2),
    }
    for region_id, values in data.items():
        result = write_region(
            store,
            grid,
            registry.get(region_id),
            _dataset(registry, region_id, values),
            key=BuildKey("p", "i", "c"),
            run_id="t",
        )
        assert result.status == "written"
    repo = store.repository()
    before = repo.lookup_branch("main")
    session = repo.writable_session("main")
    levels = write_pyramid(session, grid)
    after = session.commit("pyramid", metadata={"kind": "pyramid"})
    return Built(store, registry, data, before, after, levels)


def _readonly(built: Built, snapshot_id: str) -> icechunk.Session:
    return built.store.repository().readonly_session(snapshot_id=snapshot_id)


def _blocks(values: npt.NDArray[Any], factor: int) -> npt.NDArray[Any]:
    """``values`` as ``(block row, block col, factor * factor)``."""
    rows, cols = values.shape
    return (
        values.reshape(rows // factor, factor, cols // factor, factor)
        .transpose(0, 2, 1, 3)
        .reshape(rows // factor, cols // factor, factor * factor)
    )


def _expected_mean(values: npt.NDArray[Any], factor: int) -> npt.NDArray[np.float64]:
    with warnings.catch_warnings():
        # numpy warns on an all-NaN block; its NaN result is exactly what we expect there.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(np.nanmean(_blocks(values, factor).astype(np.float64), axis=2))


def _expected_score(score: npt.NDArray[Any], factor: int) -> npt.NDArray[np.uint8]:
    as_int = np.where(score == SCORE_NODATA, -1, score.astype(np.int16))
    peak = _blocks(as_int, factor).max(axis=2)
    return np.where(peak < 0, SCORE_NODATA, peak).astype(np.uint8)


def _level_window(level: xr.Dataset, built: Built, region_id: str, factor: int) -> xr.Dataset:
    region = built.registry.get(region_id)
    return level.isel(
        latitude=slice(region.rows.start // factor, region.rows.stop // factor),
        longitude=slice(region.cols.start // factor, region.cols.stop // factor),
    )


# --- factors -----------------------------------------------------------------------------


def _grid(shape: tuple[int, int], chunks: tuple[int, int]) -> GridSpec:
    return GridSpec(name="t", crs="EPSG:4326", transform=(0.1, 0.0, 0.0, 0.0, 0.1, 0.0), shape=shape, chunks=chunks)


def test_demo_grid_has_two_levels_that_divide_its_chunks() -> None:
    grid = load_registry("demo").grid
    assert pyramid_factors(grid) == [2, 4]  # 2560 / 4 = 640 <= 1024 ends the pyramid
    assert pyramid_factors(grid, max_side=100) == [2, 4, 8, 16, 32]  # 2560 / 32 = 80


def test_factors_stop_where_the_next_would_straddle_chunks() -> None:
    # The production chunks 6000 x 4500: 8 does not divide 4500, whatever the size.
    assert pyramid_factors(_grid((97579, 208881), (6000, 4500))) == [2, 4]
    assert pyramid_factors(_grid((100, 100), (255, 256))) == []
    # A grid already small has one coarse level.
    assert pyramid_factors(_grid((64, 64), (64, 64))) == [2]
    with pytest.raises(ValueError, match="max_side"):
        pyramid_factors(_grid((64, 64), (64, 64)), max_side=0)


# --- coarsen, in memory ------------------------------------------------------------------


def _small(shape: tuple[int, int]) -> xr.Dataset:
    grid = _grid(shape, shape)
    rng = np.random.default_rng(5)
    risk = rng.random(shape, dtype=np.float32)
    score = rng.integers(0, 11, shape).astype(np.uint8)
    return xr.Dataset({"risk": (DIMS, risk), "score": (DIMS, score)}, coords=coordinates(grid))


def test_a_shape_not_divisible_by_the_factor_is_padded_not_trimmed() -> None:
    ds = _small((5, 7))
    level = coarsen(ds, 2)
    assert level.sizes == {"latitude": 3, "longitude": 4}
    risk, score = ds["risk"].values, ds["score"].values
    # The last row block holds one real row; the corner block one real pixel.
    np.testing.assert_allclose(level["risk"].values[2, 0], risk[4, 0:2].mean(), rtol=1e-6)
    np.testing.assert_allclose(level["risk"].values[2, 3], risk[4, 6], rtol=1e-6)
    assert level["score"].values[2, 3] == score[4, 6]
    assert level["score"].values[0, 3] == score[0:2, 6].max()
    assert level["score"].dtype == np.uint8 and level["risk"].dtype == np.float32
    # Block centres keep a regular grid, the padded block included.
    lat = level["latitude"].values
    np.testing.assert_allclose(np.diff(lat), 0.2, rtol=1e-9)
    np.testing.assert_allclose(lat[0], ds["latitude"].values[0:2].mean(), rtol=1e-12)


def test_coarsen_stays_lazy_and_keeps_attributes() -> None:
    ds = _small((8, 8)).chunk({"latitude": 4, "longitude": 4})
    ds["risk"].attrs["units"] = "1"
    level = coarsen(ds, 2)
    assert isinstance(level["risk"].data, da.Array) and isinstance(level["score"].data, da.Array)
    assert level["risk"].attrs == {"units": "1"}
    assert level["latitude"].attrs == ds["latitude"].attrs


def test_coarsen_refuses_what_it_has_no_rule_for() -> None:
    ds = _small((4, 4))
    assert coarsen(ds, 1) is ds
    with pytest.raises(ValueError, match="at least 1"):
        coarsen(ds, 0)
    with pytest.raises(ValueError, match="no coarsening rule"):
        coarsen(ds.assign(count=ds["score"].astype(np.int32)), 2)


# --- the pyramid in the repository -------------------------------------------------------


def test_levels_have_the_coarsened_shapes(built: Built) -> None:
    assert built.levels == [
        PyramidLevel(factor=2, shape=(896, 1280), group="pyramid/2"),
        PyramidLevel(factor=4, shape=(448, 640), group="pyramid/4"),
    ]
    session = _readonly(built, built.after)
    assert list_levels(session) == built.levels
    for level in built.levels:
        ds = open_level(session, level.factor)
        assert (ds.sizes["latitude"], ds.sizes["longitude"]) == level.shape
        assert ds.attrs["factor"] == level.factor
        assert ds.attrs["grid"] == "demo"
        assert ds.attrs["pixel_size_deg"] == pytest.approx([p * level.factor for p in load_grid("demo").pixel_size])
        for name in ("risk", "score"):
            assert max(ds[name].encoding["chunks"]) <= 512
            assert ds[name].dtype == {"risk": np.float32, "score": np.uint8}[name]


@pytest.mark.parametrize("factor", [2, 4])
def test_block_means_equal_numpy_nanmean(built: Built, factor: int) -> None:
    level = open_level(_readonly(built, built.after), factor)
    for region_id in (RANDOM_REGION, EDGE_REGION, CONSTANT_REGION):
        window = _level_window(level, built, region_id, factor)
        for name in FLOATS:
            expected = _expected_mean(built.data[region_id][name], factor)
            np.testing.assert_allclose(window[name].values, expected, rtol=1e-6, equal_nan=True)


def test_all_nan_blocks_stay_nan_and_partial_ones_do_not(built: Built) -> None:
    window = _level_window(open_level(_readonly(built, built.after), 4), built, RANDOM_REGION, 4)
    risk = window["risk"].values
    assert np.isnan(risk[0, 0])  # the whole 4 x 4 block had no data
    holes = np.isnan(built.data[RANDOM_REGION]["risk"])
    partly = _blocks(holes, 4).any(axis=2) & ~_blocks(holes, 4).all(axis=2)
    assert partly.sum() > 100  # the data really has partly empty blocks
    assert not np.isnan(risk[partly]).any()


@pytest.mark.parametrize("factor", [2, 4])
def test_score_is_the_block_maximum_ignoring_no_data(built: Built, factor: int) -> None:
    level = open_level(_readonly(built, built.after), factor)
    for region_id in (RANDOM_REGION, EDGE_REGION, CONSTANT_REGION):
        window = _level_window(level, built, region_id, factor)
        expected = _expected_score(built.data[region_id]["score"], factor)
        np.testing.assert_array_equal(window["score"].values, expected)
    if factor == 4:
        score = _level_window(level, built, RANDOM_REGION, 4)["score"].values
        assert score[0, 0] == SCORE_NODATA  # all no data
        assert score[1, 0] == 9  # one 9 among fifteen 2s is not hidden
        assert score[2, 0] == 1  # one data pixel among no data wins


def test_unwritten_regions_are_no_data_in_every_level(built: Built) -> None:
    session = _readonly(built, built.after)
    for level in built.levels:
        window = _level_window(open_level(session, level.factor), built, UNWRITTEN_REGION, level.factor)
        assert np.isnan(window["risk"].values).all()
        assert (window["score"].values == SCORE_NODATA).all()


def test_coordinates_are_block_centres(built: Built) -> None:
    grid = built.registry.grid
    session = _readonly(built, built.after)
    for level in built.levels:
        ds = open_level(session, level.factor)
        f = level.factor
        np.testing.assert_allclose(ds["latitude"].values, grid.latitude().reshape(-1, f).mean(axis=1), atol=1e-12)
        np.testing.assert_allclose(ds["longitude"].values, grid.longitude().reshape(-1, f).mean(axis=1), atol=1e-12)
        west, south, _, _ = grid.bounds(slice(0, 1), slice(0, 1))
        assert ds["longitude"].values[0] == pytest.approx(west + grid.pixel_size[1] * f / 2, abs=1e-12)
        assert ds["latitude"].values[0] == pytest.approx(south + grid.pixel_size[0] * f / 2, abs=1e-12)


def test_the_pyramid_commit_leaves_the_root_unchanged(built: Built) -> None:
    repo = built.store.repository()
    diff = repo.diff(from_snapshot_id=built.before, to_snapshot_id=built.after)
    touched = diff.new_groups | diff.new_arrays | diff.updated_groups | diff.updated_arrays | set(diff.updated_chunks)
    touched |= diff.deleted_groups | diff.deleted_arrays
    assert touched, "the pyramid commit changed nothing"
    assert all(path.startswith("/pyramid") for path in touched), sorted(touched)
    before = xr.open_zarr(repo.readonly_session(snapshot_id=built.before).store, consolidated=False).load()
    after = xr.open_zarr(repo.readonly_session(snapshot_id=built.after).store, consolidated=False).load()
    xr.testing.assert_identical(before, after)


def test_a_level_round_trips_through_json_metadata(built: Built) -> None:
    for level in built.levels:
        restored = PyramidLevel(**json.loads(json.dumps(level.as_metadata())))
        assert restored == level and isinstance(restored.shape, tuple)


def test_coarsest_level_and_missing_levels(built: Built) -> None:
    session = _readonly(built, built.after)
    level, ds = coarsest_level(session)
    assert level.factor == 4 and ds.attrs["factor"] == 4
    with pytest.raises(PyramidLevelNotFoundError, match="factor 8"):
        open_level(session, 8)
    with pytest.raises(PyramidLevelNotFoundError, match="no pyramid"):
        list_levels(_readonly(built, built.before))


def test_rewriting_with_fewer_factors_leaves_no_stale_level(built: Built) -> None:
    session = built.store.repository().writable_session("main")
    assert [level.factor for level in list_levels(session)] == [2, 4]
    write_pyramid(session, built.registry.grid, [2])
    assert [level.factor for level in list_levels(session)] == [2]
    with pytest.raises(PyramidLevelNotFoundError):
        open_level(session, 4)
    # Uncommitted: the branch still has both levels.
    assert [level.factor for level in list_levels(_readonly(built, built.after))] == [2, 4]


def test_write_pyramid_refuses_bad_requests(built: Built, small_grid: GridSpec) -> None:
    repo = built.store.repository()
    grid = built.registry.grid
    with pytest.raises(ValueError, match="writable session"):
        write_pyramid(repo.readonly_session(branch="main"), grid)
    session = repo.writable_session("main")
    with pytest.raises(ValueError, match="divide the chunks"):
        write_pyramid(session, grid, [3])
    with pytest.raises(ValueError, match="repeated"):
        write_pyramid(session, grid, [2, 2])
    with pytest.raises(ValueError, match="not of grid 'small'"):
        write_pyramid(session, small_grid)
    assert not session.has_uncommitted_changes


def test_the_coarsest_level_draws_as_an_overview(built: Built) -> None:
    level, ds = coarsest_level(_readonly(built, built.after))
    missing = [rid for rid in built.registry.ids if rid not in built.data]
    picture = render_overview(ds, built.registry, level.factor, missing=missing, failed=[], title="t")
    assert picture.png.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_fresh_repository_has_no_pyramid(tmp_path: Path, demo_registry: RegionRegistry) -> None:
    store = LocalIcechunkStore(path=str(tmp_path / "repo.icechunk"))
    ensure_template(store, demo_registry.grid, {})
    with pytest.raises(PyramidLevelNotFoundError):
        coarsest_level(store.repository().readonly_session(branch="main"))


def _levels(session: icechunk.Session, factors: list[int]) -> dict[int, xr.Dataset]:
    return {f: open_level(session, f).load() for f in factors}


def test_updating_the_tiles_of_changed_regions_equals_writing_the_whole_pyramid(built: Built) -> None:
    """In place (the branch holds the old pyramid) and copied from another snapshot (it does not)."""
    repo = built.store.repository()
    grid = built.registry.grid
    # A rewritten region, one written for the first time, and the partial edge region: new data.
    changed = [RANDOM_REGION, UNWRITTEN_REGION, EDGE_REGION]
    for branch, start in (("with-pyramid", built.after), ("without-pyramid", built.before)):
        repo.create_branch(branch, start)
        for seed, region_id in enumerate(changed, start=10):
            data = _random_region(built.registry, region_id, seed=seed)
            write_region(
                built.store,
                grid,
                built.registry.get(region_id),
                _dataset(built.registry, region_id, data),
                key=BuildKey("p", "i", "c2"),
                run_id="t2",
                branch=branch,
            )
    factors = [level.factor for level in built.levels]
    whole = repo.writable_session("with-pyramid")
    write_pyramid(whole, grid)
    expected = _levels(whole, factors)
    in_place = repo.writable_session("with-pyramid")
    regions = [built.registry.get(r) for r in changed]
    assert update_pyramid(in_place, grid, regions) == built.levels
    copied = repo.writable_session("without-pyramid")
    assert not pyramid_matches(copied, grid)
    update_pyramid(copied, grid, regions, source=_readonly(built, built.after))
    old = _levels(_readonly(built, built.after), factors)
    for factor in factors:
        for got in (_levels(in_place, factors)[factor], _levels(copied, factors)[factor]):
            xr.testing.assert_identical(got, expected[factor])
            for name in got.data_vars:  # bit for bit, NaN where NaN
                assert got[name].dtype == expected[factor][name].dtype
                assert np.array_equal(got[name].values, expected[factor][name].values, equal_nan=True)
        # The changed tiles did change: an update that wrote nothing would keep the old pyramid.
        for region_id in changed:
            assert not _level_window(old[factor], built, region_id, factor).identical(
                _level_window(expected[factor], built, region_id, factor)
            )
    # In place, exactly the level chunks (tiles) the changed regions fall in are written, and
    # nothing of the root raster.
    written = in_place.status().updated_chunks
    assert set(written) == {f"/pyramid/{f}/{v.name}" for f in factors for v in VARIABLES}
    for factor in factors:
        cy, cx = level_chunks(grid, factor)
        tiles = set()
        for region in regions:
            rows, cols = level_window(region.rows, region.cols, factor)
            tiles |= {
                (y, x)
                for y in range(rows.start // cy, -(-rows.stop // cy))
                for x in range(cols.start // cx, -(-cols.stop // cx))
            }
        if factor == factors[0]:  # the finest level has tiles no changed region falls in: left alone
            every = math.prod(-(-side // c) for side, c in zip(level_shape(grid, factor), (cy, cx), strict=True))
            assert len(tiles) < every
        for v in VARIABLES:
            assert {tuple(c) for c in written[f"/pyramid/{factor}/{v.name}"]} == tiles


def test_update_pyramid_refuses_a_pyramid_of_another_layout(built: Built) -> None:
    repo = built.store.repository()
    grid = built.registry.grid
    fewer = repo.writable_session("main")
    write_pyramid(fewer, grid, [2])
    assert not pyramid_matches(fewer, grid)
    with pytest.raises(ValueError, match="write the whole pyramid"):
        update_pyramid(fewer, grid, [built.registry.get(RANDOM_REGION)])
    assert pyramid_matches(_readonly(built, built.after), grid)
    assert not pyramid_matches(_readonly(built, built.before), grid)
    with pytest.raises(ValueError, match="writable session"):
        update_pyramid(repo.readonly_session(branch="main"), grid, [])

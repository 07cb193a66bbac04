"""Region writes and commits against real Icechunk repositories, including racing processes."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _workers
import numpy as np
import pytest
import xarray as xr

from resources.ledger import committed_regions, iter_region_commits
from resources.local_store import LocalIcechunkStore
from resources.region_write import write_region
from resources.store import StoreError
from resources.template import TemplateMissingError, ensure_template
from risk_model.alignment import MisalignedRegionError
from risk_model.grid import RegionRegistry, load_grid
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey


def _constant_region(registry: RegionRegistry, region_id: str, value: float) -> xr.Dataset:
    region = registry.get(region_id)
    return xr.Dataset(
        {v.name: (DIMS, np.full(region.shape, value, dtype=v.dtype)) for v in VARIABLES},
        coords=coordinates(registry.grid, region.rows, region.cols),
    )


def _write(store: LocalIcechunkStore, registry: RegionRegistry, region_id: str, ds: xr.Dataset, params: str = "p1"):  # type: ignore[no-untyped-def]
    return write_region(
        store,
        registry.grid,
        registry.get(region_id),
        ds,
        key=BuildKey(params, "inputs", "test"),
        run_id="r",
    )


def _n_commits(store: LocalIcechunkStore) -> int:
    return sum(1 for _ in store.repository().ancestry(branch=store.branch))


def _listed(store: object, name: str) -> set[str]:
    import asyncio

    async def collect() -> set[str]:
        return {key async for key in store.list_prefix(name) if key.startswith(f"{name}/c/")}  # type: ignore[attr-defined]

    return asyncio.run(collect())


def test_region_isolation_exactly_its_chunks_exist(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    region_id = demo_registry.ids[len(demo_registry) // 2]
    result = _write(demo_store, demo_registry, region_id, _constant_region(demo_registry, region_id, 0.5))
    assert result.status == "written"
    region = demo_registry.get(region_id)
    for var in VARIABLES:
        assert _listed(demo_store.repository().readonly_session(branch="main").store, var.name) == {
            f"{var.name}/c/{region.iy}/{region.ix}"
        }
    ds = xr.open_zarr(demo_store.repository().readonly_session(branch="main").store, consolidated=False)
    inside = ds["risk"].isel(latitude=region.rows, longitude=region.cols).values
    assert bool((inside == np.float32(0.5)).all())
    # neighbours on all four sides are still the fill value
    rows, cols = region.rows, region.cols
    around = (
        ds["risk"]
        .isel(
            latitude=slice(max(rows.start - 1, 0), rows.stop + 1),
            longitude=slice(max(cols.start - 1, 0), cols.stop + 1),
        )
        .values
    )
    assert int(np.isfinite(around).sum()) == region.shape[0] * region.shape[1]
    assert bool((ds["score"].isel(latitude=slice(0, rows.start)).values == 255).all())


def test_commit_metadata_is_structured(demo_store: LocalIcechunkStore, demo_registry: RegionRegistry) -> None:
    region_id = demo_registry.ids[0]
    result = _write(demo_store, demo_registry, region_id, _constant_region(demo_registry, region_id, 1.0))
    assert result.commit is not None
    meta = result.commit.metadata
    assert meta["region"] == region_id and meta["params_version"] == "p1" and meta["code_version"] == "test"
    assert meta["run_id"] == "r" and len(meta["bounds"]) == 4
    assert committed_regions(demo_store.repository(), "main")[region_id].snapshot_id == result.snapshot_id


def test_rewrite_for_same_params_is_a_noop_and_new_params_commit(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    region_id = demo_registry.ids[1]
    ds = _constant_region(demo_registry, region_id, 2.0)
    _write(demo_store, demo_registry, region_id, ds)
    before = _n_commits(demo_store)
    again = _write(demo_store, demo_registry, region_id, ds)
    assert again.status == "skipped"
    assert _n_commits(demo_store) == before
    changed = _write(demo_store, demo_registry, region_id, ds, params="p2")
    assert changed.status == "written"
    assert _n_commits(demo_store) == before + 1


@pytest.mark.parametrize(
    ("rows", "cols"),
    [
        (slice(1, 257), slice(0, 256)),  # shifted by one row: straddles two chunks
        (slice(0, 128), slice(0, 256)),  # half a chunk
        (slice(0, 512), slice(0, 256)),  # two chunks at once
    ],
)
def test_misaligned_region_is_refused_and_nothing_committed(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry, rows: slice, cols: slice
) -> None:
    grid = demo_registry.grid
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    ds = xr.Dataset(
        {v.name: (DIMS, np.ones(shape, dtype=v.dtype)) for v in VARIABLES},
        coords=coordinates(grid, rows, cols),
    )
    before = _n_commits(demo_store)
    with pytest.raises(MisalignedRegionError, match="nothing was written"):
        _write(demo_store, demo_registry, "y0_x0" if "y0_x0" in demo_registry else demo_registry.ids[0], ds)
    assert _n_commits(demo_store) == before
    stored = xr.open_zarr(demo_store.repository().readonly_session(branch="main").store, consolidated=False)
    assert int(stored["risk"].notnull().sum()) == 0


def test_coordinates_off_by_a_hair_are_refused(demo_store: LocalIcechunkStore, demo_registry: RegionRegistry) -> None:
    region_id = demo_registry.ids[0]
    ds = _constant_region(demo_registry, region_id, 1.0)
    ds = ds.assign_coords(latitude=ds["latitude"] + 1e-12)
    with pytest.raises(MisalignedRegionError, match="bit for bit"):
        _write(demo_store, demo_registry, region_id, ds)


def test_write_without_template_or_repository_fails_clearly(tmp_path: Path, demo_registry: RegionRegistry) -> None:
    region_id = demo_registry.ids[0]
    ds = _constant_region(demo_registry, region_id, 1.0)
    with pytest.raises(StoreError, match="no Icechunk repository"):
        _write(LocalIcechunkStore(path=str(tmp_path / "absent")), demo_registry, region_id, ds)
    empty = LocalIcechunkStore(path=str(tmp_path / "empty"))
    empty.repository(create=True)
    with pytest.raises(TemplateMissingError, match="raster_template"):
        _write(empty, demo_registry, region_id, ds)


def test_template_is_idempotent_and_refuses_another_grid(demo_store: LocalIcechunkStore) -> None:
    before = _n_commits(demo_store)
    _, created = ensure_template(demo_store, load_grid("demo"), {"code_version": "test"})
    assert not created and _n_commits(demo_store) == before
    with pytest.raises(TemplateMissingError, match="another store path"):
        ensure_template(demo_store, load_grid("conus-30m"), {"code_version": "test"})


@pytest.mark.slow
def test_worker_killed_before_commit_leaves_nothing_visible(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry, demo_inputs: object
) -> None:
    region_id = demo_registry.ids[3]
    chunk_dir = Path(demo_store.path) / "chunks"
    chunks_before = len(list(chunk_dir.glob("*"))) if chunk_dir.exists() else 0
    before = _n_commits(demo_store)
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(
        target=_workers.build_regions,
        args=(demo_store.path, demo_inputs.model_dump_json(), [region_id], True),  # type: ignore[attr-defined]
    )
    worker.start()
    worker.join(timeout=120)
    assert worker.exitcode == -9, "the worker must have been killed at its commit"
    # it did write chunk objects, but no commit references them
    assert len(list(chunk_dir.glob("*"))) > chunks_before
    assert _n_commits(demo_store) == before
    stored = xr.open_zarr(demo_store.repository().readonly_session(branch="main").store, consolidated=False)
    assert int(stored["risk"].notnull().sum()) == 0
    # the rerun completes it
    _workers.build_regions(demo_store.path, demo_inputs.model_dump_json(), [region_id])  # type: ignore[attr-defined]
    assert [r.region for r in iter_region_commits(demo_store.repository(), "main")] == [region_id]


@pytest.mark.slow
def test_racing_processes_lose_no_commit_and_match_a_sequential_build(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: object
) -> None:
    """Six OS processes commit 2 regions each into one local repository at the same time."""
    n_workers, per_worker = 6, 2
    region_ids = demo_registry.ids[: n_workers * per_worker]
    inputs_json = demo_inputs.model_dump_json()  # type: ignore[attr-defined]
    raced = LocalIcechunkStore(path=str(tmp_path / "raced"))
    ensure_template(raced, demo_registry.grid, {"code_version": "test"})
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        # interleave so neighbouring regions are written by different processes
        batches = [region_ids[i::n_workers] for i in range(n_workers)]
        snapshot_lists = list(
            pool.map(_workers.build_regions, [raced.path] * n_workers, [inputs_json] * n_workers, batches)
        )
    assert sum(len(s) for s in snapshot_lists) == len(region_ids)

    commits = [r.region for r in iter_region_commits(raced.repository(), "main")]
    assert sorted(commits) == sorted(region_ids), "every region committed exactly once, none lost"

    sequential = LocalIcechunkStore(path=str(tmp_path / "sequential"))
    ensure_template(sequential, demo_registry.grid, {"code_version": "test"})
    _workers.build_regions(sequential.path, inputs_json, region_ids)
    a = xr.open_zarr(raced.repository().readonly_session(branch="main").store, consolidated=False).load()
    b = xr.open_zarr(sequential.repository().readonly_session(branch="main").store, consolidated=False).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert int(a["risk"].notnull().sum()) > 0

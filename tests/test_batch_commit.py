"""Batch commits (resources/batch_commit.py) keep every per-region guarantee of direct commits.

Many regions in one commit, but: each region has its own provenance in the ledger, is listed
once, is committed once per build key (an already committed region, or a second fork of it, is
skipped), its data lands exactly in its window, a writer that never handed its fork over leaves
nothing visible, and a rerun commits only what is missing. Reconciliation reads a batch as that
many region commits. The per-region "already committed?" check answers from the region's mark
without walking history.
"""

import multiprocessing
from pathlib import Path
from typing import Any

import _workers
import icechunk
import numpy as np
import pytest
import xarray as xr

from resources.batch_commit import RegionFork, commit_batch, write_region_fork
from resources.ledger import committed_regions, find_commit, iter_region_commits, regions_with_chunks
from resources.local_store import LocalIcechunkStore
from resources.region_write import write_region
from risk_assets.reconcile import ReconcileState, update_commits
from risk_model.grid import Region, RegionRegistry
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey

KEY = BuildKey("params", "inputs", "test")


def _constant(registry: RegionRegistry, region: Region, value: int) -> xr.Dataset:
    return xr.Dataset(
        {v.name: (DIMS, np.full(region.shape, value, dtype=v.dtype)) for v in VARIABLES},
        coords=coordinates(registry.grid, region.rows, region.cols),
    )


def _fork(
    store: LocalIcechunkStore, registry: RegionRegistry, index: int, run_id: str, key: BuildKey = KEY
) -> RegionFork:
    region = registry.get(registry.ids[index])
    fork = write_region_fork(
        store, registry.grid, region, _constant(registry, region, index + 1), key=key, run_id=run_id
    )
    assert fork is not None
    return fork


def _n_commits(store: LocalIcechunkStore) -> int:
    return len(list(store.repository().ancestry(branch="main")))


def test_one_commit_holds_many_regions_each_with_its_own_provenance(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    indices = [0, 1, 7, 12, 30]
    forks = [_fork(demo_store, demo_registry, i, run_id=f"run-{i}") for i in indices]
    before = _n_commits(demo_store)
    result = commit_batch(demo_store, forks)
    assert _n_commits(demo_store) == before + 1, "one commit for the whole batch"
    ids = [demo_registry.ids[i] for i in indices]
    assert sorted(result.written) == sorted(ids)
    repo = demo_store.repository()
    listed = [record.region for record in iter_region_commits(repo, "main")]
    assert sorted(listed) == sorted(ids), "each region listed once"
    ledger = committed_regions(repo, "main")
    for i, region_id in zip(indices, ids, strict=True):
        record = ledger[region_id]
        assert record.snapshot_id == result.snapshot_id
        assert record.run_id == f"run-{i}" and record.key == KEY
        assert record.metadata["rows"] == [
            demo_registry.get(region_id).rows.start,
            demo_registry.get(region_id).rows.stop,
        ]
    # each region's values in its window, nothing anywhere else
    stored = xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False)
    for i, region_id in zip(indices, ids, strict=True):
        region = demo_registry.get(region_id)
        window = stored["risk"].isel(latitude=region.rows, longitude=region.cols)
        assert float(window.min()) == float(window.max()) == i + 1
    chunks = regions_with_chunks(repo, "main")["risk"]
    assert len(chunks) == len(ids)


def test_a_region_already_committed_or_forked_twice_is_committed_once(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    early = _fork(demo_store, demo_registry, 2, run_id="late-batch")  # forked before the direct commit below
    region = demo_registry.get(demo_registry.ids[2])
    direct = write_region(
        demo_store, demo_registry.grid, region, _constant(demo_registry, region, 9), key=KEY, run_id="direct"
    )
    assert direct.status == "written"
    # a writer that looks now finds the region done and writes nothing
    assert (
        write_region_fork(
            demo_store, demo_registry.grid, region, _constant(demo_registry, region, 9), key=KEY, run_id="x"
        )
        is None
    )
    first = _fork(demo_store, demo_registry, 3, run_id="first")
    second = _fork(demo_store, demo_registry, 3, run_id="second")
    result = commit_batch(demo_store, [early, first, second])
    assert result.outcomes[region.id].status == "skipped"
    assert result.outcomes[region.id].snapshot_id == direct.snapshot_id
    assert result.written == [demo_registry.ids[3]]
    repo = demo_store.repository()
    listed = [record.region for record in iter_region_commits(repo, "main")]
    assert sorted(listed) == sorted([region.id, demo_registry.ids[3]]), "no region listed twice"
    assert committed_regions(repo, "main")[demo_registry.ids[3]].run_id == "first"
    # the same batch again commits nothing
    again = commit_batch(demo_store, [first])
    assert again.snapshot_id is None and again.outcomes[demo_registry.ids[3]].status == "skipped"


def test_a_new_build_key_commits_again(demo_store: LocalIcechunkStore, demo_registry: RegionRegistry) -> None:
    commit_batch(demo_store, [_fork(demo_store, demo_registry, 4, run_id="a")])
    newer = BuildKey("params-2", "inputs", "test")
    result = commit_batch(demo_store, [_fork(demo_store, demo_registry, 4, run_id="b", key=newer)])
    assert result.written == [demo_registry.ids[4]]
    record = committed_regions(demo_store.repository(), "main")[demo_registry.ids[4]]
    assert record.key == newer and record.run_id == "b"


@pytest.mark.slow
def test_a_writer_that_never_handed_over_leaves_nothing_and_the_rerun_does_only_what_is_missing(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    commit_batch(demo_store, [_fork(demo_store, demo_registry, 5, run_id="done")])
    before = _n_commits(demo_store)
    chunk_dir = Path(demo_store.path) / "chunks"
    chunks_before = len(list(chunk_dir.glob("*")))
    worker = multiprocessing.get_context("spawn").Process(
        target=_workers.write_fork_and_exit, args=(demo_store.path, demo_registry.ids[6])
    )
    worker.start()
    worker.join(timeout=120)
    assert worker.exitcode == 0
    assert len(list(chunk_dir.glob("*"))) > chunks_before, "the writer did write chunk objects"
    assert _n_commits(demo_store) == before, "but nothing was committed"
    iy, ix = (int(part[1:]) for part in demo_registry.ids[5].split("_"))
    assert regions_with_chunks(demo_store.repository(), "main")["risk"] == {f"{iy}/{ix}"}
    # the rerun of both regions: region 5 is skipped at the writer, region 6 is committed once
    region5 = demo_registry.get(demo_registry.ids[5])
    assert (
        write_region_fork(
            demo_store, demo_registry.grid, region5, _constant(demo_registry, region5, 6), key=KEY, run_id="rerun"
        )
        is None
    )
    result = commit_batch(demo_store, [_fork(demo_store, demo_registry, 6, run_id="rerun")])
    assert result.written == [demo_registry.ids[6]]
    ledger = committed_regions(demo_store.repository(), "main")
    assert ledger[demo_registry.ids[5]].run_id == "done" and ledger[demo_registry.ids[6]].run_id == "rerun"


def test_reconciliation_reads_a_batch_as_one_commit_per_region(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    state = ReconcileState()
    commit_batch(demo_store, [_fork(demo_store, demo_registry, i, run_id=f"r{i}") for i in (8, 9, 10)])
    assert update_commits(state, demo_store.repository(), "main") >= 1
    assert sorted(state.commits) == sorted(demo_registry.ids[i] for i in (8, 9, 10))
    assert {state.commits[demo_registry.ids[i]].run_id for i in (8, 9, 10)} == {"r8", "r9", "r10"}
    commit_batch(demo_store, [_fork(demo_store, demo_registry, 11, run_id="r11")])
    assert update_commits(state, demo_store.repository(), "main") == 1, "only the new batch is read"
    assert demo_registry.ids[11] in state.commits and len(state.commits) == 4


class _NoHistory:
    """The repository, except that walking its history fails the test."""

    def __init__(self, repo: icechunk.Repository) -> None:
        self._repo = repo

    def readonly_session(self, **kwargs: Any) -> icechunk.Session:
        return self._repo.readonly_session(**kwargs)

    def ancestry(self, **kwargs: Any) -> Any:
        raise AssertionError("the already-committed check walked the history")


def test_the_already_committed_check_reads_the_mark_not_the_history(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    commit_batch(demo_store, [_fork(demo_store, demo_registry, i, run_id="a") for i in (13, 14)])
    repo = _NoHistory(demo_store.repository())
    # never committed, and committed for another key: answered from the marks alone
    assert find_commit(repo, "main", demo_registry.ids[15], KEY) is None  # type: ignore[arg-type]
    assert find_commit(repo, "main", demo_registry.ids[13], BuildKey("other", "inputs", "test")) is None  # type: ignore[arg-type]
    # committed for this key: its commit is looked up in the history
    with pytest.raises(AssertionError, match="walked the history"):
        find_commit(repo, "main", demo_registry.ids[13], KEY)  # type: ignore[arg-type]
    found = find_commit(demo_store.repository(), "main", demo_registry.ids[13], KEY)
    assert found is not None and found.run_id == "a"

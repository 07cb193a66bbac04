"""Batch commits through the production path (resources/batch_handoff.py) on the S3 emulator, with real processes.

Writers are separate processes in their own process groups (``_batch_workers.py``), killed as a pod
eviction kills one, a whole group at once, at each step of the protocol: before the hand-off, after
it, and while holding the commit lease. Whatever the kill, each region ends committed exactly once
(or, for a stale pending fork, dropped and left missing), and nothing is ever visible half-written.
"""

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _chaos_worker import KEY, region_data, region_value
from _services import moto_s3, s3_store

from resources.cloud_stores import S3IcechunkStore
from resources.leases import COMMIT_LOCK, PENDING_PREFIX
from resources.ledger import CommitRecord, iter_region_commits, regions_with_chunks
from resources.local_store import LocalIcechunkStore
from resources.region_write import write_region
from resources.template import ensure_template
from risk_model.grid import RegionRegistry

BUCKET = "batch-handoff"
WORKER = Path(__file__).with_name("_batch_workers.py")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


def _spawn(mode: str, store: S3IcechunkStore, region_ids: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, store.model_dump_json(), *region_ids],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: a kill takes all of it
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")])},
    )


def _finish(proc: subprocess.Popen[bytes], expect_killed: bool = False) -> list[list[str]]:
    """Wait for a writer; its printed ``region status snapshot`` rows."""
    out, err = proc.communicate(timeout=600)
    if expect_killed:
        assert proc.returncode == -9, f"not killed: exited {proc.returncode}: {err.decode()[-2000:]}"
    else:
        assert proc.returncode == 0, f"writer exited {proc.returncode}: {err.decode()[-3000:]}"
    return [line.split() for line in out.decode().splitlines() if line.strip()]


def _commits(store: S3IcechunkStore) -> list[CommitRecord]:
    return [c for c in iter_region_commits(store.repository(), store.branch, use_ledger=False) if c.key == KEY]


def _pending(store: S3IcechunkStore) -> list[str]:
    return [name for name in store.list_lease_objects() if name.startswith(PENDING_PREFIX)]


def _chunk_keys(store: S3IcechunkStore) -> set[str]:
    return regions_with_chunks(store.repository(), store.branch)["risk"]


def _chunk_key(region_id: str) -> str:
    iy, ix = (int(part[1:]) for part in region_id.split("_"))
    return f"{iy}/{ix}"


def _fresh(endpoint: str, prefix: str, registry: RegionRegistry, **settings: float) -> S3IcechunkStore:
    store = s3_store(endpoint, BUCKET, prefix).model_copy(update=settings)
    assert store.commit_protocol == "batch", "object stores commit in batches by default"
    ensure_template(store, registry.grid, {"code_version": "test"})
    return store


@pytest.mark.slow
def test_eight_racing_writers_commit_each_region_once_in_batches_and_match_a_sequential_build(
    s3_endpoint: str, tmp_path: Path, demo_registry: RegionRegistry
) -> None:
    # Eight writers (16 region writes, each region raced by two): the sixteen-writer case with
    # kills is the chaos test below, so this race need not pay sixteen process start-ups again.
    writers, n_regions = 8, 16
    store = _fresh(s3_endpoint, "race.icechunk", demo_registry)
    region_ids = demo_registry.ids[:n_regions]
    # writer w takes four regions from 2w on: every region has two writers racing for it
    lists = [[region_ids[(2 * w + k) % n_regions] for k in range(4)] for w in range(writers)]
    procs = [_spawn("normal", store, block) for block in lists]
    rows = [row for proc in procs for row in _finish(proc)]

    assert sorted(r[0] for r in rows) == sorted(r for block in lists for r in block)
    commits = _commits(store)
    per_region = {r: [c for c in commits if c.region == r] for r in region_ids}
    assert {r: len(c) for r, c in per_region.items() if len(c) != 1} == {}, "regions lost (0) or duplicated (>1)"
    for region_id in region_ids:
        statuses = sorted(r[1] for r in rows if r[0] == region_id)
        assert statuses == ["skipped", "written"], f"{region_id}: one writer's fork committed, the other's skipped"
        assert {r[2] for r in rows if r[0] == region_id} == {per_region[region_id][0].snapshot_id}
    snapshots = {c.snapshot_id for c in commits}
    assert len(snapshots) < n_regions, "regions were committed in batches"
    assert _pending(store) == [] and store.read_lease_object(COMMIT_LOCK) is None, "nothing left pending or held"

    sequential = LocalIcechunkStore(path=str(tmp_path / "sequential"))
    ensure_template(sequential, demo_registry.grid, {"code_version": "test"})
    for region_id in region_ids:
        region = demo_registry.get(region_id)
        write_region(sequential, demo_registry.grid, region, region_data(demo_registry, region_id), key=KEY, run_id="s")
    a = xr.open_zarr(store.repository().readonly_session(branch="main").store, consolidated=False).load()
    b = xr.open_zarr(sequential.repository().readonly_session(branch="main").store, consolidated=False).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    print(f"\nbatch race: {writers} writers, {len(rows)} writes, {n_regions} regions in {len(snapshots)} commits")


@pytest.mark.slow
def test_a_writer_killed_before_the_hand_off_leaves_nothing_and_the_rerun_commits_only_the_missing(
    s3_endpoint: str, demo_registry: RegionRegistry
) -> None:
    store = _fresh(s3_endpoint, "before.icechunk", demo_registry)
    done, killed = demo_registry.ids[0], demo_registry.ids[1]
    [[_, status, _]] = _finish(_spawn("normal", store, [done]))
    assert status == "written"
    rows = _finish(_spawn("before-handoff", store, [done, killed]), expect_killed=True)
    assert [r[:2] for r in rows] == [[done, "skipped"]], "the done region is skipped, the next one dies unhanded"
    assert _pending(store) == [], "nothing was handed over"
    assert [c.region for c in _commits(store)] == [done]
    assert _chunk_keys(store) == {_chunk_key(done)}, "the killed writer's chunks are visible nowhere"

    rows = _finish(_spawn("normal", store, [done, killed]))
    assert [r[:2] for r in rows] == [[done, "skipped"], [killed, "written"]]
    assert sorted(c.region for c in _commits(store)) == sorted([done, killed]), "each committed once"
    assert _pending(store) == []


@pytest.mark.slow
def test_a_writer_killed_after_the_hand_off_is_committed_once_by_the_next_committer(
    s3_endpoint: str, demo_registry: RegionRegistry
) -> None:
    store = _fresh(s3_endpoint, "after.icechunk", demo_registry)
    orphan, next_writer = demo_registry.ids[2], demo_registry.ids[3]
    assert _finish(_spawn("after-handoff", store, [orphan]), expect_killed=True) == []
    assert len(_pending(store)) == 1 and _commits(store) == [], "handed over, not committed"

    [[region, status, snapshot]] = _finish(_spawn("normal", store, [next_writer]))
    assert (region, status) == (next_writer, "written")
    commits = {c.region: c for c in _commits(store)}
    assert sorted(commits) == sorted([orphan, next_writer]), "the orphan committed by the next committer, once"
    assert commits[orphan].snapshot_id == snapshot, "in the same batch"
    assert commits[orphan].run_id.startswith("after-handoff-")
    assert _pending(store) == []
    # and a rerun of the orphan's writer finds it done
    [[_, status, again]] = _finish(_spawn("normal", store, [orphan]))
    assert (status, again) == ("skipped", snapshot)
    assert len(_commits(store)) == 2, "nothing duplicated"


@pytest.mark.slow
def test_a_stale_pending_fork_of_a_dead_writer_is_dropped_not_committed(
    s3_endpoint: str, demo_registry: RegionRegistry
) -> None:
    # A short writer lease, so that the dead writer's lease expires and its fork becomes stale within the test.
    ttl = 2.0
    store = _fresh(s3_endpoint, "stale.icechunk", demo_registry, writer_lease_ttl_s=ttl)
    stale, next_writer = demo_registry.ids[4], demo_registry.ids[5]
    _finish(_spawn("after-handoff", store, [stale]), expect_killed=True)
    assert len(_pending(store)) == 1
    time.sleep(ttl + 1.5)  # its lease expired, and its fork is older than the TTL

    [[region, status, _]] = _finish(_spawn("normal", store, [next_writer]))
    assert (region, status) == (next_writer, "written")
    assert [c.region for c in _commits(store)] == [next_writer], "the stale fork was not committed"
    assert _pending(store) == [], "it was deleted"
    assert _chunk_keys(store) == {_chunk_key(next_writer)}, "the dropped region stays missing"


@pytest.mark.slow
def test_a_committer_killed_holding_the_commit_lease_is_replaced_once_the_lease_expires(
    s3_endpoint: str, demo_registry: RegionRegistry
) -> None:
    ttl = 3.0
    store = _fresh(s3_endpoint, "committer.icechunk", demo_registry, commit_lease_ttl_s=ttl)
    orphan, committer, survivor = demo_registry.ids[6], demo_registry.ids[7], demo_registry.ids[8]
    _finish(_spawn("after-handoff", store, [orphan]), expect_killed=True)
    _finish(_spawn("committing", store, [committer]), expect_killed=True)
    assert store.read_lease_object(COMMIT_LOCK) is not None, "the dead committer's lease is left behind"
    assert len(_pending(store)) == 2 and _commits(store) == []

    [[region, status, snapshot]] = _finish(_spawn("normal", store, [survivor]))
    assert (region, status) == (survivor, "written")
    commits = {c.region: c for c in _commits(store)}
    assert sorted(commits) == sorted([orphan, committer, survivor]), "every pending fork committed, once"
    assert {c.snapshot_id for c in commits.values()} == {snapshot}, "in one batch"
    assert _pending(store) == [] and store.read_lease_object(COMMIT_LOCK) is None
    ds = xr.open_zarr(store.repository().readonly_session(branch="main").store, consolidated=False)
    for region_id in (orphan, committer, survivor):
        region = demo_registry.get(region_id)
        window = ds["risk"].isel(latitude=region.rows, longitude=region.cols).values
        expected = np.full(region.shape, region_value(demo_registry, region_id), window.dtype)
        np.testing.assert_array_equal(window, expected)


@pytest.mark.slow
def test_sixteen_batch_writers_killed_at_random_lose_nothing_and_duplicate_nothing(
    s3_endpoint: str, demo_registry: RegionRegistry
) -> None:
    """``test_s3_chaos.py`` through the batch path: process groups SIGKILLed at random, restarted with their list."""
    writers, n_regions, kills_wanted = 16, 32, 20
    # A short commit lease: a committer killed mid-round holds the others back only this long.
    store = _fresh(s3_endpoint, "chaos.icechunk", demo_registry, commit_lease_ttl_s=5.0)
    region_ids = demo_registry.ids[:n_regions]
    lists = [[region_ids[(2 * w + k) % n_regions] for k in range(4)] for w in range(writers)]
    rng = random.Random(13)
    procs = {w: _spawn("normal", store, lists[w]) for w in range(writers)}
    kills = 0
    deadline = time.monotonic() + 300
    while kills < kills_wanted and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 1.0))
        running = [w for w, p in procs.items() if p.poll() is None]
        if not running:
            break
        victim = rng.choice(running)
        os.killpg(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait()
        kills += 1
        procs[victim] = _spawn("normal", store, lists[victim])
    for proc in procs.values():
        _finish(proc)
    assert kills > 0, "the writers finished before the first kill: nothing was tested"

    commits = _commits(store)
    per_region = {r: sum(c.region == r for c in commits) for r in region_ids}
    assert {r: n for r, n in per_region.items() if n != 1} == {}, "regions lost (0) or duplicated (>1)"
    # A committer killed between its commit and deleting the pending objects leaves them for the next
    # round; if no writer hands anything over afterwards they stay, harmless: their regions are committed.
    left = _pending(store)
    assert {name.removeprefix(PENDING_PREFIX).split(".")[0] for name in left} <= set(region_ids)
    ds = xr.open_zarr(store.repository().readonly_session(branch="main").store, consolidated=False)
    for region_id in region_ids:
        region = demo_registry.get(region_id)
        for name, array in ds.isel(latitude=region.rows, longitude=region.cols).load().data_vars.items():
            expected = np.full(region.shape, region_value(demo_registry, region_id), dtype=array.dtype)
            np.testing.assert_array_equal(array.values, expected, err_msg=f"{name} of region {region_id}")
    n_commits = len({c.snapshot_id for c in commits})
    print(f"\nbatch chaos: {writers} writers, {kills} kills, {n_commits} commits, {len(left)} forks left")

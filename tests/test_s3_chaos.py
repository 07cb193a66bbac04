"""Sixteen writers on the S3 emulator, their process groups SIGKILLed at random: nothing lost, nothing twice.

Every region is given to two writers (so that both race for it) and writers are killed as a
pod eviction would kill them, a whole process group at once, then started again with their
whole list, as Dagster's retry would. At the end each region has exactly one commit on the
branch, and every pixel holds the value its region was written with.
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
from _chaos_worker import KEY, region_value
from _services import moto_s3, s3_store

from resources.cloud_stores import S3IcechunkStore
from resources.ledger import iter_region_commits
from resources.template import ensure_template
from risk_model.grid import RegionRegistry

BUCKET = "chaos"
WRITERS = 16
REGIONS = 32
KILLS = 20
WORKER = Path(__file__).with_name("_chaos_worker.py")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


def _spawn(store: S3IcechunkStore, region_ids: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), store.model_dump_json(), *region_ids],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # its own process group, so that a kill takes the worker and anything it started
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")])},
    )


@pytest.mark.slow
def test_sixteen_writers_killed_at_random_lose_nothing_and_duplicate_nothing(
    s3_endpoint: str, demo_registry: RegionRegistry
) -> None:
    store = s3_store(s3_endpoint, BUCKET, "chaos.icechunk")
    ensure_template(store, demo_registry.grid, {"code_version": "test"})
    region_ids = demo_registry.ids[:REGIONS]
    # writer w takes four regions starting at 2w: every region has two writers, in another order
    lists = [[region_ids[(2 * w + k) % REGIONS] for k in range(4)] for w in range(WRITERS)]
    rng = random.Random(15)

    workers = {w: _spawn(store, lists[w]) for w in range(WRITERS)}
    kills = 0
    deadline = time.monotonic() + 300
    while kills < KILLS and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 1.0))
        running = [w for w, p in workers.items() if p.poll() is None]
        if not running:
            break
        victim = rng.choice(running)
        os.killpg(workers[victim].pid, signal.SIGKILL)
        workers[victim].wait()
        kills += 1
        workers[victim] = _spawn(store, lists[victim])
    failures = []
    for w, proc in workers.items():
        _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if proc.returncode != 0:
            failures.append(f"writer {w} exited {proc.returncode}: {err.decode()[-2000:]}")
    assert not failures, "\n".join(failures)
    assert kills > 0, "the writers finished before the first kill: nothing was tested"

    repo = store.repository()
    commits = [c for c in iter_region_commits(repo, store.branch, use_ledger=False) if c.key == KEY]
    per_region = {r: sum(c.region == r for c in commits) for r in region_ids}
    assert {r: n for r, n in per_region.items() if n != 1} == {}, "regions lost (0) or duplicated (>1)"

    ds = xr.open_zarr(repo.readonly_session(branch=store.branch).store, consolidated=False)
    for region_id in region_ids:
        region = demo_registry.get(region_id)
        window = ds.isel(latitude=region.rows, longitude=region.cols).load()
        for name, array in window.data_vars.items():
            expected = np.full(region.shape, region_value(demo_registry, region_id), dtype=array.dtype)
            np.testing.assert_array_equal(array.values, expected, err_msg=f"{name} of region {region_id}")
    print(f"\nchaos: {WRITERS} writers, {kills} process-group kills, {len(commits)} region commits, 0 duplicates")

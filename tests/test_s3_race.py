"""The object-store path production relies on: racing writers on an S3-compatible server.

Icechunk cannot write to the GCS emulator (fake-gcs-server 1.54 refuses object_store's object PUT
with ``400 invalid uploadType``: see ``tests/test_gcs_emulator.py``, which tests everything else on
it), so this runs the same code through :class:`~resources.cloud_stores.S3IcechunkStore` against moto's
server on 127.0.0.1, which enforces the conditional writes Icechunk's commits depend on, as GCS does.
"""

import multiprocessing
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _s3_workers
import _workers
import pytest
import xarray as xr
from _services import S3_KEYS, moto_s3, s3_store

from resources.cloud_stores import S3IcechunkStore
from resources.ledger import iter_region_commits
from resources.local_store import LocalIcechunkStore
from resources.store import StoreError
from resources.template import ensure_template
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet

BUCKET = "risk-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


def _store(endpoint: str, prefix: str) -> S3IcechunkStore:
    return s3_store(endpoint, BUCKET, prefix)


def test_missing_bucket_fails_with_a_clear_error(s3_endpoint: str) -> None:
    """A store that cannot be reached fails with a StoreError naming its location."""
    store = S3IcechunkStore(
        bucket="no-such-bucket",
        prefix="x",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        allow_http=True,
        force_path_style=True,
        **S3_KEYS,
    )
    with pytest.raises(StoreError, match="s3://no-such-bucket/x"):
        store.repository(create=True)


@pytest.mark.slow
def test_eight_racing_processes_lose_nothing_and_match_a_sequential_build(
    s3_endpoint: str, tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet
) -> None:
    # One region each: 8 commits racing from 8 processes. The science is computed twice (raced and
    # sequential), which under CI's load made two regions each take over two minutes; the race itself is
    # the commits', and the sixteen-writer chaos tests (direct and batch) race more of them.
    n_workers, per_worker = 8, 1
    region_ids = demo_registry.ids[: n_workers * per_worker]
    inputs_json = demo_inputs.model_dump_json()
    raced = _store(s3_endpoint, "raced.icechunk")
    ensure_template(raced, demo_registry.grid, {"code_version": "test"})

    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        # interleaved, so neighbouring regions are committed by different processes
        batches = [region_ids[i::n_workers] for i in range(n_workers)]
        results = [
            row
            for rows in pool.map(
                _s3_workers.build_regions, [raced.model_dump_json()] * n_workers, [inputs_json] * n_workers, batches
            )
            for row in rows
        ]
    elapsed = time.perf_counter() - started

    assert sorted(r[0] for r in results) == sorted(region_ids)
    commits = list(iter_region_commits(raced.repository(), "main"))
    assert sorted(c.region for c in commits) == sorted(region_ids), "every region committed exactly once, none lost"
    assert {c.snapshot_id for c in commits} == {r[1] for r in results}, "every snapshot a worker got is on main"

    sequential = LocalIcechunkStore(path=str(tmp_path / "sequential"))
    ensure_template(sequential, demo_registry.grid, {"code_version": "test"})
    _workers.build_regions(sequential.path, inputs_json, region_ids)
    a = xr.open_zarr(raced.repository().readonly_session(branch="main").store, consolidated=False).load()
    b = xr.open_zarr(sequential.repository().readonly_session(branch="main").store, consolidated=False).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert int(a["risk"].notnull().sum()) > 0

    rebases = [r[2] for r in results]
    commit_s = sorted(r[3] for r in results)
    # Shown with `pytest -s`; docs/deploy.md quotes a run of it.
    print(
        f"\nS3 race: {len(results)} regions, {n_workers} processes, {elapsed:.1f} s; rebases per commit "
        f"mean {statistics.mean(rebases):.1f} max {max(rebases)}; commit p50 {statistics.median(commit_s):.2f} s "
        f"p95 {commit_s[int(0.95 * (len(commit_s) - 1))]:.2f} s"
    )

"""Benchmark: the reconciliation sensor's tick at 10,000 regions and 10,000 commits.

Builds, once, a local Icechunk repository with one commit per region (metadata-only commits:
the sensor reads commit metadata, not chunks) and a SQLite Dagster instance holding one
materialization record per region, then times the real sensor function:

- cold start: no cursor, the whole commit log and every record are read;
- incremental: 10 new commits and 10 new records since the last tick;
- idle: nothing new.

Baselines measured in the same run: a bare walk of the whole commit log
(``repo.ancestry``) and a bare paged fetch of all records — the least any reconciliation
must read on a cold start. Peak Python memory of a tick comes from ``tracemalloc``.

Usage::

    .venv/bin/python benchmarks/bench_reconcile.py [--regions 10000]
"""

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import icechunk
from _fixtures import square_registry, stand_in_inputs
from dagster import AssetKey, AssetMaterialization, DagsterInstance, build_sensor_context, define_asset_job

from resources.ledger import REGION_KIND
from resources.local_store import LocalIcechunkStore
from resources.target import ModelParamsResource, current_target
from risk_assets.reconcile import RECORDS_PAGE
from risk_assets.sensors import build_reconciliation_sensor
from risk_assets.sources import region_partitions
from risk_model.overrides import DEFAULT_OVERRIDES_PATH
from risk_model.params import DEFAULT_PARAMS_PATH
from risk_model.versions import BuildKey

KEY = AssetKey("risk_raster")


def _commit(repo: icechunk.Repository, region: str, key: BuildKey) -> str:
    session = repo.writable_session("main")
    return session.commit(
        f"region {region}",
        metadata={
            "kind": REGION_KIND,
            "region": region,
            "params_version": key.params_version,
            "inputs_version": key.inputs_version,
            "code_version": key.code_version,
            "run_id": "bench",
            "written_at": "2026-11-25T00:00:00+00:00",
        },
        allow_empty=True,
    )


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Seconds and peak traced MiB of ``fn()``, and its result."""
    tracemalloc.start()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, result


def main() -> None:
    """Build the fixture, time the ticks and print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--regions", type=int, default=10_000)
    args = parser.parse_args()
    registry = square_registry(args.regions)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = stand_in_inputs(Path(tmp))  # the sensor hashes the inputs on every tick
        params = ModelParamsResource(path=str(DEFAULT_PARAMS_PATH), overrides_path=str(DEFAULT_OVERRIDES_PATH))
        target = current_target(params, inputs, registry.ids)
        store = LocalIcechunkStore(path=str(Path(tmp) / "repo.icechunk"))
        repo = store.repository(create=True)
        started = time.perf_counter()
        snapshots = {region: _commit(repo, region, target.region_key(region)) for region in registry.ids}
        build_commits = time.perf_counter() - started
        with DagsterInstance.ephemeral(tempdir=tmp) as instance:
            started = time.perf_counter()
            for region, snapshot in snapshots.items():
                instance.report_runless_asset_event(
                    AssetMaterialization(KEY, partition=region, metadata={"snapshot_id": snapshot})
                )
            build_records = time.perf_counter() - started
            print(f"fixture: {len(snapshots)} commits in {build_commits:.0f} s, records in {build_records:.0f} s")

            job = define_asset_job("build_region", selection=[KEY], partitions_def=region_partitions(registry))
            release = define_asset_job("release_raster", selection=["raster_release"])
            sensor = build_reconciliation_sensor(registry, job, release)
            resources = {"store": store, "params": params, "inputs": inputs}

            def tick(cursor: str | None) -> Any:
                context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                return sensor(context)

            def walk() -> int:
                return sum(1 for _ in store.repository().ancestry(branch="main"))

            def fetch() -> int:
                n, cursor = 0, None
                for _ in range(1_000_000):  # bounded: pages of 10,000
                    page = instance.fetch_materializations(KEY, limit=RECORDS_PAGE, cursor=cursor)
                    n += len(page.records)
                    if not page.has_more:
                        return n
                    cursor = page.cursor
                return n

            walk_s, walk_mb, _ = _timed(walk)
            fetch_s, fetch_mb, _ = _timed(fetch)
            baseline = walk_s + fetch_s
            cold_s, cold_mb, cold = _timed(lambda: tick(None))
            region_requests = [r for r in cold.run_requests or [] if r.partition_key is not None]
            # every region is committed for its key, so the only request is the version's release
            assert not cold.asset_events and not region_requests, "records match commits: no region to touch"
            idle_s, idle_mb, idle = _timed(lambda: tick(cold.cursor))
            for region in registry.ids[:10]:
                snapshot = _commit(repo, region, target.region_key(region))
                instance.report_runless_asset_event(
                    AssetMaterialization(KEY, partition=region, metadata={"snapshot_id": snapshot})
                )
            incr_s, incr_mb, incr = _timed(lambda: tick(idle.cursor))
            assert not incr.asset_events, "the new commits are recorded already"
    n = len(registry)
    print(f"\n{n} regions, {n + 11} commits (incl. the 10 new), {n + 10} records; cursor {len(cold.cursor)} bytes\n")
    print("| measure | seconds | ratio to baseline | peak traced MiB |\n|---|---|---|---|")
    print(
        f"| baseline: walk the whole log + fetch all records | {baseline:.2f} | 1.00 | {max(walk_mb, fetch_mb):.0f} |"
    )
    print(f"| cold start tick (no cursor) | {cold_s:.2f} | {cold_s / baseline:.2f} | {cold_mb:.0f} |")
    print(f"| incremental tick (10 new commits and records) | {incr_s:.3f} | {incr_s / baseline:.3f} | {incr_mb:.0f} |")
    print(f"| idle tick (nothing new) | {idle_s:.3f} | {idle_s / baseline:.3f} | {idle_mb:.0f} |")


if __name__ == "__main__":
    main()

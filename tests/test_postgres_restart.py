"""PostgreSQL, Dagster's instance storage, restarts while region runs are in flight.

A throwaway cluster of this test's own (never CI's shared server) holds the Dagster instance;
the repository is on the S3 emulator, as in ``test_postgres_build.py``. Region runs of the demo
grid execute through Dagster in spawned workers while the server is stopped and started again
on the same port and data directory. Every run must end, succeeded or failed with a message a
person can act on; a rerun of the regions missing from the commit log completes the build;
then every region is committed exactly once on the branch and, once the reconciliation sensor
has reported what Dagster did not record, Dagster's materializations cover every region.
"""

import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import _pg_workers
import pytest
import yaml
from _services import S3_KEYS, PostgresCluster, moto_s3, own_postgres
from _targets import default_target, inputs_resource, params_resource
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    SensorResult,
    build_sensor_context,
    define_asset_job,
)

from resources.cloud_stores import S3IcechunkStore
from resources.ledger import iter_region_commits
from risk_assets.sensors import build_reconciliation_sensor
from risk_assets.sources import region_partitions
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet

BUCKET = "risk-pg-restart"
#: Regions built during the restart: two rounds of the three workers.
REGIONS = slice(30, 36)
#: No run may take longer than this, whatever the database does: a bound on a hang, not a
#: speed limit (a run takes seconds on a quiet machine; 60 s was exceeded under a load of 25).
RUN_TIMEOUT_S = 300.0


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with own_postgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


def _outcome(future: "Future[tuple[str | None, bool, str]]", region: str, deadline: float) -> tuple[str, bool, str]:
    """The region's outcome; an exception out of the worker is a failure with its class and message."""
    try:
        _, ok, why = future.result(timeout=max(1.0, deadline - time.monotonic()))
    except FutureTimeout:
        return region, False, f"TIMEOUT: no outcome within {RUN_TIMEOUT_S} s"
    except Exception as err:  # whatever a worker raised is the thing reported
        return region, False, f"RAISED {type(err).__name__}: {err}"
    return region, ok, why


def _wait_for_a_started_run(home: Path, prepare_runs: int, timeout_s: float = 120.0) -> None:
    """Return once a run beyond the first ``prepare_runs`` has started (bounded by ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    with DagsterInstance.from_config(str(home)) as instance:
        while time.monotonic() < deadline:
            started = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
            if started:
                return
            time.sleep(0.1)
    raise AssertionError(f"no region run started within {timeout_s} s")


@pytest.mark.slow
@pytest.mark.parametrize(
    "down_s",
    [
        # within dagster-postgres's connection retries (5, from 0.2 s doubling): ridden out
        pytest.param(4.0, id="down-4s"),
        # beyond them: a run that needed the database meanwhile fails, saying so
        pytest.param(12.0, id="down-12s"),
    ],
)
def test_a_postgres_restart_mid_build_ends_clearly_and_a_rerun_completes_it(
    down_s: float,
    cluster: PostgresCluster,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    demo_registry: RegionRegistry,
    demo_inputs: InputSet,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(_pg_workers.instance_yaml(cluster.url)))
    store = S3IcechunkStore(
        bucket=BUCKET,
        prefix=f"pg-restart-{down_s:.0f}.icechunk",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        allow_http=True,
        force_path_style=True,
        **S3_KEYS,
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("RISK_HOME", str(home))
    monkeypatch.setenv("RISK_GRID", "demo")
    monkeypatch.setenv("RISK_STORE", json.dumps({"kind": "s3", **store.model_dump()}))
    monkeypatch.setenv("RISK_INPUTS", demo_inputs.model_dump_json())

    regions = demo_registry.ids[REGIONS]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=3, mp_context=ctx) as pool:
        _, prepared, why = pool.submit(_pg_workers.run_job, "prepare").result(timeout=RUN_TIMEOUT_S)
        assert prepared, why
        started = time.monotonic()
        futures = {r: pool.submit(_pg_workers.run_job, "region", r) for r in regions}
        # Restart while runs are in flight: once the first region run has started.
        _wait_for_a_started_run(home, prepare_runs=1)
        restarted_at = time.monotonic() - started
        cluster.restart(down_s)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        first = [_outcome(futures[r], r, deadline) for r in regions]
        elapsed = time.monotonic() - started

        print(f"\nrestart at {restarted_at:.1f} s, down {down_s} s; runs done after {elapsed:.1f} s")
        for region, ok, why in first:
            print(f"  {region}: {'succeeded' if ok else 'FAILED: ' + why}")
        assert not [o for o in first if o[2].startswith("TIMEOUT")], "every run ends"
        unclear = [o for o in first if not o[1] and not o[2].startswith("Dagster's database could not be reached (")]
        assert unclear == [], "a failed run says why in words: not a traceback, not just its run id"

        target = default_target(demo_inputs, demo_registry)
        branch = target.version.branch
        committed = {c.region for c in iter_region_commits(store.repository(), branch)}
        missing = sorted(set(regions) - committed)
        rerun = [
            _outcome(pool.submit(_pg_workers.run_job, "region", r), r, time.monotonic() + RUN_TIMEOUT_S)
            for r in missing
        ]
        assert [o for o in rerun if not o[1]] == [], "the rerun completes the build"
        print(f"  rerun of {len(missing)} regions missing from the commit log: all succeeded")

    commits = [c.region for c in iter_region_commits(store.repository(), branch)]
    assert sorted(commits) == sorted(regions), "every region committed exactly once: none lost, none twice"

    # Commits Dagster did not record (a run that committed, then lost its database) are
    # reported by the reconciliation sensor, stored as the daemon stores a tick's events.
    job = define_asset_job("build_region", selection=["risk_raster"], partitions_def=region_partitions(demo_registry))
    release = define_asset_job("release_raster", selection=["raster_release"])
    sensor = build_reconciliation_sensor(demo_registry, job, release)
    resources = {"store": store, "params": params_resource(), "inputs": inputs_resource(demo_inputs)}
    with DagsterInstance.from_config(str(home)) as instance:
        recorded = instance.get_materialized_partitions(AssetKey("risk_raster"))
        result = sensor(build_sensor_context(instance=instance, cursor=None, resources=resources))
        assert isinstance(result, SensorResult)
        reported = sorted(str(e.partition) for e in result.asset_events if isinstance(e, AssetMaterialization))
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        print(f"  Dagster recorded {len(recorded & set(regions))}/{len(regions)}; the sensor reported {reported}")
        assert set(reported) == set(regions) - recorded
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) >= set(regions)

"""Dagster on Postgres, the production instance storage: a multi-process region build, then the sensor.

The instance configuration has the shape the Helm values produce (``postgres_db`` with
``scheme: postgresql+psycopg2``, required with SQLAlchemy 2.1) and the store is Icechunk on an
S3-compatible server, so this is the production path minus Kubernetes and GCS.
"""

import json
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _pg_workers
import numpy as np
import pytest
import xarray as xr
import yaml
from _services import S3_KEYS, moto_s3, postgres_url
from _targets import default_target, inputs_resource, params_resource
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    SensorResult,
    build_sensor_context,
    define_asset_job,
)

from resources.cloud_stores import S3IcechunkStore
from resources.ledger import iter_region_commits
from resources.region_write import write_region
from risk_assets.sensors import build_reconciliation_sensor
from risk_assets.sources import region_partitions
from risk_model.grid import RegionRegistry
from risk_model.schema import DIMS, VARIABLES, coordinates

BUCKET = "risk-pg-test"


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with postgres_url() as url:
        yield url


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.mark.slow
def test_multiprocess_region_build_on_postgres(
    database_url: str,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    demo_registry: RegionRegistry,
    demo_inputs: object,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(_pg_workers.instance_yaml(database_url)))
    store = S3IcechunkStore(
        bucket=BUCKET,
        prefix="pg-build.icechunk",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        allow_http=True,
        force_path_style=True,
        **S3_KEYS,
    )
    # What the Helm values give the code location, with the S3 emulator in place of GCS.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("RISK_HOME", str(home))
    monkeypatch.setenv("RISK_GRID", "demo")
    monkeypatch.setenv("RISK_STORE", json.dumps({"kind": "s3", **store.model_dump()}))
    monkeypatch.setenv("RISK_INPUTS", demo_inputs.model_dump_json())  # type: ignore[attr-defined]

    ctx = multiprocessing.get_context("spawn")
    regions = demo_registry.ids[10:16]
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        _, prepared, why = pool.submit(_pg_workers.run_job, "prepare").result()
        assert prepared, why
        outcomes = list(pool.map(_pg_workers.run_job, ["region"] * len(regions), regions))
    assert [o for o in outcomes if not o[1]] == []

    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(regions)
        assert len(instance.get_runs()) == 1 + len(regions)
    target = default_target(demo_inputs, demo_registry)  # type: ignore[arg-type]
    branch = target.version.branch
    commits = [c.region for c in iter_region_commits(store.repository(), branch)]
    assert sorted(commits) == sorted(regions), "one commit per region on the S3 store, none lost"

    # The reconciliation sensor on the same Postgres instance: a region committed outside
    # Dagster is reported (stored the way the daemon stores a tick's events), then nothing more.
    outside = demo_registry.ids[20]
    region = demo_registry.get(outside)
    write_region(
        store,
        demo_registry.grid,
        region,
        xr.Dataset(
            {v.name: (DIMS, np.ones(region.shape, dtype=v.dtype)) for v in VARIABLES},
            coords=coordinates(demo_registry.grid, region.rows, region.cols),
        ),
        key=target.region_key(outside),
        run_id="outside-dagster",
        branch=branch,
    )
    job = define_asset_job("build_region", selection=["risk_raster"], partitions_def=region_partitions(demo_registry))
    release = define_asset_job("release_raster", selection=["raster_release"])
    sensor = build_reconciliation_sensor(demo_registry, job, release)
    resources = {"store": store, "params": params_resource(), "inputs": inputs_resource(demo_inputs)}  # type: ignore[arg-type]
    with DagsterInstance.from_config(str(home)) as instance:
        cursor = None
        reported = []
        for _ in range(2):
            result = sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
            assert isinstance(result, SensorResult)
            for event in result.asset_events:
                instance.report_runless_asset_event(event)
            reported.append(sorted(e.partition for e in result.asset_events if isinstance(e, AssetMaterialization)))
            assert not result.run_requests
            cursor = result.cursor
        assert reported == [[outside], []]
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == {*regions, outside}

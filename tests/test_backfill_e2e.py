"""End to end with the daemon: the sensor reconciles, then the missing-only backfill runs exactly the missing.

A real `dagster dev` (webserver + daemon) on a SQLite instance in a temporary project folder,
real commits made outside Dagster, a real branch rollback, and the `risk backfill-missing`
command launching the backfill through the webserver's GraphQL API.
"""

import re
import subprocess
import sys
from pathlib import Path

import _workers
import pytest
from _dagster_dev import Project, dagster_dev, make_project, wait_for
from dagster import AssetKey, DagsterInstance, RunsFilter, materialize

from risk_assets.assets import build_assets
from risk_assets.definitions import VERIFY_JOB, build_definitions, build_resources
from risk_assets.grid import RegionRegistry
from risk_assets.inputs import InputSet
from risk_assets.version import MODEL_CODE_VERSION

KEY = AssetKey("risk_raster")


@pytest.fixture
def project(tmp_path: Path, demo_inputs: InputSet) -> Project:
    return make_project(tmp_path, demo_inputs)


@pytest.mark.slow
def test_sensor_then_missing_only_backfill_runs_exactly_the_missing(
    project: Project, demo_registry: RegionRegistry, demo_inputs: InputSet
) -> None:
    ids = demo_registry.ids
    outside, by_dagster, never = ids[:50], ids[50:53], ids[53:]
    lost = by_dagster[-1]

    # Part of the grid through Dagster, recorded in the project's instance.
    with DagsterInstance.from_config(str(project.home)) as instance:
        resources = build_resources(project.settings)
        assets = build_assets(demo_registry)
        assert materialize(
            assets, selection=["model_params", "raster_template"], resources=resources, instance=instance
        ).success
        for region in by_dagster:
            if region == lost:
                before_lost = project.store.repository().lookup_branch("main")
            assert materialize(
                assets, selection=["risk_raster"], partition_key=region, resources=resources, instance=instance
            ).success
    # The store loses one recorded region: main is rolled back past its commit.
    project.store.repository().reset_branch("main", before_lost)
    # Regions committed outside Dagster (as by workers that committed and died before recording).
    _workers.build_regions(project.store.path, demo_inputs.model_dump_json(), outside, code_version=MODEL_CODE_VERSION)
    assert project.committed() == set(outside) | set(by_dagster[:-1])

    with dagster_dev(project), DagsterInstance.from_config(str(project.home)) as instance:
        # The sensor reports the outside commits and repairs the lost region.
        wait_for(lambda: set(outside) <= instance.get_materialized_partitions(KEY), 120, "the sensor's reports")
        wait_for(lambda: lost in project.committed(), 180, "the repair run of the lost region")
        repairs = instance.get_runs(RunsFilter(tags={"risk/reason": "repair"}))
        assert [r.tags["dagster/partition"] for r in repairs] == [lost]

        # The missing-only backfill, through the webserver and the daemon.
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "risk_assets.cli",
                "--home",
                str(project.home),
                "backfill-missing",
                "--url",
                project.url,
                "--timeout",
                "400",
            ],
            env=project.env,
            capture_output=True,
            text=True,
            timeout=500,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{len(never)} of {len(ids)} regions are missing" in done.stdout
        match = re.search(r"launched backfill (\w+)", done.stdout)
        assert match, done.stdout
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": match.group(1)}))
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(never), "exactly the missing"

        assert project.committed() == set(ids)
        assert instance.get_materialized_partitions(KEY) == set(ids)
        defs = build_definitions(project.settings)
        verify = defs.resolve_job_def(VERIFY_JOB).execute_in_process(instance=instance)
        [evaluation] = verify.get_asset_check_evaluations()
        assert evaluation.passed, evaluation.metadata

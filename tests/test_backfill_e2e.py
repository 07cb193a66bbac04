"""End to end with the daemon: the sensor reconciles, then the missing-only backfill runs exactly the missing.

A real `dagster dev` (webserver + daemon) on a SQLite instance in a temporary project folder,
real commits made outside Dagster, a real branch rollback, and the `risk backfill-missing`
command launching the backfill through the webserver's GraphQL API.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import _workers
import pytest
from dagster import AssetKey, DagsterInstance, RunsFilter, materialize

from resources.ledger import committed_regions
from resources.store import LocalIcechunkStore
from risk_assets.assets import build_assets
from risk_assets.definitions import VERIFY_JOB, build_definitions, build_resources
from risk_assets.grid import RegionRegistry
from risk_assets.inputs import InputSet
from risk_assets.settings import Settings
from risk_assets.version import MODEL_CODE_VERSION

ROOT = Path(__file__).resolve().parents[1]
KEY = AssetKey("risk_raster")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Project:
    """A project folder with its instance, store and a running `dagster dev`."""

    home: Path
    settings: Settings
    env: dict[str, str]
    url: str

    @property
    def store(self) -> LocalIcechunkStore:
        return LocalIcechunkStore(path=str(self.settings.store_path))

    def committed(self) -> set[str]:
        return set(committed_regions(self.store.repository(), "main"))


def _server_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return False


@pytest.fixture
def project(tmp_path: Path, demo_inputs: InputSet) -> Iterator[Project]:
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    settings = Settings(home=home, grid="demo", sensor_interval_s=5)
    shutil.copytree(Path(demo_inputs.burn_probability).parent, settings.inputs_dir)
    port = _free_port()
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "RISK_HOME": str(home),
        "RISK_GRID": "demo",
        "RISK_SENSOR_INTERVAL": "5",
    }
    yield Project(home, settings, env, f"http://127.0.0.1:{port}")


def _start_dagster_dev(project: Project) -> subprocess.Popen[bytes]:
    port = project.url.rsplit(":", 1)[1]
    log = open(project.home / "dagster-dev.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-p", port],
        cwd=project.home,
        env=project.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so teardown stops every child
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    # `dagster dev` may not exit on SIGTERM without a terminal: stop its whole group.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


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

    process = _start_dagster_dev(project)
    try:
        _wait_for(lambda: _server_up(project.url), 90, "the webserver")
        with DagsterInstance.from_config(str(project.home)) as instance:
            # The sensor reports the outside commits and repairs the lost region.
            _wait_for(lambda: set(outside) <= instance.get_materialized_partitions(KEY), 120, "the sensor's reports")
            _wait_for(lambda: lost in project.committed(), 180, "the repair run of the lost region")
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
    finally:
        _stop(process)

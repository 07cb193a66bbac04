"""End to end: `risk build` through a real Dagster instance on SQLite, run twice."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _rundb import region_runs
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from resources.ledger import iter_region_commits
from resources.local_store import LocalIcechunkStore
from risk_assets.settings import Settings
from risk_model.grid import load_registry

ROOT = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path) -> Path:
    """A project folder holding the local default dagster.yaml."""
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _risk_build(home: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DAGSTER_HOME": str(home), "RISK_HOME": str(home), "RISK_GRID": "mini"}
    return subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(home), "--grid", "mini", "build", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.slow
def test_build_every_region_once_then_nothing(tmp_path: Path) -> None:
    """The same command as `make demo`, on the small `mini` grid to keep the suite fast."""
    registry = load_registry("mini")
    home = _project(tmp_path)

    first = _risk_build(home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"built {len(registry)} regions" in first.stdout
    # one commit per region, plus the pyramid commit of the release
    assert f"commits made: {len(registry) + 1}" in first.stdout
    assert "released release-" in first.stdout

    store = LocalIcechunkStore(path=str(Settings(home=home, grid="mini").store_path))
    records = list(iter_region_commits(store.repository(), "main", use_ledger=False))
    assert sorted(r.region for r in records) == sorted(registry.ids), "main holds every region, once"
    assert all(r.run_id and r.params_version and r.inputs_version and r.metadata["bounds"] for r in records)

    second = _risk_build(home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 to run" in second.stdout
    assert "commits made: 0" in second.stdout

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(registry.ids)


def _start_build(home: Path) -> subprocess.Popen[str]:
    env = os.environ | {"DAGSTER_HOME": str(home), "RISK_HOME": str(home), "RISK_GRID": "mini"}
    return subprocess.Popen(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(home), "--grid", "mini", "build", "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own: killed as a whole, as a pod is
    )


@pytest.mark.slow
def test_a_build_killed_outright_blocks_nothing_and_two_builds_never_run_at_once(tmp_path: Path) -> None:
    """SIGKILL a build's whole process group mid-region; the next build cleans up and completes."""
    registry = load_registry("mini")
    home = _project(tmp_path)

    doomed = _start_build(home)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and doomed.poll() is None:
        time.sleep(1.0)
        if region_runs(home, DagsterRunStatus.STARTED) > 0:
            break
    assert doomed.poll() is None, f"the build ended before it could be killed: {doomed.communicate()}"
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    left_started = region_runs(home, DagsterRunStatus.STARTED)
    assert left_started > 0, "the kill left region runs STARTED (holding their pool slots)"

    # two builds at once: one builds, the other says plainly that it cannot
    builds = [_start_build(home), _start_build(home)]
    outputs = [b.communicate(timeout=900) for b in builds]
    codes = sorted(b.returncode for b in builds)
    assert codes == [0, 1], outputs
    done, refused = (outputs[0], outputs[1]) if builds[0].returncode == 0 else (outputs[1], outputs[0])
    assert "another `risk build` of this project is running" in refused[1], refused
    assert "Traceback" not in refused[1]
    assert "cleaned up" in done[0] and "pool slots freed" in done[0], done
    assert "released release-" in done[0], done

    store = LocalIcechunkStore(path=str(Settings(home=home, grid="mini").store_path))
    records = list(iter_region_commits(store.repository(), "main", use_ledger=False))
    assert sorted(r.region for r in records) == sorted(registry.ids), "every region on main, once: none lost or doubled"
    assert region_runs(home, DagsterRunStatus.STARTED) == 0

    again = _risk_build(home)
    assert again.returncode == 0 and "0 to run" in again.stdout and "commits made: 0" in again.stdout, again

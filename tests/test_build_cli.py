"""End to end: `risk build` through a real Dagster instance on SQLite, run twice."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _rundb import region_runs, run_partitions
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


def _risk_build(home: Path, *python_flags: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DAGSTER_HOME": str(home), "RISK_HOME": str(home), "RISK_GRID": "mini"}
    return subprocess.run(
        [
            sys.executable,
            *python_flags,
            "-m",
            "risk_assets.cli",
            "--home",
            str(home),
            "--grid",
            "mini",
            "build",
            "--workers",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.slow
def test_build_every_region_once_then_nothing(tmp_path: Path) -> None:
    """The same command as `make demo`, on the small `mini` grid to keep the suite fast; then the
    reruns: nothing missing (no run, no commit), 3 regions lost (exactly those run), and Dagster's
    records gone (recorded again from the commit log, without a run)."""
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

    runs_after_first = _runs(home)
    second = _risk_build(home, "-X", "importtime")  # the import log goes to stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 to run" in second.stdout
    assert "commits made: 0" in second.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in second.stderr.splitlines() if line.startswith("import time:")
    }
    assert "risk_model.grid" in imported, "the import log was read"
    # Decided from the record stamp at the same refs digest (the very commit log of the first
    # build's end): neither Dagster (about a second to import) nor Icechunk, Zarr or NumPy loaded.
    heavy = {name for name in imported if name.split(".")[0] in {"dagster", "icechunk", "zarr", "numpy"}}
    assert not heavy, f"the no-op rerun imported {sorted(heavy)[:5]}"
    assert _runs(home) == runs_after_first, "nothing missing: decided from the commit log, no run launched"

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(registry.ids)

    # Lose the newest 3 region commits (the version's branch rolled back): only those run again.
    repo = store.repository()
    [branch] = [b for b in repo.list_branches() if b.startswith("build-")]
    newest = list(iter_region_commits(repo, branch, use_ledger=False))
    lost = {r.region for r in newest[:3]}
    repo.reset_branch(branch, newest[3].snapshot_id)
    third = _risk_build(home)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "17 done, 3 to run" in third.stdout
    assert "commits made: 4" in third.stdout, "the 3 lost regions and the pyramid of the new release"
    assert _partitions_run_since(home, runs_after_first, registry.ids) == lost, "exactly the lost regions ran"
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(registry.ids)

    # Dagster's records gone (a new instance beside the same store): recorded again without a run.
    shutil.rmtree(home / "history")  # the run and event-log databases of the local SQLite instance
    fourth = _risk_build(home)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert f"recorded {len(registry)} regions committed earlier in Dagster" in fourth.stdout
    assert "commits made: 0" in fourth.stdout
    assert _runs(home) == 0
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(registry.ids)

    # The rerun noted that Dagster held every region (risk_assets.record_stamp); records wiped
    # since (the instance's index written) void the note: Dagster is asked, and they come back.
    assert (home / "var" / "recorded.json").is_file()
    with DagsterInstance.from_config(str(home)) as instance:
        instance.wipe_assets([AssetKey("risk_raster")])  # SQLite storage cannot wipe single partitions
    fifth = _risk_build(home)
    assert fifth.returncode == 0, fifth.stdout + fifth.stderr
    assert f"recorded {len(registry)} regions committed earlier in Dagster" in fifth.stdout
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(registry.ids)


def _runs(home: Path) -> int:
    with DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs_count()


def _partitions_run_since(home: Path, skip: int, ordered: list[str]) -> set[str]:
    """The raster partitions of the region runs after the first ``skip`` runs (oldest first)."""
    with DagsterInstance.from_config(str(home)) as instance:
        runs = list(reversed(instance.get_runs()))[skip:]
    return {p for run in runs if run.job_name == "build_region" for p in run_partitions(run.tags, ordered)}


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

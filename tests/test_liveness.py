"""A build killed outright never blocks the next: its runs are found, failed, and their slots freed.

A run of a job whose step holds the one ``icechunk_writers`` slot is executed in a process
group of its own, as ``risk build`` executes region runs, and the whole group is SIGKILLed
(what a pod eviction, an OOM kill or a reboot does). The run stays STARTED and the slot stays
claimed; :func:`reap_dead_runs` marks it failed and frees the slot, and a new run that needs
the slot completes.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus

from risk_assets.liveness import PID_TAG, describe, reap_dead_runs

JOBS = Path(__file__).with_name("_liveness_jobs.py")
POOL = "icechunk_writers"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "dagster.yaml").write_text(
        yaml.safe_dump({"concurrency": {"pools": {"default_limit": 1}}, "telemetry": {"enabled": False}})
    )
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def _run_job(name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(JOBS), name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a process group of its own, like `risk build` under a pod
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(JOBS.parent), os.environ.get("PYTHONPATH", "")])},
    )


def _claimed(instance: DagsterInstance) -> int:
    return len(instance.event_log_storage.get_concurrency_info(POOL).claimed_slots)


@pytest.mark.slow
def test_a_killed_runs_slot_is_freed_and_the_next_run_completes(home: Path) -> None:
    build = _run_job("slow_writer")
    with DagsterInstance.get() as instance:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _claimed(instance) == 0:
            assert build.poll() is None, build.stderr.read().decode() if build.stderr else ""
            time.sleep(0.5)
        assert _claimed(instance) == 1, "the step claimed the pool's only slot"
        assert reap_dead_runs(instance) == [], "a run whose process is alive is left alone"
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()

        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED and _claimed(instance) == 1, "the kill left both behind"
        assert run.tags[PID_TAG] != str(os.getpid())

        dead = reap_dead_runs(instance)
        assert [d.run_id for d in dead] == [run.run_id]
        assert "cleaned up 1 run(s)" in describe(dead)
        run = instance.get_run_by_id(run.run_id)
        assert run is not None and run.status == DagsterRunStatus.FAILURE
        assert _claimed(instance) == 0
        assert reap_dead_runs(instance) == [], "a second look finds nothing more"

    nxt = _run_job("quick_writer")
    assert nxt.wait(timeout=120) == 0, nxt.stderr.read().decode() if nxt.stderr else ""

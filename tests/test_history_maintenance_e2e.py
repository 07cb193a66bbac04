"""The history maintenance run by the daemon: `dagster dev` requests and runs it by itself past the threshold."""

from pathlib import Path

import pytest
from _dagster_dev import Project, dagster_dev, make_project, risk_build, wait_for
from dagster import DagsterInstance, DagsterRun

from resources.history import history_since_expiry
from resources.ledger import committed_regions
from resources.release import latest_release
from risk_assets.maintenance_job import MAINTENANCE_JOB
from risk_model.grid import load_registry
from risk_model.input_set import InputSet
from risk_model.synthetic import generate_inputs

THRESHOLD = 5


@pytest.fixture
def project(tmp_path: Path) -> Project:
    inputs: InputSet = generate_inputs(load_registry("mini").grid, tmp_path / "inputs", seed=0)
    project = make_project(tmp_path, inputs, grid="mini")
    project.env["RISK_HISTORY_COMMITS"] = str(THRESHOLD)
    return project


def _history_runs(instance: DagsterInstance) -> list[DagsterRun]:
    return [r for r in instance.get_runs() if r.job_name == MAINTENANCE_JOB and r.tags.get("risk/trigger") == "history"]


@pytest.mark.slow
def test_the_daemon_expires_history_past_the_threshold_keeping_ledger_and_release(project: Project) -> None:
    built = risk_build(project)
    assert built.returncode == 0, built.stdout + built.stderr
    repo = project.store.repository()
    release = latest_release(repo)
    assert release is not None, built.stdout
    assert history_since_expiry(repo, limit=1000).snapshots >= THRESHOLD  # 20 regions, the pyramid, ...
    ledgers = {b: committed_regions(repo, b) for b in sorted(repo.list_branches())}

    with dagster_dev(project), DagsterInstance.from_config(str(project.home)) as instance:

        def maintained() -> bool:
            runs = _history_runs(instance)
            return bool(runs) and all(r.is_finished for r in runs)

        wait_for(maintained, 300, "the history_maintenance sensor to request maintenance and the daemon to run it")
        runs = _history_runs(instance)
        assert len(runs) == 1 and runs[0].is_success, [(r.run_id, r.status) for r in runs]

    repo = project.store.repository()
    since = history_since_expiry(repo, limit=1000)
    assert since.last_expiry is not None and since.snapshots < THRESHOLD
    assert len(repo.inspect_repo_info()["snapshots"]) < THRESHOLD + 2 * len(ledgers)  # root, tips, checkpoints
    assert latest_release(repo) == release
    after = {b: committed_regions(repo, b) for b in sorted(repo.list_branches())}
    assert {b: {r: c.snapshot_id for r, c in led.items()} for b, led in after.items()} == {
        b: {r: c.snapshot_id for r, c in led.items()} for b, led in ledgers.items()
    }

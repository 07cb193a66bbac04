"""The history maintenance run by the daemon: `dagster dev` requests and runs it by itself past the threshold."""

from pathlib import Path

import pytest
from _dagster_dev import Project, built_mini_project, dagster_dev, shared_folder, wait_for
from dagster import DagsterInstance, DagsterRun

from resources.history import history_since_expiry
from resources.ledger import committed_regions
from resources.release import latest_release
from risk_assets.maintenance_job import MAINTENANCE_JOB

THRESHOLD = 5


@pytest.fixture
def project(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The mini grid built and released by `risk build` (a copy of the session's one build)."""
    project = built_mini_project(tmp_path, shared_folder(tmp_path_factory, "built-mini"))
    project.env["RISK_HISTORY_COMMITS"] = str(THRESHOLD)
    return project


def _history_runs(instance: DagsterInstance) -> list[DagsterRun]:
    return [r for r in instance.get_runs() if r.job_name == MAINTENANCE_JOB and r.tags.get("risk/trigger") == "history"]


@pytest.mark.slow
def test_the_daemon_expires_history_past_the_threshold_keeping_ledger_and_release(project: Project) -> None:
    repo = project.store.repository()
    release = latest_release(repo)
    assert release is not None, "the built project is released"
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

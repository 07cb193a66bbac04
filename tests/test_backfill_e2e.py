"""End to end with the daemon: the sensor reconciles, then missing-only backfills run exactly the missing.

On the small ``mini`` grid (20 regions: the waits are the daemon's, not the science). The missing
regions are backfilled in two slices: the first by `risk backfill-missing --limit`
(GraphQL through the webserver), the rest from the Dagster UI in a real headless browser
(Debian's chromium driven by Playwright's Python package; Playwright cannot download its own
browser here).

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
from _dagster_dev import Project, dagster_dev, make_project, ui_page, wait_for
from _rundb import run_partitions
from dagster import AssetKey, DagsterInstance, RunsFilter, materialize

from resources.release import latest_release
from risk_assets.assets import build_assets
from risk_assets.definitions import PREPARE_JOB, VERIFY_JOB, build_definitions, build_resources
from risk_model.code_version import MODEL_CODE_VERSION
from risk_model.grid import load_registry
from risk_model.input_set import InputSet, local_input_set
from risk_model.synthetic import generate_inputs

KEY = AssetKey("risk_raster")


def _launch_missing_backfill_in_the_browser(url: str, n_missing: int, screenshot: Path) -> None:
    """Open the raster's partitions in the UI, select the missing ones and launch their backfill."""
    with ui_page(url, "/assets/risk_raster?view=partitions") as page:
        page.get_by_text(f"Missing ({n_missing})").wait_for(timeout=30_000)
        page.get_by_role("button", name="Materialize…").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("button", name="Missing", exact=True).click()
        # the section header counts the selection ("6 partitions")
        selected = dialog.get_by_text(re.compile(r"^\d+ partitions?$"))
        selected.wait_for(timeout=15_000)
        assert selected.inner_text() == f"{n_missing} partitions", dialog.inner_text()
        page.screenshot(path=str(screenshot))
        dialog.get_by_role("button", name="Launch backfill").click()
        dialog.wait_for(state="hidden", timeout=30_000)


@pytest.fixture
def mini_inputs(tmp_path: Path) -> InputSet:
    return generate_inputs(load_registry("mini").grid, tmp_path / "inputs", seed=0)


@pytest.fixture
def project(tmp_path: Path, mini_inputs: InputSet) -> Project:
    return make_project(tmp_path, mini_inputs, grid="mini")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sensor_then_missing_only_backfill_runs_exactly_the_missing(project: Project, mini_inputs: InputSet) -> None:
    registry = load_registry("mini")
    ids = registry.ids
    outside, by_dagster, never = ids[:7], ids[7:10], ids[10:]
    by_cli, by_ui = never[:4], never[4:]
    lost = by_dagster[-1]

    # Part of the grid through Dagster, recorded in the project's instance.
    with DagsterInstance.from_config(str(project.home)) as instance:
        resources = build_resources(project.settings, inputs=local_input_set(project.settings.inputs_dir))
        assets = build_assets(registry)
        # As `risk build` does: observe the sources and commit the template first. A region
        # recorded before its sources were ever observed is rebuilt by eager automation at the
        # first observation (the observe_sources schedule's next tick, every 10 minutes).
        defs = build_definitions(project.settings, inputs=local_input_set(project.settings.inputs_dir))
        assert defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance).success
        for region in by_dagster:
            if region == lost:
                before_lost = project.store.repository().lookup_branch(project.branch)
            assert materialize(
                assets, selection=["risk_raster"], partition_key=region, resources=resources, instance=instance
            ).success
    # The store loses one recorded region: the version's branch is rolled back past its commit.
    project.store.repository().reset_branch(project.branch, before_lost)
    # Regions committed outside Dagster (as by workers that committed and died before recording).
    _workers.build_regions(
        project.store.path,
        mini_inputs.model_dump_json(),
        outside,
        code_version=MODEL_CODE_VERSION,
        branch=project.branch,
        grid="mini",
    )
    assert latest_release(project.store.repository()) is None
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
                "--limit",
                str(len(by_cli)),
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
        assert sorted(p for r in runs for p in run_partitions(r.tags, ids)) == sorted(by_cli), (
            "exactly the missing asked for"
        )

        # The rest from the UI: "Materialize… → Missing → Launch backfill" in a real browser.
        cli_backfill = match.group(1)
        _launch_missing_backfill_in_the_browser(project.url, len(by_ui), project.home / "backfill-dialog.png")

        def ui_backfill_done() -> bool:
            ui = [b for b in instance.get_backfills() if b.backfill_id != cli_backfill]
            return bool(ui) and ui[0].status.value.startswith("COMPLETED")

        # The backfill daemon re-evaluates a backfill every 30 s and marks it done only on the
        # evaluation after its last run: ~85 s on a quiet machine, several minutes when CI runs
        # the race tests beside it.
        wait_for(ui_backfill_done, 480, "the UI's backfill to finish")
        [ui_backfill] = [b for b in instance.get_backfills() if b.backfill_id != cli_backfill]
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": ui_backfill.backfill_id}))
        # Locally a backfill run takes a group of neighbouring regions (the raster's backfill policy):
        # still exactly the missing ones, each once.
        assert sorted(p for r in runs for p in run_partitions(r.tags, ids)) == sorted(by_ui), (
            "exactly the missing regions"
        )
        assert all(r.is_success for r in runs)

        assert project.committed() == set(ids)
        assert instance.get_materialized_partitions(KEY) == set(ids)

        # Complete: the sensor requests the release, which tags the version and promotes main.
        def released() -> bool:
            runs = instance.get_runs(RunsFilter(tags={"risk/reason": "release"}))
            return bool(runs) and all(r.is_finished for r in runs)

        wait_for(released, 240, "the release run of the version")
        releases = instance.get_runs(RunsFilter(tags={"risk/reason": "release"}))
        assert len(releases) == 1 and releases[0].is_success
        repo = project.store.repository()
        tag = latest_release(repo)
        assert tag is not None
        assert repo.lookup_branch("main") == repo.lookup_tag(tag) == repo.lookup_branch(project.branch)
        verify = defs.resolve_job_def(VERIFY_JOB).execute_in_process(instance=instance)
        evaluations = {e.check_name: e for e in verify.get_asset_check_evaluations()}
        assert set(evaluations) == {"chunks_in_store", "records_match_commit_log"}
        assert all(e.passed for e in evaluations.values()), evaluations

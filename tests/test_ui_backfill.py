"""In a real headless browser: the Dagster UI's "backfill missing" runs exactly the regions absent from the log.

Debian's chromium driven by Playwright's Python package (Playwright cannot download its own
browser here). The project is partly built outside Dagster; the reconciliation sensor records
those commits, so the UI's "Missing" selection is exactly the regions with no commit.
"""

import re
from pathlib import Path

import _workers
import pytest
from _dagster_dev import dagster_dev, make_project, wait_for
from dagster import AssetKey, DagsterInstance, RunsFilter, materialize
from playwright.sync_api import sync_playwright

from risk_assets.assets import build_assets
from risk_assets.definitions import build_resources
from risk_assets.grid import RegionRegistry
from risk_assets.inputs import InputSet
from risk_assets.version import MODEL_CODE_VERSION

KEY = AssetKey("risk_raster")
CHROMIUM = "/usr/bin/chromium"
# The flags Chromium needs here: no sandbox as root, and no background calls to a network it cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.slow
def test_backfill_missing_from_the_ui(tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium is required: `make browser` installs it"
    project = make_project(tmp_path, demo_inputs)
    ids = demo_registry.ids
    committed, missing = ids[:60], ids[60:]
    with DagsterInstance.from_config(str(project.home)) as instance:
        prepared = materialize(
            build_assets(demo_registry),
            selection=["model_params", "raster_template"],
            resources=build_resources(project.settings),
            instance=instance,
        )
        assert prepared.success
    _workers.build_regions(
        project.store.path, demo_inputs.model_dump_json(), committed, code_version=MODEL_CODE_VERSION
    )

    with dagster_dev(project), DagsterInstance.from_config(str(project.home)) as instance:
        wait_for(lambda: set(committed) <= instance.get_materialized_partitions(KEY), 120, "the sensor's reports")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{project.url}/assets/risk_raster?view=partitions", wait_until="networkidle")
            # The first visit shows a "Join the Dagster community" pop-up.
            skip = page.get_by_role("button", name="Skip")
            skip.wait_for(timeout=15_000)
            skip.click()
            page.get_by_text(f"Missing ({len(missing)})").wait_for(timeout=30_000)
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("button", name="Missing", exact=True).click()
            page.screenshot(path=str(tmp_path / "backfill-dialog.png"))
            # the section header counts the selection ("3 partitions")
            selected = dialog.get_by_text(re.compile(r"^\d+ partitions?$"))
            selected.wait_for(timeout=15_000)
            assert selected.inner_text() == f"{len(missing)} partitions", dialog.inner_text()
            dialog.get_by_role("button", name="Launch backfill").click()
            page.get_by_text("Created backfill").or_(page.get_by_text("backfill", exact=False)).first.wait_for(
                timeout=30_000
            )
            browser.close()

        def backfill_done() -> bool:
            backfills = instance.get_backfills()
            return bool(backfills) and backfills[0].status.value.startswith("COMPLETED")

        wait_for(backfill_done, 300, "the backfill to finish")
        [backfill] = instance.get_backfills()
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(missing), "exactly the missing regions"
        assert all(r.is_success for r in runs)
        assert project.committed() == set(ids)
        assert instance.get_materialized_partitions(KEY) == set(ids)

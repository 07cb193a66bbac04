"""A parameter change reaches main by itself: the daemon's sensors, real runs, a real repository.

On the small ``mini`` grid: ``risk build`` builds and releases a first version (one build per test
session, copied: ``_dagster_dev.built_mini_project``); with `dagster
dev` running, a per-region override is written and observed on demand. The automation sensor
(running by default) rebuilds exactly that region on the new version's branch, the
reconciliation sensor requests the release once the version is complete, and the release moves
``main``. Until then, a reader of ``main`` sees the first version everywhere. The release's
overview map, and the rebuilt region's quicklook on its partition page, then render in the Dagster
UI (headless chromium).
"""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _dagster_dev import Project, built_mini_project, dagster_dev, markdown_image_in_the_ui, shared_folder, wait_for
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from resources.release import latest_release, read_manifest
from risk_assets.definitions import PREPARE_JOB, build_definitions
from risk_model.grid import load_registry
from risk_model.input_set import local_input_set


@pytest.fixture
def project(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The mini grid built and released by `risk build` (a copy of the session's one build)."""
    return built_mini_project(tmp_path, shared_folder(tmp_path_factory, "built-mini"))


def _main_risk(project: Project) -> np.ndarray:
    repo = project.store.repository()
    values: np.ndarray = xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False)["risk"].values
    return values


@pytest.mark.slow
def test_an_override_is_rebuilt_released_and_promoted_by_the_daemon(project: Project) -> None:
    registry = load_registry("mini")
    first = latest_release(project.store.repository())
    assert first is not None, "the built project is released"
    before = _main_risk(project)
    region = registry.get(registry.ids[5])

    with dagster_dev(project), DagsterInstance.from_config(str(project.home)) as instance:
        runs_before = {r.run_id for r in instance.get_runs()}
        project.settings.overrides_path.write_text(f"{region.id}:\n  blur_sigma_px: 4.5\n")
        # on demand, as the UI's "Materialize" of the prepare job would (the schedule does it every 10 min)
        defs = build_definitions(project.settings, inputs=local_input_set(project.settings.inputs_dir))
        assert defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance).success

        def released() -> bool:
            # while the new version is being built, main is the first release, entirely
            now = _main_risk(project)
            if latest_release(project.store.repository()) == first:
                np.testing.assert_array_equal(now, before)
                return False
            releases = [r for r in instance.get_runs() if r.tags.get("risk/reason") == "release"]
            return bool(releases) and all(r.is_finished for r in releases)

        wait_for(released, 400, "automation to rebuild the region and the sensor to release the version")

        new_runs = [r for r in instance.get_runs() if r.run_id not in runs_before]
        region_runs = [r for r in new_runs if r.tags.get("dagster/partition")]
        assert [r.tags["dagster/partition"] for r in region_runs] == [region.id], "only the overridden region"
        assert region_runs[0].tags.get("risk/kind") == "region"
        assert all(r.is_success for r in new_runs if r.is_finished)
        assert len([r for r in new_runs if r.tags.get("risk/reason") == "release"]) == 1
        src, size = markdown_image_in_the_ui(
            project.url, "/assets/raster_release", "overview", project.home / "release-overview.png"
        )
        assert src.startswith("data:image/png;base64,")
        assert size[0] > 400 and size[1] > 300, "the browser decoded the release's overview map"

        # The rebuilt region's quicklook renders on its partition page: a data URI the UI's
        # markdown sanitiser dropped, or a PNG the browser could not decode, would fail here.
        [record] = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("risk_raster"), asset_partitions=[region.id]), limit=1
        ).records
        assert record.run_id == region_runs[0].run_id, "the newest materialization is the daemon's rebuild"
        markdown = record.asset_materialization.metadata["quicklook"].value  # type: ignore[union-attr]
        assert isinstance(markdown, str)
        data_uri = markdown.split("](", 1)[1].split(")", 1)[0]
        assert data_uri.startswith("data:image/png;base64,")
        src, size = markdown_image_in_the_ui(
            project.url,
            f"/assets/risk_raster?view=partitions&partition={region.id}",
            "quicklook",
            project.home / "quicklook-dialog.png",
            first_visit=False,
        )
        assert src == data_uri, "the UI shows the very PNG the materialization recorded"
        width, height = region.cols.stop - region.cols.start, region.rows.stop - region.rows.start
        assert size == [width, height], "the browser decoded the region's PNG, one pixel per cell"

    repo = project.store.repository()
    second = latest_release(repo)
    assert second is not None and second != first
    assert repo.lookup_branch("main") == repo.lookup_tag(second)
    after = _main_risk(project)
    rows, cols = region.rows, region.cols
    changed = ~np.isclose(after, before, equal_nan=True)
    assert changed[rows, cols].any(), "the overridden region changed"
    outside = changed.copy()
    outside[rows, cols] = False
    assert not outside.any(), "no other region changed"
    old, new = read_manifest(project.store, first), read_manifest(project.store, second)
    assert new["previous_release"] == first
    assert {r for r in registry.ids if new["regions"][r]["snapshot_id"] != old["regions"][r]["snapshot_id"]} == {
        region.id
    }, "the other regions are carried over: the same commits as in the first release"
    assert new["params"]["overrides"]["regions"] == {region.id: {"blur_sigma_px": 4.5}}
    assert new["diff"] is not None and new["diff"]["share_changed"] > 0
    assert (project.store.releases_dir / second / "diff.png").exists()
    assert xr.open_zarr(repo.readonly_session(tag=first).store, consolidated=False)["risk"].shape == before.shape

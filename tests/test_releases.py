"""Versions on their own branches, atomic promotion, releases with lineage: real repositories.

Regions hold constant values per version here (1.0 for the first, 2.0 for the second...), so
a reader can tell at every pixel which version it sees; the model itself is tested elsewhere.
"""

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from _cli import risk_here
from _targets import inputs_resource, params_resource

from resources.branches import ensure_branch
from resources.completeness import IncompleteVersionError, version_status
from resources.ledger import committed_regions, iter_region_commits
from resources.lineage import lineage
from resources.local_store import LocalIcechunkStore
from resources.pyramid_store import list_levels, open_level, write_pyramid
from resources.region_write import write_region
from resources.release import PYRAMID_UPDATE_KEY, commit_pyramid, latest_release, read_manifest, release
from resources.template import ensure_template
from risk_assets.settings import Settings
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import Target

ROOT = Path(__file__).resolve().parents[1]


def _constant(registry: RegionRegistry, region_id: str, value: float) -> xr.Dataset:
    region = registry.get(region_id)
    data = {}
    for v in VARIABLES:
        fill = min(int(value), 10) if v.name == "score" else value
        data[v.name] = (DIMS, np.full(region.shape, fill, dtype=v.dtype))
    return xr.Dataset(data, coords=coordinates(registry.grid, region.rows, region.cols))


class World:
    """A project folder whose store, parameters and inputs a test can change."""

    def __init__(self, home: Path, registry: RegionRegistry, inputs: InputSet) -> None:
        self.home = home
        self.registry = registry
        self.inputs = inputs
        self.settings = Settings(
            home=home, grid="demo", params_path=home / "params.yaml", overrides_path=home / "overrides.yaml"
        )
        self.settings.params_path.write_text("blur_sigma_m: 120.0\n")
        self.settings.overrides_path.write_text("{}\n")
        self.store = LocalIcechunkStore(path=str(self.settings.store_path))
        ensure_template(self.store, registry.grid, {"code_version": "test"})

    def target(self) -> Target:
        from resources.target import current_target

        params = params_resource(str(self.settings.params_path), str(self.settings.overrides_path))
        return current_target(params, inputs_resource(self.inputs), self.registry.ids)

    def build(self, region_ids: list[str], value: float) -> Target:
        """Commit ``region_ids`` for the current target on its branch, as region runs do."""
        target = self.target()
        repo = self.store.repository()
        ensure_branch(repo, target.version.branch, "main")
        for region_id in region_ids:
            write_region(
                self.store,
                self.registry.grid,
                self.registry.get(region_id),
                _constant(self.registry, region_id, value),
                key=target.region_key(region_id),
                run_id=f"run-{value}-{region_id}",
                branch=target.version.branch,
            )
        return target

    def release(self, target: Target, when: datetime | None = None) -> str:
        commit_pyramid(self.store, self.registry, target, run_id="pyramid-run")
        made = release(
            self.store,
            self.registry,
            target,
            run_id="release-run",
            git_revision="abc123",
            inputs=self.inputs.model_dump(),
            now=when,
        )
        return made.tag

    def main_risk(self) -> np.ndarray:
        repo = self.store.repository()
        ds = xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False)
        values: np.ndarray = ds["risk"].values
        return values

    def region_values(self, values: np.ndarray) -> dict[str, set[float]]:
        """The distinct values of each region in a full raster."""
        return {r.id: set(np.unique(values[r.rows, r.cols]).tolist()) for r in self.registry}


@pytest.fixture
def world(tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet) -> World:
    return World(tmp_path, demo_registry, demo_inputs)


@pytest.mark.slow
def test_a_half_built_version_is_invisible_until_promoted(world: World) -> None:
    ids = world.registry.ids
    first = world.build(ids, 1.0)
    tag_a = world.release(first)
    assert all(v == {1.0} for v in world.region_values(world.main_risk()).values())

    # a global parameter change: a new version on its own branch
    world.settings.params_path.write_text("blur_sigma_m: 100.0\n")
    second = world.target()
    assert second.version.branch != first.version.branch
    half = ids[: len(ids) // 2]
    world.build(half, 2.0)
    # readers of main see the previous version, entirely
    assert all(v == {1.0} for v in world.region_values(world.main_risk()).values())
    with pytest.raises(IncompleteVersionError, match="regions not built"):
        commit_pyramid(world.store, world.registry, second, run_id="too-early")
    status = version_status(world.store, world.registry, second)
    assert sorted(status.not_built) == sorted(set(ids) - set(half))
    assert world.store.repository().lookup_branch("main") == world.store.repository().lookup_tag(tag_a)

    world.build(ids[len(ids) // 2 :], 2.0)
    tag_b = world.release(second)
    assert all(v == {2.0} for v in world.region_values(world.main_risk()).values()), "promoted entirely"
    repo = world.store.repository()
    # every region changed since tag_a's pyramid: written whole, not tile by tile
    assert _pyramid_update(world, tag_b) is None
    assert repo.lookup_branch("main") == repo.lookup_tag(tag_b)
    assert latest_release(repo) == tag_b

    # every region of the released snapshot carries the new parameters version in its commit metadata
    raw = {}
    for record in iter_region_commits(repo, snapshot_id=repo.lookup_tag(tag_b), use_ledger=False):
        raw.setdefault(record.region, record)
    assert set(raw) == set(ids)
    assert {r.params_version for r in raw.values()} == {second.version.params_version}
    assert {r.key for r in raw.values()} == {second.region_key(ids[0])}

    # the manifest and the lineage agree with the commit log
    manifest = read_manifest(world.store, tag_b)
    assert manifest["snapshot_id"] == repo.lookup_tag(tag_b)
    assert manifest["previous_release"] == tag_a
    assert {r: e["snapshot_id"] for r, e in manifest["regions"].items()} == {r: c.snapshot_id for r, c in raw.items()}
    assert {r: e["run_id"] for r, e in manifest["regions"].items()} == {r: c.run_id for r, c in raw.items()}
    assert manifest["params"]["content"]["blur_sigma_m"] == 100.0
    assert manifest["code"] == {"code_version": second.code_version, "git_revision": "abc123"}
    assert {n: e["version"] for n, e in manifest["inputs"].items()} == second.input_versions
    assert all(check["passed"] for check in manifest["checks"].values())
    info = lineage(world.store, world.registry, tag_b)
    assert {r: e["snapshot_id"] for r, e in info["regions"].items()} == {r: c.snapshot_id for r, c in raw.items()}

    # the earlier release still reads as it was, and keeps its own lineage
    old = xr.open_zarr(repo.readonly_session(tag=tag_a).store, consolidated=False)
    assert set(np.unique(old["risk"].values[~np.isnan(old["risk"].values)]).tolist()) == {1.0}
    assert {r.params_version for r in committed_regions(repo, snapshot_id=repo.lookup_tag(tag_a)).values()} == {
        first.version.params_version
    }
    # the diff against the previous release is in the manifest: every pixel rose by 1
    assert manifest["diff"]["mean_change"] == pytest.approx(1.0)


@pytest.mark.slow
def test_a_region_override_rebuilds_only_that_region(world: World) -> None:
    ids = world.registry.ids
    world.release(world.build(ids, 1.0))
    region = ids[3]
    world.settings.overrides_path.write_text(f"{region}:\n  blur_sigma_m: 150.0\n")
    target = world.target()
    status = version_status(world.store, world.registry, target)
    assert status.not_built == [region], "the new version's branch starts from main: only the override is stale"
    world.build([region], 3.0)
    tag = world.release(target)
    values = world.region_values(world.main_risk())
    assert values[region] == {3.0}
    assert all(v == {1.0} for r, v in values.items() if r != region)
    manifest = read_manifest(world.store, tag)
    assert manifest["regions"][region]["params_version"] != manifest["regions"][ids[0]]["params_version"]
    point = lineage(world.store, world.registry, tag, point=_centre(world.registry, region))
    assert point["region"]["id"] == region
    assert point["region"]["override"] == {"blur_sigma_m": 150.0}
    assert point["region"]["params"]["blur_sigma_m"] == 150.0
    assert point["region"]["snapshot_id"] == manifest["regions"][region]["snapshot_id"]


def _pyramid_update(world: World, tag: str) -> dict[str, Any] | None:
    """How the pyramid of release ``tag`` was made (its commit's metadata): ``None`` written whole."""
    repo = world.store.repository()
    meta = repo.lookup_snapshot(repo.lookup_tag(tag)).metadata or {}
    assert PYRAMID_UPDATE_KEY in meta
    update: dict[str, Any] | None = meta[PYRAMID_UPDATE_KEY]
    return update


def _assert_pyramid_as_if_written_whole(world: World, tag: str) -> None:
    """The pyramid of release ``tag`` is bit for bit the one written from scratch from its raster."""
    repo = world.store.repository()
    snapshot_id = repo.lookup_tag(tag)
    scratch_branch = f"scratch-{snapshot_id[:8]}"
    repo.create_branch(scratch_branch, snapshot_id)
    scratch = repo.writable_session(scratch_branch)
    assert write_pyramid(scratch, world.registry.grid)
    released = repo.readonly_session(snapshot_id=snapshot_id)
    for level in list_levels(released):
        got, expected = open_level(released, level.factor).load(), open_level(scratch, level.factor).load()
        xr.testing.assert_identical(got, expected)
        for name in got.data_vars:
            assert np.array_equal(got[name].values, expected[name].values, equal_nan=True)


def _lose_newest_regions(world: World, branch: str, n: int) -> list[str]:
    """Reset ``branch`` to before its newest ``n`` region commits (a lost commit, a rolled-back branch)."""
    repo = world.store.repository()
    lost: list[str] = []
    for record in iter_region_commits(repo, branch, use_ledger=False):
        if len(lost) == n:
            repo.reset_branch(branch, record.snapshot_id)
            return lost
        lost.append(record.region)
    raise AssertionError(f"fewer than {n + 1} region commits on {branch}")


@pytest.mark.slow
def test_a_repaired_version_rewrites_only_the_pyramid_tiles_of_the_repaired_regions(world: World) -> None:
    ids = world.registry.ids
    target = world.build(ids, 1.0)
    first = world.release(target)
    assert _pyramid_update(world, first) is None, "a full build writes the whole pyramid"
    _assert_pyramid_as_if_written_whole(world, first)

    # The branch loses its newest regions and the pyramid commit after them; they are built again
    # (with other values, so that a tile left as it was would show).
    lost = _lose_newest_regions(world, target.version.branch, 4)
    world.build(lost, 2.0)
    repaired = world.release(target)
    update = _pyramid_update(world, repaired)
    assert update is not None
    assert update["base"] == world.store.repository().lookup_tag(first)
    assert update["copied"], "the branch no longer holds the old pyramid: its levels are copied from the release"
    assert sorted(update["regions"]) == sorted(lost)
    _assert_pyramid_as_if_written_whole(world, repaired)
    assert all(v == ({2.0} if r in lost else {1.0}) for r, v in world.region_values(world.main_risk()).items())

    # A new version changing one region starts from main, which holds the pyramid: updated in place.
    region = ids[5]
    world.settings.overrides_path.write_text(f"{region}:\n  blur_sigma_m: 150.0\n")
    changed = world.build([region], 3.0)
    third = world.release(changed)
    update = _pyramid_update(world, third)
    assert update is not None and not update["copied"] and update["regions"] == [region]
    assert update["base"] == world.store.repository().lookup_tag(repaired)
    _assert_pyramid_as_if_written_whole(world, third)


def _centre(registry: RegionRegistry, region_id: str) -> tuple[float, float]:
    west, south, east, north = registry.get(region_id).bounds
    return (west + east) / 2, (south + north) / 2


def test_release_names_are_never_reused_and_rerunning_a_release_is_a_noop(world: World) -> None:
    target = world.build(world.registry.ids, 1.0)
    when = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    tag = world.release(target, when)
    assert tag.startswith("release-20261125T120000Z-")
    again = world.release(target, datetime(2026, 11, 26, tzinfo=UTC))
    assert again == tag, "the snapshot keeps its tag"
    repo = world.store.repository()
    repo.delete_tag(tag)  # e.g. withdrawn by hand; Icechunk never allows the name again
    renewed = world.release(target, datetime(2026, 11, 27, tzinfo=UTC))
    assert renewed != tag and renewed.startswith("release-20261127T")


@pytest.mark.slow  # the CLI in a subprocess, twice
def test_lineage_command_prints_the_release_and_a_point(world: World) -> None:
    ids = world.registry.ids
    tag = world.release(world.build(ids, 1.0))
    extra = {
        "RISK_HOME": str(world.home),
        "DAGSTER_HOME": str(world.home),
        "RISK_PARAMS": str(world.settings.params_path),
        "RISK_OVERRIDES": str(world.settings.overrides_path),
        "RISK_INPUTS": world.inputs.model_dump_json(),
    }
    (world.home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())

    def risk(*args: str) -> subprocess.CompletedProcess[str]:
        """The command in this process (tests/_cli.py): it launches no run."""
        return risk_here(["--home", str(world.home), "lineage", *args], extra)

    # Once as a user runs it, in a process of its own.
    whole = subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(world.home), "lineage", "--json"],
        env=os.environ | extra,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert whole.returncode == 0, whole.stderr
    info = json.loads(whole.stdout)
    manifest = read_manifest(world.store, tag)
    assert info["tag"] == tag
    assert {r: e["snapshot_id"] for r, e in info["regions"].items()} == {
        r: e["snapshot_id"] for r, e in manifest["regions"].items()
    }
    lon, lat = _centre(world.registry, ids[10])
    point = risk(tag, "--lon", str(lon), "--lat", str(lat))
    assert point.returncode == 0, point.stderr
    assert f"region {ids[10]}" in point.stdout and manifest["regions"][ids[10]]["snapshot_id"] in point.stdout
    # maintenance from the command line keeps what lineage reads
    # (in a process of its own: `maintain` runs a job of the code location, which reads the
    # project from the environment when it is imported)
    maintained = subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(world.home), "maintain", "--days", "0"],
        env=os.environ | extra,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert maintained.returncode == 0, maintained.stderr
    assert "snapshots expired" in maintained.stdout
    after = risk("--json")
    assert json.loads(after.stdout)["regions"] == info["regions"]
    outside = risk("--lon", "0", "--lat", "0")
    assert outside.returncode == 1 and "outside grid" in outside.stderr
    unknown = risk("release-nope")
    assert unknown.returncode == 1 and "no release 'release-nope'" in unknown.stderr


@pytest.mark.slow
def test_maintenance_after_releases_keeps_ledger_lineage_and_data(world: World) -> None:
    from resources.maintenance import maintain

    ids = world.registry.ids
    tag_a = world.release(world.build(ids, 1.0))
    world.settings.params_path.write_text("blur_sigma_m: 100.0\n")
    second = world.build(ids, 2.0)
    tag_b = world.release(second)
    repo = world.store.repository()
    before = {tag: lineage(world.store, world.registry, tag)["regions"] for tag in (tag_a, tag_b)}
    main_before = committed_regions(repo, "main")
    risk_before = world.main_risk()

    report = maintain(world.store, expire_older_than=datetime.now(UTC), gc_margin=timedelta(0))
    assert report.snapshots_expired > 0

    assert {tag: lineage(world.store, world.registry, tag)["regions"] for tag in (tag_a, tag_b)} == before
    assert {r: c.key for r, c in committed_regions(world.store.repository(), "main").items()} == {
        r: c.key for r, c in main_before.items()
    }
    np.testing.assert_array_equal(world.main_risk(), risk_before)
    old = xr.open_zarr(world.store.repository().readonly_session(tag=tag_a).store, consolidated=False)
    assert set(np.unique(old["risk"].values[~np.isnan(old["risk"].values)]).tolist()) == {1.0}
    # the ledger still makes a rebuild a no-op: nothing is written again
    results = [
        write_region(
            world.store,
            world.registry.grid,
            world.registry.get(r),
            _constant(world.registry, r, 2.0),
            key=second.region_key(r),
            run_id="again",
            branch=second.version.branch,
        ).status
        for r in ids[:5]
    ]
    assert results == ["skipped"] * 5


def test_a_failed_check_refuses_the_release_and_maps_the_failing_regions(world: World) -> None:
    from PIL import Image

    from risk_model.pictures import FAILED_COLOUR, render_overview

    ids = world.registry.ids
    target = world.build(ids, 1.0)
    commit_pyramid(world.store, world.registry, target, run_id="pyramid-run")
    main_before = world.store.repository().lookup_branch("main")
    failing = [ids[0], ids[-1]]
    with pytest.raises(IncompleteVersionError, match="records_match_commit_log") as raised:
        release(
            world.store,
            world.registry,
            target,
            run_id="release-run",
            git_revision="abc123",
            inputs=world.inputs.model_dump(),
            extra_checks={"records_match_commit_log": {"passed": False, "regions_failing": failing}},
        )
    repo = world.store.repository()
    assert repo.lookup_branch("main") == main_before and latest_release(repo) is None, "nothing tagged or moved"
    assert raised.value.overview is not None
    # the same layout as the picture in the error: the failing regions' outlines are in the failure colour
    from resources.pyramid_store import coarsest_level  # the level the release drew

    coarsest, level = coarsest_level(repo.readonly_session(branch=target.version.branch))
    layout = render_overview(level, world.registry, coarsest.factor, missing=[], failed=failing, title="x")
    image = np.asarray(Image.open(io.BytesIO(raised.value.overview)).convert("RGB"))
    want = tuple(int(FAILED_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    for region_id in failing:
        west, south, _, north = world.registry.get(region_id).bounds
        col, row = layout.pixel_of(west, (south + north) / 2)  # on the region's western edge
        patch = image[int(row) - 3 : int(row) + 4, int(col) - 3 : int(col) + 4].reshape(-1, 3)
        assert any(tuple(p) == want for p in patch), region_id

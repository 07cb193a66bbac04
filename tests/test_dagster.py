"""The assets and the IO manager through real Dagster runs on real Icechunk repositories."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from dagster import AssetKey, DagsterEventType, DagsterInstance, materialize
from icechunk.xarray import to_icechunk

from resources.ledger import iter_region_commits
from resources.local_store import LocalIcechunkStore
from resources.target import current_target
from resources.template import ensure_template
from risk_assets.assets import build_assets
from risk_assets.build_plan import inputs_checked_on_branch
from risk_assets.definitions import build_resources, defs
from risk_assets.runs import failure_reasons
from risk_assets.settings import Settings
from risk_model.grid import RegionRegistry
from risk_model.input_checks import VALUE_RANGES
from risk_model.input_set import InputSet


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as inst:
        yield inst


def _run(
    tmp_path: Path,
    registry: RegionRegistry,
    inputs: InputSet,
    instance: DagsterInstance,
    partition: str | None,
    params_path: Path | None = None,
    store: LocalIcechunkStore | None = None,
) -> Any:
    settings = Settings(home=tmp_path, grid="demo", **({"params_path": params_path} if params_path else {}))
    resources = build_resources(settings, store=store, inputs=inputs)
    assets = build_assets(registry)
    selection = ["risk_raster"] if partition else ["model_params", "raster_template"]
    return materialize(
        assets,
        selection=selection,
        partition_key=partition,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def _failure_message(result: Any) -> str:
    return "\n".join(failure_reasons(result.all_events))


def _commits(tmp_path: Path) -> list[str]:
    """Regions of every region commit on any branch (each version builds on its own branch)."""
    repo = LocalIcechunkStore(path=str(Settings(home=tmp_path).store_path)).repository()
    seen: dict[str, str] = {}
    for branch in sorted(repo.list_branches()):
        for record in iter_region_commits(repo, branch):
            seen[record.snapshot_id] = record.region
    return sorted(seen.values())


def test_definitions_load() -> None:
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} >= {
        "model_params",
        "raster_template",
        "risk_raster",
    }
    defs.resolve_job_def("build_region")


def test_one_region_in_process_then_rerun_is_a_noop(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet, instance: DagsterInstance
) -> None:
    assert _run(tmp_path, demo_registry, demo_inputs, instance, None).success
    region_id = demo_registry.ids[5]
    first = _run(tmp_path, demo_registry, demo_inputs, instance, region_id)
    assert first.success, _failure_message(first)
    [event] = first.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["status"].value == "written"
    snapshot = meta["snapshot_id"].value
    assert isinstance(snapshot, str) and len(snapshot) == 20
    repo = LocalIcechunkStore(path=str(Settings(home=tmp_path).store_path)).repository()
    [record] = iter_region_commits(repo, str(meta["branch"].value))
    assert (record.region, record.snapshot_id, record.run_id) == (region_id, snapshot, first.run_id)
    assert str(meta["branch"].value).startswith("build-")
    assert list(iter_region_commits(repo, "main")) == [], "regions never commit to main: only a release moves it"

    again = _run(tmp_path, demo_registry, demo_inputs, instance, region_id)
    assert again.success
    [event] = again.get_asset_materialization_events()
    assert event.materialization.metadata["status"].value == "skipped"
    assert event.materialization.metadata["snapshot_id"].value == snapshot
    assert _commits(tmp_path) == [region_id], "a rerun makes no commit"
    assert instance.get_materialized_partitions(AssetKey("risk_raster")) == {region_id}


def test_a_group_of_regions_in_one_run_commits_and_records_each_region(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet, instance: DagsterInstance
) -> None:
    """A run of a partition range (a local backfill group, a `risk build` group): one commit per region,
    and each partition's materialization carries its own region's snapshot, not the group's."""
    assert _run(tmp_path, demo_registry, demo_inputs, instance, None).success
    group = demo_registry.ids[4:7]
    assert _run(tmp_path, demo_registry, demo_inputs, instance, group[1]).success  # one of them built already
    settings = Settings(home=tmp_path, grid="demo")
    result = materialize(
        build_assets(demo_registry, regions_per_run=3),
        selection=["risk_raster"],
        resources=build_resources(settings, inputs=demo_inputs),
        instance=instance,
        tags={"dagster/asset_partition_range_start": group[0], "dagster/asset_partition_range_end": group[-1]},
        raise_on_error=False,
    )
    assert result.success, _failure_message(result)
    events = {
        e.materialization.partition: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert sorted(events) == sorted(group)
    assert {p: m["status"].value for p, m in events.items()} == {
        group[0]: "written",
        group[1]: "skipped",
        group[2]: "written",
    }
    repo = LocalIcechunkStore(path=str(Settings(home=tmp_path).store_path)).repository()
    branch = str(events[group[0]]["branch"].value)
    newest = {r.region: r.snapshot_id for r in iter_region_commits(repo, branch)}
    assert {p: m["snapshot_id"].value for p, m in events.items()} == {r: newest[r] for r in group}
    assert len(set(newest.values())) == 3, "each region its own commit"
    assert _commits(tmp_path) == sorted(group), "one commit per region, none for the region built before"
    assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(group)


def test_params_change_rewrites_the_region(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet, instance: DagsterInstance
) -> None:
    region_id = demo_registry.ids[7]
    assert _run(tmp_path, demo_registry, demo_inputs, instance, None).success
    assert _run(tmp_path, demo_registry, demo_inputs, instance, region_id).success
    changed = tmp_path / "params.yaml"
    changed.write_text("blur_sigma_m: 90.0\n")
    result = _run(tmp_path, demo_registry, demo_inputs, instance, region_id, params_path=changed)
    assert result.success, _failure_message(result)
    assert _commits(tmp_path) == [region_id, region_id]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("kernel_semi_major_m: -4\n", "kernel_semi_major_m"),
        ("spread_iterations: [oops\n", "YAML"),
        ("no_such_parameter: 1\n", "no_such_parameter"),
    ],
)
def test_bad_parameters_fail_clearly_and_commit_nothing(
    tmp_path: Path,
    demo_registry: RegionRegistry,
    demo_inputs: InputSet,
    instance: DagsterInstance,
    yaml_text: str,
    expected: str,
) -> None:
    assert _run(tmp_path, demo_registry, demo_inputs, instance, None).success
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    result = _run(tmp_path, demo_registry, demo_inputs, instance, demo_registry.ids[0], params_path=bad)
    assert not result.success
    message = _failure_message(result)
    assert expected in message and "bad.yaml" in message
    assert not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY], (
        "only commit conflicts are retried"
    )
    assert _commits(tmp_path) == []


def _write_wrong_crs_copy(source: str, target: Path) -> str:
    with rasterio.open(source) as src:
        profile = src.profile | {"crs": "EPSG:3857"}
        data = src.read()
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
    return str(target)


def test_bad_inputs_fail_clearly_and_commit_nothing(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet, instance: DagsterInstance
) -> None:
    assert _run(tmp_path, demo_registry, demo_inputs, instance, None).success
    region_id = demo_registry.ids[0]
    wrong_crs = demo_inputs.model_copy(
        update={"conditional_risk": _write_wrong_crs_copy(demo_inputs.conditional_risk, tmp_path / "crps.tif")}
    )
    result = _run(tmp_path, demo_registry, wrong_crs, instance, region_id)
    assert not result.success
    assert "crps.tif" in _failure_message(result)
    missing = demo_inputs.model_copy(update={"burn_probability": str(tmp_path / "nowhere.tif")})
    result = _run(tmp_path, demo_registry, missing, instance, region_id)
    assert not result.success
    assert "nowhere.tif" in _failure_message(result)
    assert _commits(tmp_path) == []


def test_inputs_a_region_was_committed_from_are_not_checked_again(
    tmp_path: Path,
    demo_registry: RegionRegistry,
    demo_inputs: InputSet,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A region run (and `risk build`'s preflight) skips the inputs check when a region of the version was
    committed from inputs with the same checksums; inputs with other bytes are checked."""
    assert _run(tmp_path, demo_registry, demo_inputs, instance, None).success
    resources = build_resources(Settings(home=tmp_path, grid="demo"), inputs=demo_inputs)
    target = current_target(resources["params"], resources["inputs"], demo_registry.ids)
    assert not inputs_checked_on_branch(resources["store"], target), "no region committed yet"
    assert _run(tmp_path, demo_registry, demo_inputs, instance, demo_registry.ids[0]).success
    assert inputs_checked_on_branch(resources["store"], target)

    # From here on the check refuses every burn probability: a run that checks fails.
    monkeypatch.setitem(VALUE_RANGES, "burn_probability", (2.0, 3.0, "an impossible range"))
    second = _run(tmp_path, demo_registry, demo_inputs, instance, demo_registry.ids[1])
    assert second.success, _failure_message(second)
    assert second.get_asset_materialization_events()[0].materialization.metadata["status"].value == "written"

    # The same raster with other bytes (one more tag): another inputs version, checked, refused.
    changed = tmp_path / "bp-tagged.tif"
    changed.write_bytes(Path(demo_inputs.burn_probability).read_bytes())
    with rasterio.open(changed, "r+") as dst:
        dst.update_tags(note="other bytes, same values")
    other = demo_inputs.model_copy(update={"burn_probability": str(changed)})
    refused = _run(tmp_path, demo_registry, other, instance, demo_registry.ids[2])
    assert not refused.success
    assert "outside 2 to 3" in _failure_message(refused)


def test_unknown_region_is_refused(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet, instance: DagsterInstance
) -> None:
    from dagster import DagsterInvalidInvocationError
    from dagster._core.errors import DagsterError

    with pytest.raises((DagsterInvalidInvocationError, DagsterError), match="y99_x99"):
        _run(tmp_path, demo_registry, demo_inputs, instance, "y99_x99")


class _AlwaysLosesRace(LocalIcechunkStore):
    """A local store where, just before each commit, another writer commits the same region.

    A real competing Icechunk commit, so the writer's rebase really fails.
    """

    @contextmanager
    def commit_guard(self) -> Iterator[None]:
        repo = self.repository()
        # the version's branch, where the region commits
        session = repo.writable_session(next(b for b in repo.list_branches() if b.startswith("build-")))
        stored = xr.open_zarr(session.store, consolidated=False)
        rival = stored.isel(latitude=slice(0, 256), longitude=slice(256, 512)).load()
        rival = rival.drop_attrs(deep=True)
        for name in rival.data_vars:
            rival[name] = rival[name].copy(data=np.zeros_like(rival[name].values))
        to_icechunk(rival, session, region="auto")
        session.commit("rival", metadata={"kind": "rival"})
        yield


@pytest.mark.slow
def test_commit_conflicts_are_retried_and_only_they(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet, instance: DagsterInstance
) -> None:
    region_id = "y0_x1"
    assert region_id in demo_registry
    path = str(Settings(home=tmp_path).store_path)
    ensure_template(LocalIcechunkStore(path=path), demo_registry.grid, {"code_version": "x"})
    store = _AlwaysLosesRace(path=path, rebase_tries=2)
    result = _run(tmp_path, demo_registry, demo_inputs, instance, region_id, store=store)
    assert not result.success
    retries = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 3, "retried exactly conflict_retries times"
    warnings = [
        str(e.message) for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE
    ] + failure_reasons(result.all_events)
    assert warnings, "the step finally failed"
    assert _commits(tmp_path) == []

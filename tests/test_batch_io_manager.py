"""The IO manager through batch commits (``commit_protocol="batch"``), in real Dagster runs on a real repository.

Each partition's materialization records the snapshot that committed its region; the ledger and the
reconciliation sensor's reader see one commit per region, with the run that wrote it.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from resources.ledger import committed_regions
from resources.local_store import LocalIcechunkStore
from risk_assets.assets import build_assets
from risk_assets.definitions import build_resources
from risk_assets.reconcile import ReconcileState, update_commits
from risk_assets.runs import failure_reasons
from risk_assets.settings import Settings
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.mark.slow
def test_a_run_of_several_partitions_commits_each_region_through_batches(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet, instance: DagsterInstance
) -> None:
    settings = Settings(home=tmp_path, grid="demo")
    store = LocalIcechunkStore(path=str(settings.store_path), commit_protocol="batch")
    resources = build_resources(settings, store=store, inputs=demo_inputs)
    prepared = materialize(
        build_assets(demo_registry),
        selection=["model_params", "raster_template"],
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert prepared.success, "\n".join(failure_reasons(prepared.all_events))
    group = demo_registry.ids[4:8]

    def run_group() -> dict[str, dict[str, object]]:
        result = materialize(
            build_assets(demo_registry, regions_per_run=len(group)),
            selection=["risk_raster"],
            resources=resources,
            instance=instance,
            tags={"dagster/asset_partition_range_start": group[0], "dagster/asset_partition_range_end": group[-1]},
            raise_on_error=False,
        )
        assert result.success, "\n".join(failure_reasons(result.all_events))
        return {
            str(e.materialization.partition): {k: v.value for k, v in e.materialization.metadata.items()}
            | {"run": result.run_id}
            for e in result.get_asset_materialization_events()
        }

    first = run_group()
    assert sorted(first) == sorted(group)
    assert {p: m["status"] for p, m in first.items()} == dict.fromkeys(group, "written")
    branch = str(first[group[0]]["branch"])
    repo = store.repository()
    ledger = committed_regions(repo, branch)
    assert sorted(ledger) == sorted(group)
    for region_id in group:
        record = ledger[region_id]
        assert record.snapshot_id == first[region_id]["snapshot_id"], "the materialization records its commit"
        assert record.metadata.get("batch") is True, "committed by a batch commit"
        assert record.run_id == first[region_id]["run"]
    assert store.list_lease_objects() == [], "no pending fork left behind"

    state = ReconcileState()
    update_commits(state, repo, branch)
    assert sorted(state.commits) == sorted(group), "reconciliation reads one commit per region"
    assert {r: (state.commits[r].snapshot_id, state.commits[r].run_id) for r in group} == {
        r: (first[r]["snapshot_id"], first[r]["run"]) for r in group
    }

    again = run_group()
    assert {p: m["status"] for p, m in again.items()} == dict.fromkeys(group, "skipped")
    assert {p: m["snapshot_id"] for p, m in again.items()} == {p: m["snapshot_id"] for p, m in first.items()}
    assert committed_regions(store.repository(), branch) == ledger, "a rerun commits nothing"
    assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(group)

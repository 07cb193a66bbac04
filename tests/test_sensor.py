"""The reconciliation sensor: a table of cursor scenarios on a real instance and real commits.

Calling a sensor directly only returns its result; :func:`_tick` then stores the events
the way the daemon does (``report_runless_asset_event``) and keeps the cursor, so the next
tick sees what the daemon would have stored.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import icechunk
import numpy as np
import pytest
import xarray as xr
from _targets import inputs_resource, params_resource
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    SensorResult,
    asset,
    build_sensor_context,
    define_asset_job,
)

from resources.branches import ensure_branch
from resources.local_store import LocalIcechunkStore
from resources.region_write import write_region
from risk_assets.reconcile import CommitEntry, ReconcileState, RecordEntry, reconcile
from risk_assets.sensors import build_reconciliation_sensor
from risk_assets.sources import region_partitions
from risk_assets.status import REGION_CHECK
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey, Target

KEY = AssetKey("risk_raster")


@dataclass
class Env:
    """One scenario's world: a repository, an instance, the sensor and its cursor."""

    store: LocalIcechunkStore
    registry: RegionRegistry
    instance: DagsterInstance
    inputs: InputSet
    target: Target
    cursor: str | None = None
    run_keys: list[str] = field(default_factory=list)

    @property
    def branch(self) -> str:
        """The current version's branch, where regions are committed."""
        return self.target.version.branch

    def commit(
        self,
        region_id: str,
        params: str | None = None,
        run_id: str = "outside-dagster",
        store: LocalIcechunkStore | None = None,
    ) -> str:
        key = self.target.region_key(region_id)
        if params is not None:
            key = BuildKey(params, key.inputs_version, key.code_version)
        region = self.registry.get(region_id)
        ds = xr.Dataset(
            {v.name: (DIMS, np.ones(region.shape, dtype=v.dtype)) for v in VARIABLES},
            coords=coordinates(self.registry.grid, region.rows, region.cols),
        )
        result = write_region(
            store or self.store,
            self.registry.grid,
            region,
            ds,
            key=key,
            run_id=run_id,
            branch=self.branch,
        )
        return result.snapshot_id

    def record(self, region_id: str, snapshot_id: str) -> None:
        """A materialization recorded by Dagster (as a run would record it)."""
        self.instance.report_runless_asset_event(
            AssetMaterialization(
                KEY,
                partition=region_id,
                metadata={"snapshot_id": snapshot_id, "params_version": self.target.region_key(region_id)[0]},
            )
        )

    def tip(self) -> str:
        return self.store.repository().lookup_branch(self.branch)


def _tick(env: Env, stale_grace_s: float = 600.0) -> SensorResult:
    job = define_asset_job("build_region", selection=[KEY], partitions_def=region_partitions(env.registry))
    release = define_asset_job("release_raster", selection=["raster_release"])
    sensor = build_reconciliation_sensor(env.registry, job, release, stale_grace_s=stale_grace_s)
    context = build_sensor_context(
        instance=env.instance,
        cursor=env.cursor,
        resources={"store": env.store, "params": params_resource(), "inputs": inputs_resource(env.inputs)},
    )
    result = sensor(context)
    assert isinstance(result, SensorResult)
    for event in result.asset_events:
        env.instance.report_runless_asset_event(event)
    env.cursor = result.cursor
    for request in result.run_requests or []:
        assert request.run_key is not None
        # the daemon launches a run key once per sensor
        if request.run_key not in env.run_keys:
            env.run_keys.append(request.run_key)
    return result


def _stand_in_raster(registry: RegionRegistry) -> AssetsDefinition:
    """An asset with the raster's key and partitions, so run records of its job can be made."""

    @asset(name="risk_raster", partitions_def=region_partitions(registry))
    def risk_raster() -> None:
        raise AssertionError("never executed: only run records of its job are made")

    return risk_raster


def _reported(result: SensorResult) -> list[str]:
    return sorted(e.partition for e in result.asset_events if isinstance(e, AssetMaterialization))


def _checks(result: SensorResult) -> list[tuple[str, bool]]:
    return sorted(
        (",".join(e.metadata["regions"].value), e.passed)  # type: ignore[arg-type]
        for e in result.asset_events
        if isinstance(e, AssetCheckEvaluation) and e.check_name == REGION_CHECK
    )


def _requested(result: SensorResult) -> list[tuple[str, str]]:
    return sorted((str(r.partition_key), str(r.tags.get("risk/reason"))) for r in result.run_requests or [])


@pytest.fixture
def env(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry, demo_inputs: InputSet, demo_target: Target
) -> Iterator[Env]:
    ensure_branch(demo_store.repository(), demo_target.version.branch, "main")
    with DagsterInstance.ephemeral() as instance:
        yield Env(demo_store, demo_registry, instance, demo_inputs, demo_target)


# --- the scenarios -------------------------------------------------------------------------


def first_tick_on_an_empty_log(env: Env) -> None:
    result = _tick(env)
    assert (_reported(result), _requested(result), _checks(result)) == ([], [], [])
    assert ReconcileState.decode(env.cursor).tip == env.tip()


def commits_made_outside_dagster_are_reported(env: Env) -> None:
    a, b = env.registry.ids[:2]
    snapshots = {a: env.commit(a), b: env.commit(b)}
    result = _tick(env)
    assert _reported(result) == [a, b]
    meta = {e.partition: e.metadata for e in result.asset_events if isinstance(e, AssetMaterialization)}
    assert meta[a]["snapshot_id"].value == snapshots[a]
    assert meta[a]["commit_run_id"].value == "outside-dagster"
    assert env.instance.get_materialized_partitions(KEY) == {a, b}


def nothing_new_reads_nothing_and_does_nothing(env: Env) -> None:
    a = env.registry.ids[0]
    env.record(a, env.commit(a))
    _tick(env)
    state_before = ReconcileState.decode(env.cursor)
    result = _tick(env)
    assert (_reported(result), _requested(result), _checks(result)) == ([], [], [])
    assert ReconcileState.decode(env.cursor).tip == state_before.tip


def recorded_by_dagster_but_lost_from_the_store(env: Env) -> None:
    a, b = env.registry.ids[:2]
    env.record(a, env.commit(a))
    before_b = env.tip()
    env.record(b, env.commit(b))
    _tick(env)
    # the store loses b: the branch is reset to before its commit
    env.store.repository().reset_branch(env.branch, before_b)
    result = _tick(env)
    assert _requested(result) == [(b, "repair")]
    assert _checks(result) == [(b, False)]
    assert [e.check_name for e in result.asset_events if isinstance(e, AssetCheckEvaluation)] == [REGION_CHECK]
    again = _tick(env)
    assert again.run_requests and again.run_requests[0].run_key == result.run_requests[0].run_key, (
        "the same repair request keeps its run key, so the daemon launches it once"
    )
    # the repair run commits b again: the check passes and Dagster records the new commit
    snapshot = env.commit(b, run_id="repair-run")
    healed = _tick(env)
    assert _checks(healed) == [("", True)]
    assert _reported(healed) == [b]
    assert [e.metadata["snapshot_id"].value for e in healed.asset_events if isinstance(e, AssetMaterialization)] == [
        snapshot
    ]
    assert len(env.run_keys) == 1


def stale_regions_are_left_to_automation_until_overdue(env: Env) -> None:
    a, b = env.registry.ids[:2]
    env.record(a, env.commit(a, params="older0000000"))
    env.record(b, env.commit(b))
    result = _tick(env)
    # automation requests each change exactly once; the sensor requesting it too would build it twice
    assert _requested(result) == []
    assert _reported(result) == []
    assert set(ReconcileState.decode(env.cursor).stale_since) == {a}
    # overdue, but a run of the region is in flight: still not requested
    job = define_asset_job("build_region", selection=[KEY], partitions_def=region_partitions(env.registry))
    defs = Definitions(assets=[_stand_in_raster(env.registry)], jobs=[job])
    in_flight = env.instance.create_run_for_job(
        defs.resolve_job_def("build_region"), status=DagsterRunStatus.STARTED, tags={"dagster/partition": a}
    )
    assert _requested(_tick(env, stale_grace_s=0)) == []
    env.instance.report_run_failed(in_flight)  # the run ended without building it (an update swallowed)
    overdue = _tick(env, stale_grace_s=0)
    assert _requested(overdue) == [(a, "stale")]
    assert _requested(_tick(env, stale_grace_s=0)) == [(a, "stale")]
    assert len(env.run_keys) == 1, "one request per stale commit and key"


def a_complete_version_is_released_once(env: Env) -> None:
    *most, last = env.registry.ids
    for region in most:
        env.commit(region)
    assert not [r for r in _requested(_tick(env)) if r[1] == "release"], "incomplete: nothing to release"
    env.commit(last)
    result = _tick(env)
    assert _requested(result) == [("None", "release")]
    again = _tick(env)
    assert again.run_requests and again.run_requests[0].run_key == result.run_requests[0].run_key  # type: ignore[index]
    assert len(env.run_keys) == 1, "the daemon launches one release per complete build"
    # once the version is released (tagged, main moved to it), nothing more is requested
    repo = env.store.repository()
    repo.create_tag(f"release-20261125T000000Z-{env.target.version.id}", env.tip())
    repo.reset_branch("main", env.tip())
    assert _requested(_tick(env)) == []


def commits_arriving_between_ticks_are_read_once(env: Env) -> None:
    a, b, c = env.registry.ids[:3]
    env.commit(a)
    assert _reported(_tick(env)) == [a]
    env.commit(b)
    env.commit(c)
    state_before = ReconcileState.decode(env.cursor)
    result = _tick(env)
    assert _reported(result) == [b, c]
    assert state_before.tip != ReconcileState.decode(env.cursor).tip


def a_branch_reset_rebuilds_from_the_whole_history(env: Env) -> None:
    a, b, c = env.registry.ids[:3]
    env.commit(a)
    fork = env.tip()
    env.commit(b)
    _tick(env)  # a and b reported
    # the branch is rewound past b and moves on with c: the remembered tip is no ancestor any more
    env.store.repository().reset_branch(env.branch, fork)
    env.commit(c)
    result = _tick(env)
    assert _reported(result) == [c]
    assert _requested(result) == [(b, "repair")], "b was recorded but is no longer committed"
    assert set(ReconcileState.decode(env.cursor).commits) == {a, c}


class _CommitsWhileTicking:
    """A real repository whose branch tip, once read, is immediately moved by another writer's commit."""

    def __init__(self, repo: icechunk.Repository, commit: Callable[[], object]) -> None:
        self._repo = repo
        self._commit = commit

    def lookup_branch(self, branch: str) -> str:
        tip = self._repo.lookup_branch(branch)
        self._commit()  # lands after the tick read the tip, before it walks the history
        return tip

    def __getattr__(self, name: str) -> object:
        return getattr(self._repo, name)


def a_commit_landing_during_a_tick_is_read_by_the_next(env: Env) -> None:
    a, c = env.registry.ids[:2]
    env.commit(a)
    real = env.store

    class RacingStore(LocalIcechunkStore):
        def repository(self, create: bool = False) -> icechunk.Repository:
            repo = real.repository(create)
            # the other writer commits through the real store (its own repository object)
            return _CommitsWhileTicking(repo, lambda: env.commit(c, store=real))  # type: ignore[return-value]

    env.store = RacingStore(path=real.path)
    during = _tick(env)
    env.store = real
    assert _reported(during) == [a], "the tick works on the tip it read"
    after = _tick(env)
    assert _reported(after) == [c], "the commit that landed meanwhile is not skipped"


SCENARIOS: list[Callable[[Env], None]] = [
    first_tick_on_an_empty_log,
    commits_made_outside_dagster_are_reported,
    nothing_new_reads_nothing_and_does_nothing,
    recorded_by_dagster_but_lost_from_the_store,
    stale_regions_are_left_to_automation_until_overdue,
    a_complete_version_is_released_once,
    commits_arriving_between_ticks_are_read_once,
    a_commit_landing_during_a_tick_is_read_by_the_next,
    a_branch_reset_rebuilds_from_the_whole_history,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_cursor_scenario(env: Env, scenario: Callable[[Env], None]) -> None:
    scenario(env)


def test_records_are_paged_beyond_one_fetch(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """More records than one page: every one is read (pages of 3 here, as of 10,000 in production)."""
    import risk_assets.reconcile as reconcile_module

    monkeypatch.setattr(reconcile_module, "RECORDS_PAGE", 3)
    ids = env.registry.ids[:8]
    for region in ids:
        env.record(region, "S" * 20)
    state = ReconcileState()
    assert reconcile_module.update_records(state, env.instance, KEY) == 8
    assert set(state.records) == set(ids)


def test_reconcile_is_a_pure_decision() -> None:
    commit = CommitEntry("SNAP", "p", "c", "run", "t", "i")
    actions = reconcile(
        desired=["r1", "r2", "r3", "r4", "r5"],
        keys={r: BuildKey("p", "i", "c") for r in ["r1", "r2", "r3", "r4", "r5"]},
        records={
            "r1": RecordEntry("SNAP", "p", 1),
            "r3": RecordEntry("GONE", "p", 2),
            "r5": RecordEntry("OLD", "p", 3),
        },
        commits={"r1": commit, "r2": commit, "r4": CommitEntry("X", "old", "c", "run", "t", "i"), "r5": commit},
    )
    assert [r for r, _ in actions.report] == ["r2", "r5"]
    assert [r for r, _ in actions.repair] == ["r3"]
    assert [r for r, _ in actions.stale] == ["r4"]


def test_cursor_round_trips(tmp_path: Path) -> None:
    state = ReconcileState(
        tip="T",
        branch="build-x",
        commits={f"y{i}_x0": CommitEntry("S", "p", "c", "r", "t") for i in range(1000)},
        records_after=7,
        records={"y0_x0": RecordEntry(None, None, 7)},
        flagged={"y1_x0"},
        stale_since={"y2_x0": 1.5},
    )
    encoded = state.encode()
    assert ReconcileState.decode(encoded) == state
    assert len(encoded) < 20_000, "a thousand regions compress well"

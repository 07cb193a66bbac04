"""Bounded history: the snapshot count since the last expiry, and the sensor that requests maintenance.

Real local Icechunk repositories with real region commits (``write_region``), a real
ephemeral Dagster instance, and the real ``maintain_repository`` job run in process.
"""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SkipReason,
    build_sensor_context,
    job,
    op,
)
from pydantic import ValidationError

from resources.batch_commit import commit_batch, write_region_fork
from resources.history import HistorySinceExpiry, history_since_expiry
from resources.ledger import committed_regions
from resources.local_store import LocalIcechunkStore
from resources.maintenance import maintain
from resources.region_write import write_region
from risk_assets.definitions import build_definitions
from risk_assets.history_sensor import HISTORY_SENSOR, build_history_sensor, history_run_key
from risk_assets.maintenance_job import MAINTENANCE_JOB, build_maintenance_job
from risk_assets.settings import Settings
from risk_model.grid import RegionRegistry
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey

KEY = BuildKey("params", "inputs", "code")
WRITER_JOB = "build_region"


def _data(registry: RegionRegistry, index: int) -> xr.Dataset:
    region = registry.get(registry.ids[index % len(registry.ids)])
    values = np.random.default_rng(index).random(region.shape)
    return xr.Dataset(
        {v.name: (DIMS, values.astype(v.dtype)) for v in VARIABLES},
        coords=coordinates(registry.grid, region.rows, region.cols),
    )


def _write(store: LocalIcechunkStore, registry: RegionRegistry, index: int) -> None:
    region = registry.get(registry.ids[index % len(registry.ids)])
    # A new build key each time, so a region written twice is committed twice.
    key = BuildKey(f"params-{index}", KEY.inputs_version, KEY.code_version)
    result = write_region(store, registry.grid, region, _data(registry, index), key=key, run_id=f"run-{index}")
    assert result.status == "written"


def _ledger(store: LocalIcechunkStore) -> dict[str, tuple[str, BuildKey]]:
    records = committed_regions(store.repository(), store.branch)
    return {region: (r.snapshot_id, r.key) for region, r in records.items()}


# --- counting -----------------------------------------------------------------------------------


def test_history_since_expiry_counts_commits_until_the_last_expiry(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    start = history_since_expiry(demo_store.repository(), limit=1000)
    assert start.complete and start.last_expiry is None and start.snapshots >= 1  # the template
    for i in range(6):
        _write(demo_store, demo_registry, i)
    counted = history_since_expiry(demo_store.repository(), limit=1000)
    assert counted == HistorySinceExpiry(start.snapshots + 6, None, complete=True)
    # The limit bounds the count (and what is read): it stops there, saying so.
    assert history_since_expiry(demo_store.repository(), limit=4) == HistorySinceExpiry(4, None, complete=False)

    report = maintain(demo_store, expire_older_than=datetime.now(UTC), garbage_collect=False)
    assert report.snapshots_expired > 0
    after = history_since_expiry(demo_store.repository(), limit=1000)
    assert after.snapshots == 0 and after.complete and after.last_expiry is not None
    _write(demo_store, demo_registry, 6)
    _write(demo_store, demo_registry, 7)
    again = history_since_expiry(demo_store.repository(), limit=1000)
    assert (again.snapshots, again.last_expiry) == (2, after.last_expiry)


def test_history_since_expiry_refuses_a_limit_below_one(demo_store: LocalIcechunkStore) -> None:
    with pytest.raises(ValueError, match="limit must be a positive number"):
        history_since_expiry(demo_store.repository(), limit=0)


def test_a_fork_pending_across_the_automatic_expiry_still_commits(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    """A batch writer's fork handed over before expiry (its base snapshot expired) commits, data intact."""
    region = demo_registry.get(demo_registry.ids[0])
    ds = _data(demo_registry, 0)
    fork = write_region_fork(demo_store, demo_registry.grid, region, ds, key=KEY, run_id="fork")
    assert fork is not None
    base = demo_store.repository().lookup_branch(demo_store.branch)
    for i in (1, 2):
        _write(demo_store, demo_registry, i)
    # The automatic run's maintenance: checkpoint + expiry of everything, no GC.
    maintain(demo_store, expire_older_than=datetime.now(UTC), garbage_collect=False)
    repo = demo_store.repository()
    assert base not in {s.id for s in repo.ancestry(branch=demo_store.branch)}

    result = commit_batch(demo_store, [fork])
    assert result.outcomes[region.id].status == "written"
    assert set(_ledger(demo_store)) == {demo_registry.ids[i] for i in range(3)}
    session = demo_store.repository().readonly_session(branch=demo_store.branch)
    window = dict(zip(DIMS, (region.rows, region.cols), strict=True))
    stored = xr.open_zarr(session.store, consolidated=False).isel(window)
    for v in VARIABLES:
        np.testing.assert_array_equal(stored[v.name].values, ds[v.name].values.astype(v.dtype))


# --- the run key (pure) -------------------------------------------------------------------------

EXPIRED_AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 2, 8, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (HistorySinceExpiry(9, EXPIRED_AT, complete=True), None),
        (HistorySinceExpiry(10, EXPIRED_AT, complete=True), f"history:{EXPIRED_AT.isoformat()}:1"),
        (HistorySinceExpiry(19, EXPIRED_AT, complete=True), f"history:{EXPIRED_AT.isoformat()}:1"),
        # A maintenance that did not happen is asked for again at 2x, 4x, ... the threshold.
        (HistorySinceExpiry(20, EXPIRED_AT, complete=True), f"history:{EXPIRED_AT.isoformat()}:2"),
        (HistorySinceExpiry(39, EXPIRED_AT, complete=True), f"history:{EXPIRED_AT.isoformat()}:2"),
        (HistorySinceExpiry(40, EXPIRED_AT, complete=True), f"history:{EXPIRED_AT.isoformat()}:3"),
        (HistorySinceExpiry(12, None, complete=True), "history:never-expired:1"),
        # Past the counting limit the epoch is unknown: once an hour.
        (HistorySinceExpiry(200, None, complete=False), "history:over-limit:2026-12-02T08"),
    ],
)
def test_history_run_key(since: HistorySinceExpiry, expected: str | None) -> None:
    assert history_run_key(since, 10, NOW) == expected


# --- the sensor on a real instance --------------------------------------------------------------


@op
def _noop() -> None:
    pass


@job(name=WRITER_JOB)
def _build_region_job() -> None:
    _noop()


def _maintenance_and_sensor(threshold: int) -> tuple[JobDefinition, SensorDefinition]:
    maintenance = build_maintenance_job([WRITER_JOB], [])
    return maintenance, build_history_sensor(maintenance, threshold=threshold, keep_hours=0)


def _tick(sensor: SensorDefinition, instance: DagsterInstance, store: LocalIcechunkStore) -> RunRequest | SkipReason:
    result = sensor(build_sensor_context(instance=instance, resources={"store": store}))
    assert isinstance(result, RunRequest | SkipReason)
    return result


def test_sensor_requests_maintenance_past_the_threshold_and_not_before(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    base = history_since_expiry(demo_store.repository(), limit=1000).snapshots
    threshold = base + 4
    maintenance, sensor = _maintenance_and_sensor(threshold)
    with DagsterInstance.ephemeral() as instance:
        for i in range(3):
            _write(demo_store, demo_registry, i)
            skipped = _tick(sensor, instance, demo_store)
            assert isinstance(skipped, SkipReason), f"requested at {base + i + 1} of {threshold}"
            assert f"{base + i + 1} snapshots since the last expiry" in (skipped.skip_message or "")
        _write(demo_store, demo_registry, 3)
        request = _tick(sensor, instance, demo_store)
        assert isinstance(request, RunRequest)
        assert request.run_key == "history:never-expired:1"
        assert _tick(sensor, instance, demo_store) == request  # deterministic: the daemon dedupes it

        # A region run in progress does not stop the automatic run (the store's leases guard it);
        # another maintenance run does stop the sensor from asking.
        instance.create_run_for_job(_build_region_job, status=DagsterRunStatus.STARTED)
        other = instance.create_run_for_job(maintenance, status=DagsterRunStatus.STARTED)
        waiting = _tick(sensor, instance, demo_store)
        assert isinstance(waiting, SkipReason) and other.run_id in (waiting.skip_message or "")
        instance.report_run_failed(other)

        ledger = _ledger(demo_store)
        done = maintenance.execute_in_process(
            run_config=request.run_config,
            tags=request.tags,
            instance=instance,
            resources={"store": demo_store},
            raise_on_error=False,
        )
        assert done.success
        assert _ledger(demo_store) == ledger  # every region's lineage kept
        assert len(demo_store.repository().inspect_repo_info()["snapshots"]) <= 3  # root, checkpoint, tip

        # A new epoch: quiet until the threshold is reached again, then a new key.
        for i in range(threshold - 1):
            _write(demo_store, demo_registry, 10 + i)
        assert isinstance(_tick(sensor, instance, demo_store), SkipReason)
        _write(demo_store, demo_registry, 10 + threshold)
        second = _tick(sensor, instance, demo_store)
        expired_at = history_since_expiry(demo_store.repository(), limit=1000).last_expiry
        assert expired_at is not None
        assert isinstance(second, RunRequest) and second.run_key == f"history:{expired_at.isoformat()}:1"


def test_default_maintenance_still_refuses_while_a_writer_run_is_active(demo_store: LocalIcechunkStore) -> None:
    maintenance, _ = _maintenance_and_sensor(10)
    with DagsterInstance.ephemeral() as instance:
        instance.create_run_for_job(_build_region_job, status=DagsterRunStatus.STARTED)
        refused = maintenance.execute_in_process(
            run_config={"ops": {"maintain_store": {"config": {"expire_older_than_days": 0}}}},
            instance=instance,
            resources={"store": demo_store},
            raise_on_error=False,
        )
        assert not refused.success


def test_definitions_carry_the_sensor_with_the_settings(tmp_path: Path) -> None:
    defs = build_definitions(Settings(home=tmp_path, history_threshold=7, history_keep_hours=2))
    sensor = defs.resolve_sensor_def(HISTORY_SENSOR)
    assert sensor.job_name == MAINTENANCE_JOB
    assert "when 7 snapshots" in (sensor.description or "") and "older than 2 h" in (sensor.description or "")


def test_settings_refuse_a_bad_history_threshold(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="history_threshold"):
        Settings(home=tmp_path, history_threshold=0)

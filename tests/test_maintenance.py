"""Repository maintenance against real Icechunk repositories and real Dagster instances.

The history built here is the project's: versions built on ``build-*`` branches, ``main``
promoted by ``reset_branch`` to a complete build's tip, releases tagged at a commit carrying
a ledger table, plus a post-release fix and an unfinished build whose tips carry none.
"""

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import icechunk
import numpy as np
import pytest
import xarray as xr
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, Definitions, JobDefinition, asset, job, op

from resources import maintenance
from resources.branches import ensure_branch
from resources.ledger import committed_regions, ledger_table
from resources.local_store import LocalIcechunkStore
from resources.maintenance import LineageAtRiskError, LineageLostError, MaintenanceReport, maintain
from resources.region_write import write_region
from resources.store import WritersActiveError
from risk_assets.maintenance_job import active_writer_runs, build_maintenance_job
from risk_model.grid import RegionRegistry
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KEY_A0 = BuildKey("params-a0", "inputs-1", "code-1")
KEY_A = BuildKey("params-a", "inputs-1", "code-1")
KEY_B = BuildKey("params-b", "inputs-1", "code-1")
KEY_FIX = BuildKey("params-b-fix", "inputs-1", "code-1")
KEY_C = BuildKey("params-c", "inputs-1", "code-1")
WRITER_JOB = "build_region"
WRITER_ASSET = AssetKey("risk_raster")

Ledger = dict[str, tuple[str, BuildKey, str]]


def _region_data(registry: RegionRegistry, region_id: str, value: float) -> xr.Dataset:
    """``value`` plus seeded noise in [0, 1): incompressible, so chunks are real objects, not inlined."""
    region = registry.get(region_id)
    noise = np.random.default_rng([registry.ids.index(region_id), int(value * 1000)]).random(region.shape)
    return xr.Dataset(
        {v.name: (DIMS, (value + noise).astype(v.dtype)) for v in VARIABLES},
        coords=coordinates(registry.grid, region.rows, region.cols),
    )


def _write(
    store: LocalIcechunkStore, registry: RegionRegistry, branch: str, region_id: str, value: float, key: BuildKey
) -> str:
    result = write_region(
        store,
        registry.grid,
        registry.get(region_id),
        _region_data(registry, region_id, value),
        key=key,
        run_id=f"run-{key.params_version}",
        branch=branch,
    )
    assert result.status == "written"
    return result.snapshot_id


def _release(repo: icechunk.Repository, branch: str, tag: str) -> str:
    """Commit the release (an empty commit carrying the ledger table), promote main, tag it."""
    session = repo.writable_session(branch)
    table = ledger_table(committed_regions(repo, branch))
    tip: str = session.commit(f"release {tag}", metadata={"kind": "release", "ledger": table}, allow_empty=True)
    _promote(repo, branch)
    repo.create_tag(tag, tip)
    return tip


def _promote(repo: icechunk.Repository, branch: str) -> None:
    repo.reset_branch("main", repo.lookup_branch(branch), from_snapshot_id=repo.lookup_branch("main"))


@dataclass(frozen=True)
class History:
    """The repository built by :func:`_build_history` and what each ref should read."""

    regions: list[str]
    #: ref -> region -> the value its data was made from (see _region_data)
    expected: dict[str, dict[str, float]]


def _build_history(store: LocalIcechunkStore, registry: RegionRegistry) -> History:
    r0, r1, r2, r3 = registry.ids[10:14]
    repo = store.repository()
    # Version A: r0 written twice (its first chunk becomes garbage), then all four; released as v-a.
    ensure_branch(repo, "build-a", "main")
    _write(store, registry, "build-a", r0, 0.5, KEY_A0)
    for region in (r0, r1, r2, r3):
        _write(store, registry, "build-a", region, 1.0, KEY_A)
    _release(repo, "build-a", "v-a")
    # Version B: r0 and r1 rebuilt; released as v-b.
    ensure_branch(repo, "build-b", "main")
    for region in (r0, r1):
        _write(store, registry, "build-b", region, 2.0, KEY_B)
    _release(repo, "build-b", "v-b")
    # A fix of r2 promoted without a release: main and build-b share a tip without a ledger table.
    _write(store, registry, "build-b", r2, 3.0, KEY_FIX)
    _promote(repo, "build-b")
    # An unfinished build: its tip carries no ledger table either.
    ensure_branch(repo, "build-c", "main")
    _write(store, registry, "build-c", r3, 4.0, KEY_C)
    a = {r0: 1.0, r1: 1.0, r2: 1.0, r3: 1.0}
    b = {**a, r0: 2.0, r1: 2.0}
    fixed = {**b, r2: 3.0}
    return History(
        regions=[r0, r1, r2, r3],
        expected={
            "tag:v-a": a,
            "tag:v-b": b,
            "branch:build-a": a,
            "branch:build-b": fixed,
            "branch:main": fixed,
            "branch:build-c": {**fixed, r3: 4.0},
        },
    )


def _tips(repo: icechunk.Repository) -> dict[str, str]:
    tips = {f"branch:{b}": repo.lookup_branch(b) for b in repo.list_branches()}
    tips.update({f"tag:{t}": repo.lookup_tag(t) for t in repo.list_tags()})
    return tips


def _ledgers(repo: icechunk.Repository) -> dict[str, Ledger]:
    return {
        ref: {r: (c.snapshot_id, c.key, c.run_id) for r, c in committed_regions(repo, snapshot_id=tip).items()}
        for ref, tip in _tips(repo).items()
    }


def _snapshots(repo: icechunk.Repository) -> set[str]:
    """Every snapshot reachable from any ref."""
    return {info.id for tip in _tips(repo).values() for info in repo.ancestry(snapshot_id=tip)}


def _session(repo: icechunk.Repository, ref: str) -> icechunk.Session:
    kind, name = ref.split(":", 1)
    return repo.readonly_session(tag=name) if kind == "tag" else repo.readonly_session(branch=name)


def _assert_data(
    repo: icechunk.Repository, registry: RegionRegistry, ref: str, expected: dict[str, float], neighbour: str
) -> None:
    ds = xr.open_zarr(_session(repo, ref).store, consolidated=False)
    for region_id, value in expected.items():
        region = registry.get(region_id)
        written = _region_data(registry, region_id, value)
        for var in VARIABLES:
            got = ds[var.name].isel(latitude=region.rows, longitude=region.cols).values
            np.testing.assert_array_equal(got, written[var.name].values, err_msg=f"{ref} {region_id} {var.name}")
    # a region never written still holds the fill value
    region = registry.get(neighbour)
    assert bool(np.isnan(ds["risk"].isel(latitude=region.rows, longitude=region.cols).values).all())


@pytest.fixture
def built(demo_store: LocalIcechunkStore, demo_registry: RegionRegistry) -> History:
    return _build_history(demo_store, demo_registry)


def test_maintenance_expires_history_and_keeps_every_ledger_and_release(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry, built: History
) -> None:
    repo = demo_store.repository()
    before_ledgers = _ledgers(repo)
    before_snapshots = _snapshots(repo)
    assert set(before_ledgers) == {f"branch:{b}" for b in ("main", "build-a", "build-b", "build-c")} | {
        "tag:v-a",
        "tag:v-b",
    }
    time.sleep(0.01)

    report = maintain(demo_store, expire_older_than=datetime.now(UTC), gc_margin=timedelta(0))

    assert report.snapshots_expired > 0
    assert report.expired_as_predicted is True
    # main and build-b shared a tip: one checkpoint for both, committed on the build branch
    assert set(report.checkpoints) == {"main", "build-b", "build-c"}
    assert report.checkpoints["main"] == report.checkpoints["build-b"] != report.checkpoints["build-c"]
    assert report.already_ledgered == ("build-a",)
    assert report.ledger_regions_before == report.ledger_regions_after
    assert report.ledger_regions_after["branch:build-c"] == 4
    assert report.gc is not None and report.gc.snapshots_deleted > 0 and report.gc.chunks_deleted > 0
    assert report.gc.objects_failed_to_delete == 0

    repo = demo_store.repository()
    assert _ledgers(repo) == before_ledgers
    # history really is short now: each ref is its tip and the root
    assert all(len(list(repo.ancestry(snapshot_id=tip))) == 2 for tip in _tips(repo).values())
    assert len(_snapshots(repo)) < len(before_snapshots)
    region_commit = before_ledgers["branch:build-b"][built.regions[2]][0]
    with pytest.raises(icechunk.SnapshotNotFoundError):
        repo.lookup_snapshot(region_commit)  # the region commit itself and its metadata are gone

    # regions already committed are still skipped: no write, no commit
    tips = _tips(repo)
    for branch, region_id, value, key in (
        ("build-b", built.regions[2], 3.0, KEY_FIX),
        ("build-b", built.regions[0], 2.0, KEY_B),
        ("build-c", built.regions[3], 4.0, KEY_C),
    ):
        result = write_region(
            demo_store,
            demo_registry.grid,
            demo_registry.get(region_id),
            _region_data(demo_registry, region_id, value),
            key=key,
            run_id="after-maintenance",
            branch=branch,
        )
        assert result.status == "skipped"
        assert result.snapshot_id == before_ledgers[f"branch:{branch}"][region_id][0]
    assert _tips(repo) == tips

    # every release and branch still reads exactly what was written, after GC
    neighbour = demo_registry.ids[20]
    for ref, expected in built.expected.items():
        _assert_data(repo, demo_registry, ref, expected, neighbour)

    # a second run finds every tip ledgered and nothing left to expire
    again = maintain(demo_store, expire_older_than=datetime.now(UTC), gc_margin=timedelta(0))
    assert again.checkpoints == {} and again.snapshots_expired == 0
    assert _ledgers(demo_store.repository()) == before_ledgers


def test_gc_margin_keeps_objects_written_since_maintenance_began(
    demo_store: LocalIcechunkStore, built: History
) -> None:
    report = maintain(demo_store, expire_older_than=datetime.now(UTC))  # default margin: 10 minutes
    assert report.snapshots_expired > 0
    assert report.gc is not None
    assert report.gc_cutoff is not None and report.gc_cutoff <= report.started_at - timedelta(minutes=10)
    assert (report.gc.chunks_deleted, report.gc.snapshots_deleted, report.gc.bytes_deleted) == (0, 0, 0)


def test_dry_run_changes_nothing_and_predicts(demo_store: LocalIcechunkStore, built: History) -> None:
    repo = demo_store.repository()
    tips, snapshots, ledgers = _tips(repo), _snapshots(repo), _ledgers(repo)
    cutoff = datetime.now(UTC)
    dry = maintain(demo_store, expire_older_than=cutoff, gc_margin=timedelta(0), dry_run=True)
    repo = demo_store.repository()
    assert (_tips(repo), _snapshots(repo), _ledgers(repo)) == (tips, snapshots, ledgers)
    assert dry.checkpoints == {"build-b": "", "main": "", "build-c": ""}
    real = maintain(demo_store, expire_older_than=cutoff, gc_margin=timedelta(0))
    assert real.snapshots_expired == dry.snapshots_expired > 0


def test_refuses_when_a_tag_without_ledger_would_lose_lineage(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    repo = demo_store.repository()
    ensure_branch(repo, "build-old", "main")
    first, second = demo_registry.ids[:2]
    _write(demo_store, demo_registry, "build-old", first, 1.0, KEY_A)
    tip = _write(demo_store, demo_registry, "build-old", second, 1.0, KEY_A)
    repo.create_tag("legacy", tip)  # a release from before ledger tables: tags are immutable
    tips, snapshots = _tips(repo), _snapshots(repo)
    with pytest.raises(LineageAtRiskError, match="tag:legacy"):
        maintain(demo_store, expire_older_than=datetime.now(UTC))
    repo = demo_store.repository()
    assert (_tips(repo), _snapshots(repo)) == (tips, snapshots)


def test_lineage_lost_by_expiry_is_caught_before_garbage_collection(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net behind the prediction: with a prediction that misses the loss, the check after expiry
    raises and garbage collection does not run."""
    repo = demo_store.repository()
    ensure_branch(repo, "build-old", "main")
    first, second = demo_registry.ids[:2]
    _write(demo_store, demo_registry, "build-old", first, 1.0, KEY_A)
    repo.create_tag("legacy", _write(demo_store, demo_registry, "build-old", second, 1.0, KEY_A))

    def predict_nothing_lost(
        repo: icechunk.Repository, starts: dict[str, bool], older_than: datetime, pinned: set[str]
    ) -> tuple[dict[str, list[icechunk.SnapshotInfo]], set[str]]:
        return {start: list(repo.ancestry(snapshot_id=start)) for start in starts}, set()

    monkeypatch.setattr(maintenance, "plan_expiry", predict_nothing_lost)
    with pytest.raises(LineageLostError, match="tag:legacy") as caught:
        maintain(demo_store, expire_older_than=datetime.now(UTC), gc_margin=timedelta(0))
    assert caught.value.report.gc is None and caught.value.report.expired_as_predicted is False
    assert set(caught.value.differences) == {"tag:legacy"}
    assert (
        caught.value.report.ledger_regions_after["tag:legacy"] < caught.value.report.ledger_regions_before["tag:legacy"]
    )


# --- writer leases across OS processes --------------------------------------------------------

_HOLD_LEASE = """
import sys
from resources.local_store import LocalIcechunkStore
with LocalIcechunkStore(path=sys.argv[1]).writer_lease():
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def _lease_process(store: LocalIcechunkStore) -> Iterator[subprocess.Popen[str]]:
    """A separate Python process that takes a writer lease and holds it until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LEASE, store.path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=PROJECT_ROOT,
        env=env,
        text=True,
    )
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # still blocked in writer_lease: a failed test must not hang
            proc.wait(timeout=30)


def _line_within(proc: subprocess.Popen[str], seconds: float) -> str | None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return proc.stdout.readline().strip() if ready else None


@pytest.mark.slow  # a second process holding a lease (Python start-up and imports)
def test_refuses_while_another_process_holds_a_writer_lease(demo_store: LocalIcechunkStore, built: History) -> None:
    repo = demo_store.repository()
    tips, snapshots = _tips(repo), _snapshots(repo)
    with _lease_process(demo_store) as proc:
        assert _line_within(proc, 60) == "held"
        with pytest.raises(WritersActiveError, match="Wait for the running region writers"):
            maintain(demo_store, expire_older_than=datetime.now(UTC))
        repo = demo_store.repository()
        assert (_tips(repo), _snapshots(repo)) == (tips, snapshots)
    # the writer has exited: its lease went with it
    assert maintain(demo_store, expire_older_than=datetime.now(UTC)).snapshots_expired > 0


@pytest.mark.slow  # a second process holding a lease (Python start-up and imports)
def test_new_writers_wait_while_maintenance_holds_the_lock(demo_store: LocalIcechunkStore) -> None:
    with ExitStack() as maintenance:
        maintenance.enter_context(demo_store.maintenance_lock())
        with _lease_process(demo_store) as proc:
            assert _line_within(proc, 1.5) is None  # blocked in writer_lease
            maintenance.close()  # maintenance is done
            assert _line_within(proc, 30) == "held"
    assert proc.returncode == 0


# --- the Dagster job --------------------------------------------------------------------------


@op
def _noop() -> None:
    pass


@job(name=WRITER_JOB)
def _build_region_job() -> None:
    _noop()


@job(name="other_job")
def _other_job() -> None:
    _noop()


@asset(name="risk_raster")
def _risk_raster_stub() -> None:
    pass


@asset(name="raster_status")
def _status_stub() -> None:
    pass


def _asset_job() -> JobDefinition:
    """The implicit asset job of two stub assets: runs of it select assets, under another job name."""
    return Definitions(assets=[_risk_raster_stub, _status_stub]).resolve_implicit_global_asset_job_def()


def _maintenance_job() -> JobDefinition:
    return build_maintenance_job([WRITER_JOB], [WRITER_ASSET])


def _run_config(**config: object) -> dict[str, object]:
    return {"ops": {"maintain_store": {"config": {"expire_older_than_days": 0, **config}}}}


def _report_metadata(result: object) -> dict[str, object]:
    events = [e for e in result.all_node_events if e.is_successful_output]  # type: ignore[attr-defined]
    assert len(events) == 1
    return dict(events[0].step_output_data.metadata)


def test_active_writer_runs_counts_writer_jobs_and_writer_asset_selections() -> None:
    with DagsterInstance.ephemeral() as instance:
        writer = instance.create_run_for_job(_build_region_job, status=DagsterRunStatus.STARTED)
        instance.create_run_for_job(_other_job, status=DagsterRunStatus.STARTED)  # writes nothing
        instance.create_run_for_job(_build_region_job, status=DagsterRunStatus.SUCCESS)  # finished
        assets = _asset_job()
        selecting = instance.create_run_for_job(
            assets, status=DagsterRunStatus.STARTED, asset_selection=frozenset({WRITER_ASSET})
        )
        instance.create_run_for_job(  # materializes only a reader asset
            assets, status=DagsterRunStatus.STARTED, asset_selection=frozenset({AssetKey("raster_status")})
        )
        found = active_writer_runs(instance, writer_job_names=[WRITER_JOB], writer_asset_keys=[WRITER_ASSET])
        assert {r.run_id for r in found} == {writer.run_id, selecting.run_id}
        assert next(r for r in found if r.run_id == selecting.run_id).reason == "selects risk_raster"
        assert (
            active_writer_runs(
                instance,
                writer_job_names=[WRITER_JOB],
                writer_asset_keys=[],
                exclude_run_ids=[writer.run_id],
            )
            == []
        )


def test_job_refuses_while_a_build_region_run_is_started_then_succeeds(
    demo_store: LocalIcechunkStore, built: History
) -> None:
    maintenance = _maintenance_job()
    repo = demo_store.repository()
    tips, snapshots, ledgers = _tips(repo), _snapshots(repo), _ledgers(repo)
    with DagsterInstance.ephemeral() as instance:
        writer = instance.create_run_for_job(_build_region_job, status=DagsterRunStatus.STARTED)
        refused = maintenance.execute_in_process(
            run_config=_run_config(), instance=instance, resources={"store": demo_store}, raise_on_error=False
        )
        assert not refused.success
        failure = refused.failure_data_for_node("maintain_store")
        assert failure is not None and failure.user_failure_data is not None
        message = failure.user_failure_data.description or ""
        assert writer.run_id in message and "build_region" in message and "Nothing was changed" in message
        repo = demo_store.repository()
        assert (_tips(repo), _snapshots(repo)) == (tips, snapshots)

        instance.report_run_failed(writer)  # the writer run is over
        done = maintenance.execute_in_process(
            run_config=_run_config(), instance=instance, resources={"store": demo_store}, raise_on_error=False
        )
        assert done.success
        metadata = _report_metadata(done)
        assert metadata["snapshots_expired"].value > 0  # type: ignore[attr-defined]
        report = metadata["report"].value  # type: ignore[attr-defined]
        assert set(report["checkpoints"]) == {"main", "build-b", "build-c"}
    assert _ledgers(demo_store.repository()) == ledgers


@pytest.mark.slow  # a second process holding a lease (Python start-up and imports)
def test_job_turns_writer_leases_into_a_failure(demo_store: LocalIcechunkStore, built: History) -> None:
    repo = demo_store.repository()
    tips = _tips(repo)
    with DagsterInstance.ephemeral() as instance, _lease_process(demo_store) as proc:
        assert _line_within(proc, 60) == "held"
        result = _maintenance_job().execute_in_process(
            run_config=_run_config(), instance=instance, resources={"store": demo_store}, raise_on_error=False
        )
        assert not result.success
        failure = result.failure_data_for_node("maintain_store")
        assert failure is not None and failure.user_failure_data is not None
        assert "region writers hold leases" in (failure.user_failure_data.description or "")
    assert _tips(demo_store.repository()) == tips


def test_report_is_json_metadata(demo_store: LocalIcechunkStore, built: History) -> None:
    report = maintain(demo_store, expire_older_than=datetime.now(UTC), garbage_collect=False)
    assert isinstance(report, MaintenanceReport)
    data = report.as_dict()
    assert data["gc"] is None and data["gc_cutoff"] is None
    assert isinstance(data["started_at"], str)

"""Writer leases and the maintenance lock on an object store (moto's S3 server), across processes.

Garbage collection under a live writer deletes objects that writer still needs (issue 15,
item 2). These tests drive the lease protocol of :mod:`resources.leases` through
:class:`~resources.cloud_stores.S3IcechunkStore` against a real S3-compatible server with atomic
conditional writes: the protocol's steps one by one, a writer killed by SIGKILL, and
maintenance looping while eight writer processes commit.
"""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _s3_workers
import boto3
import numpy as np
import pytest
import xarray as xr
from _services import S3_KEYS, moto_s3

from resources.cloud_stores import S3IcechunkStore
from resources.ledger import committed_regions
from resources.maintenance import maintain
from resources.store import MaintenanceActiveError, WritersActiveError
from resources.template import ensure_template
from risk_model.errors import StoreUnavailableError
from risk_model.grid import RegionRegistry
from risk_model.schema import VARIABLES

BUCKET = "lease-test"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


def _store(endpoint: str, **fields: float) -> S3IcechunkStore:
    """A store at a fresh prefix, so each test has its own repository and leases."""
    return S3IcechunkStore(
        bucket=BUCKET,
        prefix=f"t-{uuid.uuid4().hex[:8]}/repo.icechunk",
        endpoint_url=endpoint,
        region="us-east-1",
        allow_http=True,
        force_path_style=True,
        access_key_id=S3_KEYS["access_key_id"],
        secret_access_key=S3_KEYS["secret_access_key"],
        **fields,  # type: ignore[arg-type]  # lease settings: floats only
    )


def _put_raw_lease(store: S3IcechunkStore, name: str, expires_in: timedelta) -> None:
    """Write a lease object as a holder on another machine would have left it."""
    now = datetime.now(UTC)
    body = {
        "kind": "maintenance" if name == "maintenance" else "writer",
        "owner": uuid.uuid4().hex,
        "host": "elsewhere",
        "pid": 4242,
        "started_at": (now - timedelta(hours=1)).isoformat(),
        "expires_at": (now + expires_in).isoformat(),
    }
    s3 = boto3.client("s3", endpoint_url=store.endpoint_url, region_name="us-east-1", **_boto_keys())
    s3.put_object(Bucket=BUCKET, Key=f"{store.prefix}.leases/{name}", Body=json.dumps(body).encode())


def _boto_keys() -> dict[str, str]:
    return {"aws_access_key_id": S3_KEYS["access_key_id"], "aws_secret_access_key": S3_KEYS["secret_access_key"]}


def test_leases_live_beside_the_repository_not_inside_it(s3_endpoint: str) -> None:
    store = _store(s3_endpoint)
    assert store.lease_location() == f"s3://{BUCKET}/{store.prefix}.leases/"
    with store.writer_lease():
        (name,) = store.list_lease_objects()
        assert name.startswith("writer-")
        body = json.loads(store.read_lease_object(name)[0])  # type: ignore[index]
        assert body["pid"] == os.getpid() and body["kind"] == "writer"
        assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC) + timedelta(minutes=29)
    assert store.list_lease_objects() == [], "the lease is deleted when the writer is done"


def test_maintenance_refuses_while_a_writer_lease_is_live(s3_endpoint: str, demo_registry: RegionRegistry) -> None:
    store = _store(s3_endpoint)
    ensure_template(store, demo_registry.grid, {"code_version": "test"})
    tips = {b: store.repository().lookup_branch(b) for b in store.repository().list_branches()}
    with store.writer_lease():
        with pytest.raises(WritersActiveError, match=rf"1 region writer\(s\) hold leases.*pid {os.getpid()}"):
            maintain(store, expire_older_than=datetime.now(UTC))
        assert [n for n in store.list_lease_objects() if not n.startswith("writer-")] == [], "lock released"
    assert {b: store.repository().lookup_branch(b) for b in store.repository().list_branches()} == tips
    report = maintain(store, expire_older_than=datetime.now(UTC), gc_margin=timedelta(0))
    assert report.gc is not None
    assert store.list_lease_objects() == []


def test_a_writer_waits_while_maintenance_holds_the_lock(s3_endpoint: str) -> None:
    store = _store(s3_endpoint, lease_wait_s=60)
    entered = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with store.writer_lease():
                entered.set()
        except StoreUnavailableError as err:  # reported to the test thread below
            errors.append(err)

    with store.maintenance_lock():
        thread = threading.Thread(target=writer)
        thread.start()
        assert not entered.wait(1.5), "a writer must not start while maintenance holds the lock"
    released = time.monotonic()
    assert entered.wait(15), "the writer goes ahead once maintenance is done"
    waited_after_release = time.monotonic() - released
    thread.join(15)
    assert errors == [] and waited_after_release < 10
    assert store.list_lease_objects() == []


def test_a_writer_gives_up_with_a_retry_later_error_and_leaves_no_lease(s3_endpoint: str) -> None:
    store = _store(s3_endpoint, lease_wait_s=0.6)
    with store.maintenance_lock():
        started = time.monotonic()
        with (
            pytest.raises(MaintenanceActiveError, match="maintenance of the repository holds its lock") as caught,
            store.writer_lease(),
        ):
            pytest.fail("entered the lease while maintenance held the lock")
        assert 0.5 <= time.monotonic() - started < 10
        assert isinstance(caught.value, StoreUnavailableError), "a retry-later error"
        assert store.list_lease_objects() == ["maintenance"], "the writer withdrew its lease"
    assert store.list_lease_objects() == []


def test_a_second_maintenance_is_refused_while_the_first_holds_the_lock(s3_endpoint: str) -> None:
    store = _store(s3_endpoint)
    with store.maintenance_lock():
        with pytest.raises(WritersActiveError, match="another maintenance holds the lock"), store.maintenance_lock():
            pytest.fail("two maintenance locks at once")
        assert store.list_lease_objects() == ["maintenance"], "the refused one left the holder's lock alone"


def test_expired_leases_of_dead_holders_no_longer_block(s3_endpoint: str) -> None:
    store = _store(s3_endpoint)
    _put_raw_lease(store, "writer-live", timedelta(minutes=5))
    with pytest.raises(WritersActiveError, match=r"writer-live \(host elsewhere, pid 4242"), store.maintenance_lock():
        pytest.fail("maintenance under a live lease")
    store.delete_lease_object("writer-live")

    _put_raw_lease(store, "writer-dead", timedelta(seconds=-1))
    with store.maintenance_lock():
        assert store.list_lease_objects() == ["maintenance"], "the dead writer's lease was cleaned up"

    _put_raw_lease(store, "maintenance", timedelta(seconds=-1))
    with store.writer_lease():  # an expired maintenance lock does not hold writers back
        pass
    with store.maintenance_lock():  # and the next maintenance takes it over
        found = store.read_lease_object("maintenance")
        assert found is not None and json.loads(found[0])["pid"] == os.getpid()
    assert store.list_lease_objects() == []


_HOLD_LEASE = """
import sys, time
from resources.cloud_stores import S3IcechunkStore
with S3IcechunkStore.model_validate_json(sys.argv[1]).writer_lease():
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_sigkilled_writer_blocks_maintenance_only_until_its_ttl(s3_endpoint: str) -> None:
    ttl = 4.0
    store = _store(s3_endpoint, writer_lease_ttl_s=ttl)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LEASE, store.model_dump_json()],
        stdout=subprocess.PIPE,
        cwd=PROJECT_ROOT,
        env=env,
        text=True,
        start_new_session=True,  # its own process group, killed as a whole like an evicted pod
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        time.sleep(ttl)  # longer than one renewal period: the lease stays live only if it is renewed
        with pytest.raises(WritersActiveError, match=f"pid {proc.pid}"), store.maintenance_lock():
            pytest.fail("maintenance under a live writer")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    killed = time.monotonic()
    with pytest.raises(WritersActiveError, match=f"pid {proc.pid}"), store.maintenance_lock():
        pytest.fail("the dead writer's lease must block until it expires")
    # A bound on a hang (a lease that never expires), not a speed limit: under CI load each
    # maintenance_lock() call takes seconds (measured: 6.5 s in all with a load average of 25).
    deadline = killed + ttl + 60
    while time.monotonic() < deadline:
        try:
            with store.maintenance_lock():
                break
        except WritersActiveError:
            time.sleep(0.2)
    else:
        pytest.fail(f"the dead writer's lease had not expired {ttl + 60:.0f} s after the kill")
    assert store.list_lease_objects() == []


@pytest.mark.slow
def test_maintenance_looping_under_eight_writer_processes_loses_nothing(
    s3_endpoint: str, demo_registry: RegionRegistry
) -> None:
    """Issue 15's test: expire (days=0) and collect in a loop while 8 processes commit regions."""
    n_workers, per_worker = 8, 4
    region_ids = demo_registry.ids[: n_workers * per_worker]
    values = {region_id: i + 1 for i, region_id in enumerate(region_ids)}
    store = _store(s3_endpoint)
    ensure_template(store, demo_registry.grid, {"code_version": "test"})

    runs, refusals, expired = 0, 0, 0
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        batches = [region_ids[i::n_workers] for i in range(n_workers)]
        futures = [
            pool.submit(_s3_workers.write_constant_regions, store.model_dump_json(), batch, [values[r] for r in batch])
            for batch in batches
        ]
        deadline = time.monotonic() + 540
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            try:
                report = maintain(
                    store,
                    expire_older_than=datetime.now(UTC),  # days=0: everything but the tips
                    gc_margin=timedelta(0),  # only the leases protect the writers
                    wait_for_writers=timedelta(seconds=5),
                )
            except WritersActiveError:
                refusals += 1
                continue
            runs += 1
            expired += report.snapshots_expired
            assert report.gc is not None and report.gc.objects_failed_to_delete == 0
            # A pause, as between scheduled runs: back to back, maintenance would starve the
            # writers (each waits for the lock's release), and the test would take minutes.
            time.sleep(1.5)
        results = [row for f in futures for row in f.result()]  # re-raises any writer's error
    elapsed = time.perf_counter() - started

    assert sorted(r[0] for r in results) == sorted(region_ids)
    assert {r[1] for r in results} == {"written"}
    assert runs >= 1 and expired > 0, f"maintenance never ran during the writes ({refusals} refusals)"
    final = maintain(store, expire_older_than=datetime.now(UTC), gc_margin=timedelta(0))
    assert final.gc is not None
    repo = store.repository()
    assert sorted(committed_regions(repo, "main")) == sorted(region_ids), "the ledger kept every region"
    ds = xr.open_zarr(repo.readonly_session(branch="main").store, consolidated=False)
    for region_id, value in values.items():
        region = demo_registry.get(region_id)
        for var in VARIABLES:
            block = ds[var.name].isel(latitude=region.rows, longitude=region.cols).values
            assert bool((block == np.array(value, dtype=var.dtype)).all()), f"{region_id} {var.name}"
    assert store.list_lease_objects() == []
    print(
        f"\nmaintenance under 8 writers: {len(results)} regions in {elapsed:.1f} s; {runs} maintenance runs "
        f"({refusals} refused), {expired} snapshots expired"
    )

"""The object store disappears for a few seconds while writers commit regions.

A TCP proxy (``_tcp_proxy.py``) stands between the writers and the S3 emulator; during the
outage it refuses new connections and resets open ones, as a store that went away does. Each
region write must either succeed (Icechunk's storage retries, botocore's for the lease objects)
or fail with an error of the "retry later" category (:class:`StoreUnavailableError`); a rerun of
the regions missing from the commit log completes the build; then every region is committed
exactly once, every pixel holds its region's value, and the repository reads back.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from _chaos_worker import KEY, region_data, region_value
from _services import S3_KEYS, moto_s3
from _tcp_proxy import TcpProxy, tcp_proxy

from resources.cloud_stores import S3IcechunkStore
from resources.ledger import iter_region_commits
from resources.region_write import write_region
from resources.template import ensure_template
from risk_model.errors import StoreUnavailableError
from risk_model.grid import RegionRegistry

BUCKET = "outage"
WRITERS = 4
PER_WRITER = 4
WORKER = Path(__file__).with_name("_outage_worker.py")
#: No writer may take longer than this, whatever the store does: a bound on a hang, not a
#: performance limit (a writer takes ~20 s here, but CI runs the race tests beside it and 75 s
#: was exceeded there by start-up alone).
WRITER_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[TcpProxy]:
    with tcp_proxy(s3_endpoint) as p:
        yield p


def _store(endpoint: str, prefix: str, **settings: Any) -> S3IcechunkStore:
    return S3IcechunkStore(
        bucket=BUCKET,
        prefix=prefix,
        endpoint_url=endpoint,
        region="us-east-1",
        allow_http=True,
        force_path_style=True,
        **S3_KEYS,
        **settings,
    )


class _Writer:
    """One writer process and the lines it printed (read by a thread, so nothing blocks)."""

    def __init__(self, store: S3IcechunkStore, region_ids: list[str], log: Path) -> None:
        self.lines: list[str] = []
        self.log = log
        with log.open("w") as stderr:
            # stderr to a file: a pipe nobody reads fills up with retry warnings and blocks the writer
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), store.model_dump_json(), *region_ids],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")]),
                },
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def finish(self, deadline: float) -> str | None:
        """Wait for the process (killed at ``deadline``); ``None`` if it exited 0, else what went wrong."""
        try:
            self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return f"TIMEOUT after {WRITER_TIMEOUT_S} s; stderr ends:\n{self.log.read_text()[-3000:]}"
        self._reader.join(timeout=5)
        if self.proc.returncode != 0:
            return f"exit {self.proc.returncode}; stderr ends:\n{self.log.read_text()[-3000:]}"
        return None


def _outcomes(writers: list[_Writer], region_ids: list[str]) -> dict[str, str]:
    """Region id to the rest of its writer's line (other lines are ignored)."""
    rows = (line.split(" ", 1) for w in writers for line in w.lines)
    return {row[0]: row[1] for row in rows if len(row) == 2 and row[0] in region_ids}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("outage_s", "settings", "transparent"),
    [
        # the store resource's default retries: a few seconds of outage are not even noticed
        pytest.param(5.0, {}, True, id="down-5s-default-retries"),
        # no retries at all: writes in the outage fail, in the retry-later category, and a rerun completes
        pytest.param(5.0, {"request_max_tries": 1}, False, id="down-5s-no-retries"),
    ],
)
def test_writers_ride_out_or_report_a_store_outage_and_a_rerun_completes(
    outage_s: float,
    settings: dict[str, int],
    transparent: bool,
    proxy: TcpProxy,
    demo_registry: RegionRegistry,
    tmp_path: Path,
) -> None:
    store = _store(proxy.endpoint, f"outage-{outage_s:.0f}-{len(settings)}.icechunk", **settings)
    ensure_template(store, demo_registry.grid, {"code_version": "test"})
    region_ids = demo_registry.ids[: WRITERS * PER_WRITER]
    started = time.monotonic()
    writers = [_Writer(store, region_ids[w::WRITERS], tmp_path / f"writer-{w}.log") for w in range(WRITERS)]
    # Down once the first region is committed: the others are mid-write or mid-commit.
    while not any(w.lines for w in writers) and time.monotonic() - started < 60:
        time.sleep(0.05)
    down_at = time.monotonic() - started
    with proxy.outage(outage_s):
        pass
    reset = proxy.connections_reset
    deadline = time.monotonic() + WRITER_TIMEOUT_S
    ended = [w.finish(deadline) for w in writers]
    crashes = [f"writer {i}: {why}" for i, why in enumerate(ended) if why is not None]
    elapsed = time.monotonic() - started
    first = _outcomes(writers, region_ids)
    print(
        f"\noutage of {outage_s} s at {down_at:.1f} s ({reset} connections reset); writers done after {elapsed:.1f} s"
    )
    for region_id in region_ids:
        print(f"  {region_id}: {first.get(region_id, 'NO OUTCOME')}")
    assert crashes == [], "a writer ends with an outcome per region, never an error outside the retry-later category"
    assert sorted(first) == sorted(region_ids), "every region has an outcome"
    failed = {r: o for r, o in first.items() if o.startswith("FAILED")}
    if transparent:
        assert failed == {}, "an outage of a few seconds is ridden out by the store's retries"

    # The rerun: the regions missing from the commit log, written with the store back.
    committed = {c.region for c in iter_region_commits(store.repository(), store.branch, use_ledger=False)}
    missing = sorted(set(region_ids) - committed)
    assert set(missing) <= set(failed), "a region a writer reported written is in the commit log"
    rerun = _Writer(store, missing, tmp_path / "rerun.log")
    assert rerun.finish(time.monotonic() + WRITER_TIMEOUT_S) is None
    assert all(" written " in f" {line} " or " skipped " in f" {line} " for line in rerun.lines), rerun.lines
    print(f"  rerun of {len(missing)} regions missing from the commit log: {rerun.lines}")

    repo = store.repository()
    commits = [c for c in iter_region_commits(repo, store.branch, use_ledger=False) if c.key == KEY]
    per_region = {r: sum(c.region == r for c in commits) for r in region_ids}
    assert {r: n for r, n in per_region.items() if n != 1} == {}, "regions lost (0) or duplicated (>1)"
    ds = xr.open_zarr(repo.readonly_session(branch=store.branch).store, consolidated=False)
    for region_id in region_ids:
        region = demo_registry.get(region_id)
        window = ds.isel(latitude=region.rows, longitude=region.cols).load()
        for name, array in window.data_vars.items():
            expected = np.full(region.shape, region_value(demo_registry, region_id), dtype=array.dtype)
            np.testing.assert_array_equal(array.values, expected, err_msg=f"{name} of region {region_id}")


@pytest.mark.parametrize(
    ("settings", "rides_out"),
    [
        pytest.param({}, True, id="default-retries"),
        pytest.param({"request_max_tries": 1}, False, id="no-retries"),
    ],
)
@pytest.mark.slow
def test_one_write_started_in_an_outage_waits_for_the_store_or_fails_in_the_retry_later_category(
    settings: dict[str, int], rides_out: bool, proxy: TcpProxy, demo_registry: RegionRegistry
) -> None:
    """A region write begun while the store is gone: done once it is back, or StoreUnavailableError."""
    outage_s = 4.0
    store = _store(proxy.endpoint, f"one-write-{len(settings)}.icechunk", **settings)
    ensure_template(store, demo_registry.grid, {"code_version": "test"})
    region_id = demo_registry.ids[0]
    proxy.go_down()
    back = threading.Timer(outage_s, proxy.come_back)
    back.start()
    started = time.monotonic()
    try:
        if rides_out:
            result = write_region(
                store,
                demo_registry.grid,
                demo_registry.get(region_id),
                region_data(demo_registry, region_id),
                key=KEY,
                run_id="one-write",
            )
            assert result.status == "written"
        else:
            with pytest.raises(StoreUnavailableError, match=f"{store.lease_location()}|{region_id}"):
                write_region(
                    store,
                    demo_registry.grid,
                    demo_registry.get(region_id),
                    region_data(demo_registry, region_id),
                    key=KEY,
                    run_id="one-write",
                )
    finally:
        took = time.monotonic() - started
        back.join()
    print(f"\nwrite begun in a {outage_s} s outage, settings {settings or 'default'}: {took:.1f} s")
    if rides_out:
        assert took >= outage_s - 0.5, "it waited for the store"
    else:
        assert took < outage_s, "without retries it fails at once"


def test_the_store_resource_opens_the_repository_with_its_request_retries(proxy: TcpProxy) -> None:
    """``request_max_tries`` and ``request_max_backoff_ms`` reach Icechunk's storage and the lease client."""
    store = _store(proxy.endpoint, "settings.icechunk", request_max_tries=7, request_max_backoff_ms=2500)
    retries = store.repository(create=True).config.storage
    assert retries is not None and retries.retries is not None
    assert (retries.retries.max_tries, retries.retries.initial_backoff_ms, retries.retries.max_backoff_ms) == (
        7,
        100,
        2500,
    )
    assert store._client().meta.config.retries == {"mode": "standard", "total_max_attempts": 7}
    defaults = _store(proxy.endpoint, "settings.icechunk")
    assert (defaults.request_max_tries, defaults.request_max_backoff_ms) == (16, 10_000)

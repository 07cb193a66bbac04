"""Writer and committer processes of ``bench_commit_scale.py`` (spawned: importable by module name).

Every writer writes small regions through the project's own write path: ``write_region`` for
direct commits (with or without a commit lease), ``write_region_fork`` + ``commit_batch`` for
batch commits through an in-memory queue to one committer process, and the production path of
batch commits (``write_region_by_protocol`` with ``commit_protocol="batch"``: pending objects in
the bucket, whichever writer holds the commit lease commits) for ``handoff``. Each returns one
row per region to the parent through a queue.
"""

import os
import queue
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import xarray as xr

from resources.batch_commit import RegionFork, commit_batch, write_region_fork
from resources.batch_handoff import write_region_by_protocol
from resources.cloud_stores import S3IcechunkStore
from resources.local_store import LocalIcechunkStore
from resources.region_write import write_region
from resources.store import IcechunkStore
from risk_model.errors import CommitConflictError
from risk_model.grid import GridSpec, region_of_chunk
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey

KEY = BuildKey("bench-params", "bench-inputs", "bench-code")
#: The IO manager's retry of a region whose commit exhausted its rebase tries (its
#: ``conflict_retries`` and ``conflict_backoff_seconds`` defaults).
CONFLICT_RETRIES = 3
CONFLICT_BACKOFF_S = 2.0
#: The commit lease's object name, beside the writer leases.
COMMIT_LEASE = "commit"
_LEASE_FIRST_WAIT_S = 0.005
_LEASE_MAX_WAIT_S = 0.1
_LEASE_MAX_ROUNDS = 100_000


class CommitLeaseS3Store(S3IcechunkStore):
    """An S3 store whose commits take turns: ``commit()`` runs only while holding a lease object.

    The lease is a create-only object; a writer that finds it taken backs off (5 ms doubling to
    100 ms) and tries again. Candidate "commit lease" of the benchmark: it removes rebases, it
    does not remove the queue.
    """

    @contextmanager
    def commit_guard(self) -> Iterator[None]:
        delay = _LEASE_FIRST_WAIT_S
        for _ in range(_LEASE_MAX_ROUNDS):
            if self.create_lease_object(COMMIT_LEASE, str(os.getpid()).encode()) is not None:
                break
            time.sleep(delay)
            delay = min(delay * 2, _LEASE_MAX_WAIT_S)
        else:
            raise TimeoutError("the commit lease stayed taken")
        try:
            yield
        finally:
            self.delete_lease_object(COMMIT_LEASE)


def load_store(store_json: str) -> IcechunkStore:
    """The store of ``store_json``: a local repository if it has a path, else one on S3."""
    if '"path"' in store_json:
        return LocalIcechunkStore.model_validate_json(store_json)
    return S3IcechunkStore.model_validate_json(store_json)


#: ``bench_commit_scale.py --compute-s S --jitter J`` sets this: each region's compute takes
#: ``S * uniform(1 - J, 1 + J)`` seconds, spent asleep. A pod computes on CPUs of its own; the
#: sleep stands for that (it takes no CPU from the emulator or the other writers on this 2-core
#: machine), so only the write and commit path competes here, as on a cluster.
COMPUTE_ENV = "RISK_BENCH_COMPUTE"


def _simulated_compute(region_id: str) -> None:
    spec = os.environ.get(COMPUTE_ENV)
    if not spec:
        return
    seconds, jitter = (float(part) for part in spec.split(","))
    rng = random.Random(f"{region_id}-{seconds}-{jitter}")  # the same durations in every run
    time.sleep(seconds * rng.uniform(1 - jitter, 1 + jitter))


def region_dataset(grid: GridSpec, region_id: str, seed: int) -> tuple[Any, xr.Dataset, float]:
    """A region of random values (the compute stand-in) and the seconds it took to make.

    With ``RISK_BENCH_COMPUTE`` set (``"<seconds>,<jitter>"``), the region's compute also takes
    that long, asleep (see :data:`COMPUTE_ENV`).
    """
    started = time.perf_counter()
    _simulated_compute(region_id)
    iy, ix = (int(part[1:]) for part in region_id.split("_"))
    region = region_of_chunk(grid, iy, ix)
    rng = np.random.default_rng(seed)
    data = {v.name: (DIMS, rng.integers(1, 100, size=region.shape).astype(v.dtype)) for v in VARIABLES}
    ds = xr.Dataset(data, coords=coordinates(grid, region.rows, region.cols))
    return region, ds, time.perf_counter() - started


def direct_writer(protocol: str, store_json: str, grid_json: str, region_ids: list[str], start: Any, out: Any) -> None:
    """Write and commit each region with ``write_region`` (protocol ``direct`` or ``lease``)."""
    store = CommitLeaseS3Store.model_validate_json(store_json) if protocol == "lease" else load_store(store_json)
    grid = GridSpec.model_validate_json(grid_json)
    start.wait()
    for i, region_id in enumerate(region_ids):
        region, ds, compute_s = region_dataset(grid, region_id, i)
        began = time.perf_counter()
        lost_s = 0.0
        for retry in range(CONFLICT_RETRIES + 1):
            attempt = time.perf_counter()
            try:
                result = write_region(store, grid, region, ds, key=KEY, run_id=f"pid-{os.getpid()}")
                break
            except CommitConflictError:
                # What the IO manager does: a Dagster retry of the step after a short wait.
                if retry == CONFLICT_RETRIES:
                    raise
                time.sleep(CONFLICT_BACKOFF_S)
                lost_s += time.perf_counter() - attempt
        total = time.perf_counter() - began
        assert result.commit is not None
        rebases = int(result.commit.metadata.get("__icechunk", {}).get("rebase_attempts", 0))
        out.put(
            {
                "region": region_id,
                "status": result.status,
                "compute_s": compute_s,
                "write_s": result.seconds_writing,
                # A failed attempt (rebases exhausted) and its retry wait count as commit time.
                "commit_s": result.seconds_committing + lost_s,
                "total_s": total,
                "rebases": rebases,
                "conflict_retries": retry,
                "batch": 1,
                "done_at": time.time(),
            }
        )


def handoff_writer(store_json: str, grid_json: str, region_ids: list[str], start: Any, out: Any) -> None:
    """Write each region through the production path with ``commit_protocol="batch"``.

    The function the IO manager calls (:func:`~resources.batch_handoff.write_region_by_protocol`):
    fork, hand-off as a pending object, commit as the lease holder or wait for the region's commit.
    """
    store = load_store(store_json).model_copy(update={"commit_protocol": "batch"})
    grid = GridSpec.model_validate_json(grid_json)
    start.wait()
    for i, region_id in enumerate(region_ids):
        region, ds, compute_s = region_dataset(grid, region_id, i)
        began = time.perf_counter()
        result = write_region_by_protocol(store, grid, region, ds, key=KEY, run_id=f"pid-{os.getpid()}")
        total = time.perf_counter() - began
        assert result.commit is not None
        out.put(
            {
                "region": region_id,
                "status": result.status,
                "compute_s": compute_s,
                "write_s": result.seconds_writing,
                "commit_s": result.seconds_committing,
                "total_s": total,
                "rebases": int(result.commit.metadata.get("__icechunk", {}).get("rebase_attempts", 0)),
                "batch": 0,  # filled in from the ledger by the parent
                "done_at": time.time(),
            }
        )


def batch_writer(
    store_json: str,
    grid_json: str,
    region_ids: list[str],
    writer: int,
    start: Any,
    handoff: Any,
    receipt: Any,
    out: Any,
) -> None:
    """Write each region into a fork, hand it to the committer and wait until it is committed."""
    store = load_store(store_json)
    grid = GridSpec.model_validate_json(grid_json)
    start.wait()
    for i, region_id in enumerate(region_ids):
        region, ds, compute_s = region_dataset(grid, region_id, i)
        began = time.perf_counter()
        # The lease is held until the region is committed: maintenance must not collect the fork's chunks.
        with store.writer_lease():
            fork = write_region_fork(store, grid, region, ds, key=KEY, run_id=f"pid-{os.getpid()}")
            assert fork is not None
            handed = time.perf_counter()
            handoff.put((writer, fork))
            answer = receipt.get(timeout=600)
        done = time.perf_counter()
        out.put(
            {
                "region": region_id,
                "status": answer["status"],
                "compute_s": compute_s,
                "write_s": handed - began,
                "commit_s": done - handed,
                "total_s": done - began,
                "rebases": answer["rebases"],
                "batch": answer["batch"],
                "done_at": time.time(),
            }
        )


def committer(store_json: str, handoff: Any, receipts: list[Any], n_regions: int, batches: Any) -> None:
    """Commit every fork handed over, in batches of whatever has arrived, until ``n_regions`` are done."""
    store = load_store(store_json)
    # One writer lease for the committer's life (renewed in the background), not one per batch.
    with store.writer_lease():
        _commit_loop(store, handoff, receipts, n_regions, batches)


def _commit_loop(store: IcechunkStore, handoff: Any, receipts: list[Any], n_regions: int, batches: Any) -> None:
    done = 0
    while done < n_regions:
        pending: list[tuple[int, RegionFork]] = [handoff.get(timeout=600)]
        # Group commit: everything that arrived while the previous commit ran goes in this one.
        for _ in range(100_000):  # bounded: never more forks than writers are waiting
            try:
                pending.append(handoff.get_nowait())
            except queue.Empty:
                break
        result = commit_batch(store, [fork for _, fork in pending])
        batches.put(
            {
                "size": len(pending),
                "commit_s": result.seconds_committing,
                "rebases": result.rebase_attempts,
                "rebuilds": result.rebuilds,
            }
        )
        for writer, fork in pending:
            outcome = result.outcomes[fork.region]
            receipts[writer].put({"status": outcome.status, "rebases": result.rebase_attempts, "batch": len(pending)})
        done += len(pending)

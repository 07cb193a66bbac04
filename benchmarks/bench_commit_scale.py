"""Benchmark: commit cost against the number of concurrent writers, per commit protocol, on the S3 emulator.

N writer processes (spawned, started together behind a barrier) each write ``--per-writer``
small regions of a synthetic grid (64 x 64 px, one chunk per variable: the cost is the commit,
not the bytes) into a fresh repository on moto (``tests/_services.py``'s ``moto_s3``, made
atomic by ``tests/_moto_atomic.py``), through the project's own write path. Each writer gets a
contiguous block of regions. Protocols:

- ``direct`` (baseline, today's): ``write_region``: each region commits to the branch with
  ``rebase_with=ConflictDetector()``;
- ``lease``: the same, but commits take turns through a create-only commit-lease object;
- ``batch``: ``write_region_fork`` in the writer, the fork handed to one committer process that
  merges everything that has arrived and commits it with ``commit_batch`` (group commit); the
  writer waits for its region's commit, holding its writer lease. The hand-off is an in-memory
  queue: the protocol's ideal, not a deployable path;
- ``handoff``: the production path (``resources/batch_handoff.py``, what the IO manager calls
  with ``commit_protocol="batch"``): the fork handed over as a pending object in the bucket, and
  whichever writer takes the commit lease commits every pending fork; the others poll their
  pending object, then read their region's commit.

Direct writers retry a region whose commit exhausted its rebase tries as the IO manager does
(3 retries, 2 s apart). ``--storage local`` runs the same on a local repository (no ``lease``).

Recorded per region: rebase attempts, commit latency (for ``batch`` and ``handoff``: from hand-off to commit),
write time, compute-equivalent (making the region's arrays), the batch size; and per batch
commit its size and latency. ``--json`` writes every row for ``sim_scale.py``'s calibration.

Usage::

    .venv/bin/python benchmarks/bench_commit_scale.py [--writers 1 8 16] [--per-writer 4] \
        [--protocols direct lease batch handoff] [--storage s3|local] [--json var/commit_scale.json]
"""

import argparse
import json
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the moto helper lives with the tests

import _commit_workers  # noqa: E402
from _services import moto_s3, s3_store  # noqa: E402

from resources.batch_commit import commit_batch, write_region_fork  # noqa: E402
from resources.ledger import committed_regions  # noqa: E402
from resources.local_store import LocalIcechunkStore  # noqa: E402
from resources.store import IcechunkStore  # noqa: E402
from resources.template import ensure_template  # noqa: E402
from risk_model.grid import GridSpec  # noqa: E402

BUCKET = "commit-scale"
#: The production region's compute time on one core (docs/benchmarks.md, convolution section).
PRODUCTION_COMPUTE_S = 64.0


def bench_grid(side: int) -> GridSpec:
    """A ``side`` x ``side``-region grid of 64 x 64-px regions near the demo grid."""
    return GridSpec(
        name="commit-scale",
        crs="EPSG:4326",
        transform=(0.000308, 0.0, -123.2, 0.0, 0.000308, 37.5),
        shape=(side * 64, side * 64),
        chunks=(64, 64),
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _collect(out: Any, n: int, procs: list[Any], label: str) -> list[dict[str, Any]]:
    """``n`` rows from ``out``; fails at once if a process died (instead of waiting for its rows)."""
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 1800
    while len(rows) < n:
        try:
            rows.append(out.get(timeout=5))
        except queue.Empty:
            dead = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {len(rows)} of {n} regions done; exit codes {dead}") from None
    return rows


def run(
    protocol: str, writers: int, per_writer: int, endpoint: str, grid: GridSpec, local_dir: Path | None = None
) -> dict[str, Any]:
    """One measurement: ``writers`` processes under ``protocol`` on a fresh repository (local if ``local_dir``)."""
    name = f"{protocol}-{writers}-{uuid.uuid4().hex[:6]}"
    store: IcechunkStore = (
        s3_store(endpoint, BUCKET, name) if local_dir is None else LocalIcechunkStore(path=str(local_dir / name))
    )
    ensure_template(store, grid, {})
    ids = [f"y{i // (grid.shape[1] // 64)}_x{i % (grid.shape[1] // 64)}" for i in range(writers * per_writer)]
    blocks = [ids[w * per_writer : (w + 1) * per_writer] for w in range(writers)]
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    batches = ctx.Queue()
    procs = []
    store_json, grid_json = store.model_dump_json(), grid.model_dump_json()
    if protocol == "batch":
        handoff = ctx.Queue()
        receipts = [ctx.Queue() for _ in range(writers)]
        procs.append(
            ctx.Process(target=_commit_workers.committer, args=(store_json, handoff, receipts, len(ids), batches))
        )
        for w, block in enumerate(blocks):
            procs.append(
                ctx.Process(
                    target=_commit_workers.batch_writer,
                    args=(store_json, grid_json, block, w, start, handoff, receipts[w], out),
                )
            )
    elif protocol == "handoff":
        procs.extend(
            ctx.Process(target=_commit_workers.handoff_writer, args=(store_json, grid_json, block, start, out))
            for block in blocks
        )
    else:
        procs.extend(
            ctx.Process(target=_commit_workers.direct_writer, args=(protocol, store_json, grid_json, block, start, out))
            for block in blocks
        )
    for proc in procs:
        proc.start()
    time.sleep(8 + 0.5 * writers)  # let every process import before the barrier opens
    start.set()
    rows = _collect(out, len(ids), procs, f"{protocol} x {writers}")
    # From the first region's start to the last region's commit: a process slow to import (this
    # machine is shared) must not count as commit time.
    wall = max(r["done_at"] for r in rows) - min(r["done_at"] - r["total_s"] for r in rows)
    for proc in procs:
        proc.join(timeout=60)
        if proc.exitcode != 0:
            raise RuntimeError(f"{protocol} x {writers}: a process exited with {proc.exitcode}")
    batch_rows: list[dict[str, Any]] = []
    while not batches.empty():
        batch_rows.append(batches.get())
    ledger = committed_regions(store.repository(), store.branch)
    assert sorted(ledger) == sorted(ids), f"{protocol} x {writers}: the ledger lists {len(ledger)} of {len(ids)}"
    assert all(r["status"] == "written" for r in rows)
    if protocol == "handoff":
        sizes = {c.snapshot_id: 0 for c in ledger.values()}
        for record in ledger.values():
            sizes[record.snapshot_id] += 1
        for r in rows:
            r["batch"] = sizes[ledger[r["region"]].snapshot_id]
        batch_rows = [{"size": size} for size in sizes.values()]
    commit = [r["commit_s"] for r in rows]
    rebases = [r["rebases"] for r in rows]
    return {
        "protocol": protocol,
        "writers": writers,
        "regions": len(ids),
        "wall_s": wall,
        "commits": len({c.snapshot_id for c in ledger.values()}),
        "commit_p50_s": statistics.median(commit),
        "commit_p95_s": _pct(commit, 0.95),
        "commit_mean_s": statistics.fmean(commit),
        "rebases_mean": statistics.fmean(rebases),
        "rebases_max": max(rebases),
        "write_mean_s": statistics.fmean(r["write_s"] for r in rows),
        "total_mean_s": statistics.fmean(r["total_s"] for r in rows),
        "compute_mean_s": statistics.fmean(r["compute_s"] for r in rows),
        "batch_mean": statistics.fmean(r["batch"] for r in rows),
        "conflict_retries": sum(r.get("conflict_retries", 0) for r in rows),
        "rows": rows,
        "batches": batch_rows,
    }


def batch_sizes(sizes: list[int], endpoint: str, grid: GridSpec) -> list[dict[str, Any]]:
    """Batch commit cost against batch size: one process writes ``k`` forks, then one ``commit_batch``.

    No concurrency here: this is the committer's own cost of merging and committing ``k`` regions,
    for sizes beyond what 16 writers produce.
    """
    out = []
    for k in sizes:
        store = s3_store(endpoint, BUCKET, f"batch-size-{k}-{uuid.uuid4().hex[:6]}")
        ensure_template(store, grid, {})
        nx = grid.shape[1] // 64
        forks = []
        for i in range(k):
            region, ds, _ = _commit_workers.region_dataset(grid, f"y{i // nx}_x{i % nx}", i)
            fork = write_region_fork(store, grid, region, ds, key=_commit_workers.KEY, run_id="bench")
            assert fork is not None
            forks.append(fork)
        result = commit_batch(store, forks)
        assert len(result.written) == k
        ledger = committed_regions(store.repository(), store.branch)
        assert len(ledger) == k and len({c.snapshot_id for c in ledger.values()}) == 1
        out.append({"size": k, "commit_s": result.seconds_committing, "rebases": result.rebase_attempts})
        print(f"# batch of {k}: commit {result.seconds_committing:.2f} s", flush=True)
    return out


def main() -> None:
    """Measure every (protocol, writers) pair on one moto server and print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, nargs="*", default=[1, 8, 16])
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--per-writer", type=int, default=4)
    parser.add_argument("--protocols", nargs="+", default=["direct", "lease", "batch"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--compute-s",
        type=float,
        default=0.0,
        help="each region's compute takes this long, asleep, as on a pod's own CPUs (0: none, a burst of commits)",
    )
    parser.add_argument("--jitter", type=float, default=0.1, help="compute times vary by this fraction, uniformly")
    parser.add_argument(
        "--storage", choices=["s3", "local"], default="s3", help="the S3 emulator, or a local repository (no lease)"
    )
    args = parser.parse_args()
    side = 1
    while side * side < max([*args.writers, 1]) * args.per_writer or side * side < max([*args.batch_sizes, 1]):
        side += 1
    grid = bench_grid(side)
    if args.compute_s > 0:
        # Read by every spawned writer (benchmarks/_commit_workers.py).
        os.environ[_commit_workers.COMPUTE_ENV] = f"{args.compute_s},{args.jitter}"
    results = []
    sizes: list[dict[str, Any]] = []
    with moto_s3(BUCKET) as endpoint:
        sizes = batch_sizes(args.batch_sizes, endpoint, grid)
        for writers in args.writers:
            for protocol in args.protocols:
                local_dir = Path(tempfile.mkdtemp(prefix="commit-scale-")) if args.storage == "local" else None
                result = run(protocol, writers, args.per_writer, endpoint, grid, local_dir)
                results.append(result)
                print(
                    f"# {protocol} x {writers}: commit p50 {result['commit_p50_s']:.2f} s, "
                    f"rebases {result['rebases_mean']:.1f}/{result['rebases_max']}, wall {result['wall_s']:.1f} s, "
                    f"{result['conflict_retries']} regions retried after exhausting their rebases",
                    flush=True,
                )
    if sizes:
        print()
        print("| batch size | commit_batch s | ratio to a batch of the first size |")
        print("|---|---|---|")
        for row in sizes:
            print(f"| {row['size']} | {row['commit_s']:.2f} | {row['commit_s'] / sizes[0]['commit_s']:.2f} |")
    base = {r["writers"]: r for r in results if r["protocol"] == "direct"}
    print()
    where = "moto on 127.0.0.1" if args.storage == "s3" else "a local repository"
    print(f"{args.per_writer} regions of 64 x 64 px per writer; {where}; one fresh repository per row")
    print()
    print(
        "| protocol | writers | commits | rebases mean / max | commit p50 / p95 s | write+commit mean s | wall s "
        "| commit p50 vs direct | commit mean, % of compute | regions per commit (mean over regions) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        # Overhead against the compute each region took here if it was simulated, else a production region's.
        compute_s = r["compute_mean_s"] if args.compute_s > 0 else PRODUCTION_COMPUTE_S
        ratio = r["commit_p50_s"] / base[r["writers"]]["commit_p50_s"] if r["writers"] in base else float("nan")
        print(
            f"| {r['protocol']} | {r['writers']} | {r['commits']} | {r['rebases_mean']:.1f} / {r['rebases_max']} "
            f"| {r['commit_p50_s']:.2f} / {r['commit_p95_s']:.2f} | {r['total_mean_s']:.2f} | {r['wall_s']:.1f} "
            f"| {ratio:.2f} | {100 * r['commit_mean_s'] / compute_s:.1f} | {r['batch_mean']:.1f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": results, "batch_sizes": sizes}, indent=1))


if __name__ == "__main__":
    main()

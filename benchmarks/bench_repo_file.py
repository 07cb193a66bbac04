"""Benchmark: what shrinks Icechunk's repository file, and with it every commit: expiry, GC, or neither.

Every commit rewrites the repository file (``repo``), which lists every snapshot not yet
expired, the latest updates (at most ``num_updates_per_repo_info_file``, 1,000 by default) and
the metadata of the listed snapshots (a maintenance checkpoint's ledger table among them). A local
repository gets ``--commits`` metadata-only region commits cycling over ``--regions`` region ids
(conus-30m has 405), then, in order:

1. the baseline: the repository file's size, how many snapshots it lists, commit latency;
2. after ``maintain`` with expiry only (ledger checkpoint + ``expire_snapshots``, no GC);
3. after ``maintain`` with garbage collection as well;
4. the same history in a repository configured with ``num_updates_per_repo_info_file=100``,
   after the same expiry (how much of what is left is the update log).

Commit latency is the median of ``--latency`` metadata-only region commits; ratios are
against step 1, in the same run.

Usage::

    .venv/bin/python benchmarks/bench_repo_file.py [--commits 2000] [--regions 405]
"""

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import icechunk

from resources.ledger import REGION_KIND
from resources.local_store import LocalIcechunkStore
from resources.maintenance import maintain


def _commit(repo: icechunk.Repository, region: str) -> None:
    session = repo.writable_session("main")
    session.commit(
        f"region {region}",
        metadata={
            "kind": REGION_KIND,
            "region": region,
            "params_version": "p",
            "inputs_version": "i",
            "code_version": "c",
            "run_id": "bench",
            "written_at": "2026-12-02T00:00:00+00:00",
        },
        allow_empty=True,
    )


def _latency(repo: icechunk.Repository, n: int) -> float:
    times = []
    for i in range(n):
        started = time.perf_counter()
        _commit(repo, f"latency_{i}")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _state(store: LocalIcechunkStore, n: int) -> tuple[int, int, int, float]:
    """Repository file bytes, snapshots it lists, bytes under ``overwritten/``, commit latency."""
    root = Path(store.path)
    repo = store.repository()
    listed = len(repo.inspect_repo_info()["snapshots"])  # before the latency commits add theirs
    size = (root / "repo").stat().st_size
    overwritten = sum(p.stat().st_size for p in (root / "overwritten").glob("*"))
    return size, listed, overwritten, _latency(repo, n)


def _build(store: LocalIcechunkStore, commits: int, regions: int, config: icechunk.RepositoryConfig | None) -> None:
    if config is None:
        repo = store.repository(create=True)
    else:
        repo = icechunk.Repository.create(store.storage(), config=config)
        repo.save_config()  # persisted, so maintenance (opening with the store's settings) writes the same way
    for i in range(commits):
        _commit(repo, f"y{(i % regions) // 100}_x{(i % regions) % 100}")


def main() -> None:
    """Build the histories, measure each state, print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--regions", type=int, default=405)
    parser.add_argument("--latency", type=int, default=20, help="commits timed per state (median)")
    args = parser.parse_args()
    rows: list[tuple[str, tuple[int, int, int, float], str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalIcechunkStore(path=str(Path(tmp) / "repo.icechunk"))
        _build(store, args.commits, args.regions, None)
        rows.append(("before maintenance (baseline)", _state(store, args.latency), ""))
        report = maintain(store, expire_older_than=datetime.now(UTC), garbage_collect=False)
        rows.append(("after checkpoint + expiry, no GC", _state(store, args.latency), f"{report.snapshots_expired}"))
        report = maintain(store, expire_older_than=datetime.now(UTC), gc_margin=timedelta(0))
        gc = report.gc
        rows.append(
            (
                "after checkpoint + expiry + GC",
                _state(store, args.latency),
                f"{report.snapshots_expired}; GC deleted {gc.snapshots_deleted if gc else 0} snapshot files",
            )
        )
        small = LocalIcechunkStore(path=str(Path(tmp) / "small-log.icechunk"))
        _build(small, args.commits, args.regions, icechunk.RepositoryConfig(num_updates_per_repo_info_file=100))
        assert small.repository().config.num_updates_per_repo_info_file == 100
        report = maintain(small, expire_older_than=datetime.now(UTC), garbage_collect=False)
        rows.append(
            (
                "`num_updates_per_repo_info_file=100`, after checkpoint + expiry",
                _state(small, args.latency),
                f"{report.snapshots_expired}",
            )
        )
    base = rows[0][1]
    print(
        f"{args.commits} region commits over {args.regions} regions; local disk; "
        f"commit latency median of {args.latency}"
    )
    print()
    print("| state | repo file bytes (ratio) | snapshots listed | `overwritten/` MB | commit s (ratio) | expired |")
    print("|---|---|---|---|---|---|")
    for name, (size, listed, overwritten, latency), note in rows:
        print(
            f"| {name} | {size} ({size / base[0]:.2f}) | {listed} | {overwritten / 1e6:.0f} "
            f"| {latency:.4f} ({latency / base[3]:.2f}) | {note} |"
        )


if __name__ == "__main__":
    main()

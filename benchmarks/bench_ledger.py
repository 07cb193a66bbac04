"""Benchmark: reading the ledger with and without a ledger table, and what maintenance saves.

Every region run asks the ledger "is this region committed for its key?" (twice: the asset
and the IO manager), which walks the branch's history. A commit carrying a ledger table (each
release's pyramid commit, each maintenance checkpoint) ends that walk. This builds a local
repository with N metadata-only region commits (two versions of N/2 regions), then times:

- baseline: ``committed_regions`` walking the whole history;
- the same after a ledger-table commit and 10 newer region commits;
- ``find_commit`` of the oldest region, both ways;
- a commit's latency before and after ``maintain`` (expiry shortens what the repository lists).

Usage::

    .venv/bin/python benchmarks/bench_ledger.py [--commits 4000]
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import icechunk

from resources.ledger import LEDGER_KEY, REGION_KIND, committed_regions, find_commit, ledger_table
from resources.local_store import LocalIcechunkStore
from resources.maintenance import maintain
from risk_model.versions import BuildKey


def _commit(repo: icechunk.Repository, region: str, version: str) -> None:
    session = repo.writable_session("main")
    session.commit(
        f"region {region}",
        metadata={
            "kind": REGION_KIND,
            "region": region,
            "params_version": version,
            "inputs_version": "i",
            "code_version": "c",
            "run_id": "bench",
            "written_at": "2026-11-25T00:00:00+00:00",
        },
        allow_empty=True,
    )


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _commit_latency(repo: icechunk.Repository, n: int = 20) -> float:
    times = []
    for i in range(n):
        started = time.perf_counter()
        _commit(repo, f"y0_x{i}", "latency")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Build the fixture, time the reads and print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=4000)
    args = parser.parse_args()
    half = args.commits // 2
    regions = [f"y{i // 100}_x{i % 100}" for i in range(half)]
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalIcechunkStore(path=str(Path(tmp) / "repo.icechunk"))
        repo = store.repository(create=True)
        for version in ("a", "b"):
            for region in regions:
                _commit(repo, region, version)
        oldest = regions[0]
        key = BuildKey("b", "i", "c")

        full = _best(lambda: committed_regions(repo, "main"))
        find_full = _best(lambda: find_commit(repo, "main", oldest, key))
        table = ledger_table(committed_regions(repo, "main"))
        repo.writable_session("main").commit(
            "ledger checkpoint", metadata={"kind": "checkpoint", LEDGER_KEY: table}, allow_empty=True
        )
        for region in regions[-10:]:
            _commit(repo, region, "b")
        with_table = _best(lambda: committed_regions(repo, "main"))
        find_table = _best(lambda: find_commit(repo, "main", oldest, key))
        assert {r: c.snapshot_id for r, c in committed_regions(repo, "main").items()} == {
            r: c.snapshot_id for r, c in committed_regions(repo, "main", use_ledger=False).items()
        }, "the table gives the same ledger as the full walk"

        before = _commit_latency(repo)
        report = maintain(store, expire_older_than=datetime.now(UTC), gc_margin=timedelta(0))
        after = _commit_latency(store.repository())

    print(f"{args.commits} region commits ({half} regions x 2 versions); best of 3; local disk")
    print()
    print("| measure | seconds | ratio to baseline |")
    print("|---|---|---|")
    print(f"| committed_regions, whole history (baseline) | {full:.3f} | 1.00 |")
    print(f"| committed_regions, ledger table + 10 newer commits | {with_table:.3f} | {with_table / full:.3f} |")
    print(f"| find_commit of the oldest region, whole history | {find_full:.3f} | {find_full / full:.3f} |")
    print(f"| find_commit of the oldest region, ledger table | {find_table:.3f} | {find_table / full:.3f} |")
    print()
    print("| measure | median seconds | ratio |")
    print("|---|---|---|")
    print(f"| commit latency before maintenance (baseline) | {before:.4f} | 1.00 |")
    print(
        f"| commit latency after maintain ({report.snapshots_expired} snapshots expired) | {after:.4f} | "
        f"{after / before:.2f} |"
    )


if __name__ == "__main__":
    main()

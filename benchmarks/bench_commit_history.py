"""Benchmark: commit latency and the "already committed?" check against the length of a branch's history.

A repository gets ``--commits`` metadata-only region commits (one per synthetic region id, as
many small region commits leave behind), and at every ``--step`` the benchmark times, median
of ``--repeat``:

- a real region commit through ``write_region`` (chunks, mark, commit), split into its
  whole latency and the ``commit()`` call alone;
- the per-region check "is this region already committed for this key?" for a region that is
  not (the usual case while building, and the worst case for a walk): the history walk the
  check used to make (``iter_region_commits`` down to the root), and ``find_commit`` as it is
  now (the region's mark, read from the tip's snapshot; see ``resources/ledger.py``).

Ratios are against the row with the fewest prior commits, in the same run.

With ``--expire-every N`` history is kept bounded as the ``history_maintenance`` sensor keeps
it: whenever N snapshots were added since the last expiry (counted as the sensor counts them,
:func:`resources.history.history_since_expiry`), the benchmark runs the same
:func:`resources.maintenance.maintain` call as the automatic ``maintain_repository`` run
(ledger checkpoint, expiry of everything older than ``--keep-hours``, no garbage collection).
Each row then also reports how many snapshots the repository file lists, its size (local
storage) and the seconds spent in maintenance since the previous row.

Usage::

    .venv/bin/python benchmarks/bench_commit_history.py --storage local --commits 10000 --step 2000
    .venv/bin/python benchmarks/bench_commit_history.py --storage local --commits 10000 --step 2000 --expire-every 500
    .venv/bin/python benchmarks/bench_commit_history.py --storage s3 --commits 1000 --step 250
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the moto helper lives with the tests

from _commit_workers import KEY, region_dataset  # noqa: E402
from _services import moto_s3, s3_store  # noqa: E402
from bench_commit_scale import bench_grid  # noqa: E402

from resources.history import history_since_expiry  # noqa: E402
from resources.ledger import REGION_KIND, find_commit, iter_region_commits  # noqa: E402
from resources.local_store import LocalIcechunkStore  # noqa: E402
from resources.maintenance import maintain  # noqa: E402
from resources.region_write import write_region  # noqa: E402
from resources.store import IcechunkStore  # noqa: E402
from resources.template import ensure_template  # noqa: E402

BUCKET = "commit-history"


@contextmanager
def _store(kind: str) -> Iterator[IcechunkStore]:
    if kind == "s3":
        with moto_s3(BUCKET) as endpoint:
            yield s3_store(endpoint, BUCKET, "history")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield LocalIcechunkStore(path=str(Path(tmp) / "repo.icechunk"))


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _walk_check(store: IcechunkStore, region: str) -> object:
    """The check as it was: walk the history (down to a ledger table or the root) for the region's newest commit."""
    return next((r for r in iter_region_commits(store.repository(), store.branch) if r.region == region), None)


def _repo_file_bytes(store: IcechunkStore) -> int | None:
    """Size of Icechunk's repository file (local storage only; ``None`` elsewhere)."""
    if isinstance(store, LocalIcechunkStore):
        return (Path(store.path) / "repo").stat().st_size
    return None


def _listed_snapshots(store: IcechunkStore) -> int:
    """How many snapshots the repository file lists (icechunk's debugging view of it)."""
    return len(store.repository().inspect_repo_info()["snapshots"])


def main() -> None:
    """Grow the history step by step, time at each step, print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--step", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--expire-every",
        type=int,
        default=0,
        help="run maintenance (checkpoint + expiry, no GC) whenever this many snapshots were added since the last "
        "expiry, as the history_maintenance sensor does; 0: never",
    )
    parser.add_argument("--keep-hours", type=float, default=0.0, help="maintenance keeps snapshots this recent")
    parser.add_argument(
        "--filler-regions",
        type=int,
        default=0,
        help="the filler commits cycle over this many region ids, as rebuilds of a grid's regions do (conus-30m "
        "has 405); 0: a new region id per commit. A maintenance checkpoint carries the ledger table of every "
        "region, and the repository file lists it",
    )
    args = parser.parse_args()
    side = 1
    while side * side < (args.commits // args.step + 1) * args.repeat + 1:
        side += 1
    grid = bench_grid(side)
    ids = iter(f"y{i // side}_x{i % side}" for i in range(side * side))
    absent = next(ids)  # never committed: the check's worst case for a walk
    rows = []
    with _store(args.storage) as store:
        ensure_template(store, grid, {})
        repo = store.repository()
        made = 0
        filler = 0
        maintenance_s = 0.0
        maintenance_runs = 0
        started = time.perf_counter()

        def maybe_maintain() -> None:
            nonlocal maintenance_s, maintenance_runs
            if not args.expire_every:
                return
            since = history_since_expiry(store.repository(), limit=args.expire_every)
            if since.snapshots < args.expire_every:
                return
            began = time.perf_counter()
            maintain(
                store,
                expire_older_than=datetime.now(UTC) - timedelta(hours=args.keep_hours),
                garbage_collect=False,
            )
            maintenance_s += time.perf_counter() - began
            maintenance_runs += 1

        for target in range(0, args.commits + 1, args.step):
            for _ in range(target - made):
                if filler % 50 == 0:  # as a sensor would look now and then, not before every commit
                    maybe_maintain()
                session = repo.writable_session(store.branch)
                session.commit(
                    f"filler {filler}",
                    metadata={
                        "kind": REGION_KIND,
                        "region": f"filler_{filler % args.filler_regions if args.filler_regions else filler}",
                        "params_version": "old",
                        "inputs_version": "old",
                        "code_version": "old",
                        "run_id": "bench",
                        "written_at": "2026-12-01T00:00:00+00:00",
                    },
                    allow_empty=True,
                )
                filler += 1
            made = target
            maybe_maintain()
            filled_at = time.perf_counter() - started
            latencies, commits = [], []
            for _ in range(args.repeat):
                region_id = next(ids)
                region, ds, _ = region_dataset(grid, region_id, 0)
                began = time.perf_counter()
                result = write_region(store, grid, region, ds, key=KEY, run_id="bench")
                latencies.append(time.perf_counter() - began)
                commits.append(result.seconds_committing)
                made += 1
            # Each timing opens the repository afresh, as a region run in a new pod does: nothing cached.
            walk = _median(lambda: _walk_check(store, absent), args.repeat)
            mark = _median(lambda: find_commit(store.repository(), store.branch, absent, KEY), args.repeat)
            listed, size = _listed_snapshots(store), _repo_file_bytes(store)
            rows.append(
                (
                    made,
                    statistics.median(latencies),
                    statistics.median(commits),
                    walk,
                    mark,
                    filled_at,
                    listed,
                    size,
                    maintenance_runs,
                    maintenance_s,
                )
            )
            print(
                f"# {made} commits ({filled_at:.0f} s): write {rows[-1][1]:.3f} s, commit {rows[-1][2]:.4f} s, "
                f"walk {walk:.4f} s, mark {mark:.4f} s, {listed} snapshots listed, repo file {size} B, "
                f"{maintenance_runs} maintenance runs ({maintenance_s:.1f} s)",
                flush=True,
            )
    base = rows[0]
    print()
    print(
        f"{args.storage} storage; median of {args.repeat}; ratios against the first row; "
        + (
            f"maintenance every {args.expire_every} snapshots (keep {args.keep_hours} h, no GC)"
            if args.expire_every
            else "no maintenance"
        )
        + f"; filler regions: {args.filler_regions or 'one per commit'}"
    )
    print()
    print(
        "| prior commits | write_region s (ratio) | commit() s (ratio) | history walk s (ratio) "
        "| find_commit via mark s (ratio) | snapshots listed | repo file bytes | maintenance runs (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for made, write, commit, walk, mark, _, listed, size, runs, spent in rows:
        print(
            f"| {made} | {write:.3f} ({write / base[1]:.2f}) | {commit:.4f} ({commit / base[2]:.2f}) "
            f"| {walk:.4f} ({walk / base[3]:.2f}) | {mark:.4f} ({mark / base[4]:.2f}) | {listed} "
            f"| {size if size is not None else '-'} | {runs} ({spent:.0f}) |"
        )
    print()
    print(f"building the history took {rows[-1][5]:.0f} s")


if __name__ == "__main__":
    main()

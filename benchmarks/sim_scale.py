"""Simulation: commit protocols and the whole CONUS build at 400 pods, calibrated on measurements here.

Pure Python, seeded, discrete-event. Three commit protocols, as measured by
``bench_commit_scale.py`` (whose ``--json`` output calibrates this):

- ``direct``: optimistic commits to the branch. A commit attempt costs one flush ``F(n)``
  (``n``: writers committing at that moment) and lands only if no other commit landed since
  its base; otherwise it rebases onto the new tip and tries again (Icechunk's loop,
  ``rebase_tries`` of them). ``F(n)`` is the measured ``commit seconds / (1 + rebases)`` at
  1, 8 and 16 writers, interpolated linearly in ``n``.
- ``lease``: commits take turns; each holds the lease for the measured one-writer lease commit.
- ``free``: commits cost nothing (the yardstick: what the rest of the build costs);
- ``batch``: one committer; whenever it is idle it commits every fork handed over so far in
  one commit costing ``T(k) = a + b k`` (least squares on the measured batch commits), and each
  region's writer waits for its batch.
- ``handoff``: batch commits as production runs them (``resources/batch_handoff.py``): a writer
  puts its fork as a pending object (:data:`HANDOFF_PUT_S`), whoever holds the commit lease
  commits every pending fork in one round costing ``T(k)`` plus the lease and reading and
  deleting the pending objects (:data:`ROUND_LEASE_S`, :data:`ROUND_PER_FORK_S`), and the other
  writers learn that their region landed at their next poll of their pending object (0.2 s,
  doubling to 1 s).

Validation (``--validate``): the bench's own setting (N writers x R regions, each region's
non-commit time as measured) is simulated and compared with the measured commit p50 and
rebase mean at 8 and 16 writers.

The CONUS build: ``--regions`` production regions on ``--pods`` pods. Each pod start costs
``--pod-start`` seconds; a region computes for the measured 64 s (times a lognormal factor of
``--compute-sigma``), writes its chunks at the measured write bandwidth, commits by the
protocol. Spot preemptions arrive per pod as a Poisson process of ``--preempt-per-hour``; a
region whose pod is preempted before its commit (or hand-off) is retried on a new pod.

Usage::

    .venv/bin/python benchmarks/sim_scale.py --calibration var/commit_scale.json --validate
    .venv/bin/python benchmarks/sim_scale.py --calibration var/commit_scale.json --regions 405 --pods 400
"""

import argparse
import heapq
import itertools
import json
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: One production region: compute seconds on one core (docs/benchmarks.md, convolution section).
PRODUCTION_COMPUTE_S = 64.0
#: One production region's arrays, uncompressed: 6000 x 4500 px x (4 + 4 + 4 + 1) bytes.
PRODUCTION_REGION_MB = 351.0
#: write_region's measured bandwidth, encode + write + commit (docs/benchmarks.md, same-run ratio).
WRITE_MB_PER_S = 37.0


#: Hand-off costs, from the profile of one committer round alone on the emulator (14 forks:
#: lease 0.06 s, reading the pending objects 0.14 s, deleting them 0.12 s; docs/scale.md section 2).
ROUND_LEASE_S = 0.06
ROUND_PER_FORK_S = (0.14 + 0.12) / 14
#: One pending-object PUT: half of taking the lease (a read and a conditional write), same profile.
HANDOFF_PUT_S = 0.03
#: A waiter's polls of its pending object: the first after 0.2 s, doubling up to 1 s apart.
POLL_FIRST_S, POLL_MAX_S = 0.2, 1.0


def _discovered(handed_at: float, landed_at: float) -> float:
    """When a waiter that handed its fork over at ``handed_at`` sees the round that landed at ``landed_at``."""
    t, step = handed_at, POLL_FIRST_S
    for _ in range(100_000):  # bounded: a wait of hours at 1 s per poll
        t += step
        if t >= landed_at:
            return t
        step = min(2 * step, POLL_MAX_S)
    raise RuntimeError("a waiter polled for too long")


@dataclass(frozen=True)
class Calibration:
    """The measured costs the simulation runs on (seconds)."""

    #: per-attempt flush cost of a direct commit at 1, 8, 16 ... concurrent writers
    flush_by_writers: dict[int, float]
    #: one lease commit, uncontended, lease objects included
    lease_commit_s: float
    #: batch commit cost a + b k
    batch_a: float
    batch_b: float
    #: each protocol's measured non-commit time per small region, by writers (for validation)
    work_s: dict[str, dict[int, float]] = field(default_factory=dict)
    #: the measured results to validate against: protocol -> writers -> (commit p50, rebases mean)
    measured: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    per_writer: int = 4
    #: batch commit cost fitted on the batches of the run with n writers (the machine's load included)
    batch_by_writers: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: the cheapest batch commit measured alone: the floor of ``T(k)``
    batch_floor: float = 0.0

    def flush(self, n: int) -> float:
        """``F(n)``: linear interpolation in the measured points, constant past the last one."""
        points = sorted(self.flush_by_writers.items())
        if n <= points[0][0]:
            return points[0][1]
        for (n0, f0), (n1, f1) in itertools.pairwise(points):
            if n <= n1:
                return f0 + (f1 - f0) * (n - n0) / (n1 - n0)
        return points[-1][1]

    def batch(self, k: int, load: int = 1) -> float:
        """``T(k)``: one batch commit of ``k`` regions, alone or (``load`` > 1) as measured with ``load`` writers."""
        if load > 1 and load in self.batch_by_writers:
            a, b = self.batch_by_writers[load]
            return a + b * k
        return max(self.batch_a + self.batch_b * k, self.batch_floor)

    def slowdown(self, n: int) -> float:
        """How much slower every commit is with ``n`` writers sharing this machine: ``F(n) / F(1)``."""
        return self.flush(n) / self.flush(1)

    @classmethod
    def from_bench(cls, paths: list[Path]) -> "Calibration":
        """Read ``bench_commit_scale.py --json`` outputs (runs and batch sizes)."""
        results: list[dict[str, Any]] = []
        size_rows: list[dict[str, Any]] = []
        for path in paths:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, list):  # an older output: runs only
                loaded = {"runs": loaded, "batch_sizes": []}
            results.extend(loaded["runs"])
            size_rows.extend(loaded["batch_sizes"])
        flush: dict[int, float] = {}
        work: dict[str, dict[int, float]] = {}
        measured: dict[str, dict[int, tuple[float, float]]] = {}
        lease = math.nan
        sizes: list[tuple[int, float]] = []
        by_writers: dict[int, list[tuple[int, float]]] = {}
        per_writer = 4
        for r in results:
            proto, n, rows = r["protocol"], int(r["writers"]), r["rows"]
            per_writer = r["regions"] // n
            work.setdefault(proto, {})[n] = statistics.fmean(row["total_s"] - row["commit_s"] for row in rows)
            measured.setdefault(proto, {})[n] = (r["commit_p50_s"], r["rebases_mean"])
            if proto == "direct":
                flush[n] = statistics.median(row["commit_s"] / (1 + row["rebases"]) for row in rows)
            elif proto == "lease" and n == 1:
                lease = statistics.median(row["commit_s"] for row in rows)
            elif proto == "batch":
                by_writers[n] = [(b["size"], b["commit_s"]) for b in r["batches"]]
        # T(k) alone: the batch-size runs (one process, no concurrent writers) when there are any.
        sizes = [(b["size"], b["commit_s"]) for b in size_rows] or [p for rows in by_writers.values() for p in rows]
        a, b = _least_squares(sizes)
        return cls(
            flush,
            lease,
            a,
            b,
            work,
            measured,
            per_writer,
            {n: _least_squares(rows) for n, rows in by_writers.items()},
            min(y for _, y in sizes),
        )


def _least_squares(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Intercept and slope of ``y = a + b x`` (slope 0 with fewer than two distinct x)."""
    xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return my, 0.0
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, max(b, 0.0)


@dataclass
class Outcome:
    """What one simulated run produced."""

    wall_s: float
    commit_s: list[float]
    rebases: list[int]
    compute_s: list[float]
    batches: list[int] = field(default_factory=list)
    preemptions: int = 0
    pod_starts: int = 0

    def overhead_pct(self) -> float:
        """Mean commit wait as a percentage of mean compute."""
        return 100 * statistics.fmean(self.commit_s) / statistics.fmean(self.compute_s)

    def p50(self) -> float:
        """Median commit wait."""
        return statistics.median(self.commit_s)


class Committer:
    """The shared branch and its commit protocol, driven by the event loop."""

    def __init__(
        self, protocol: str, cal: Calibration, push: Callable[[float, Callable[[float], None]], None], load: int = 1
    ) -> None:
        self.protocol = protocol
        #: writers sharing the machine (the bench's emulator); 1 for pods with their own CPUs
        self.load = load
        self.cal = cal
        self.push = push
        self.version = 0
        self.committing = 0
        self.lease_queue: list[Callable[[float], None]] = []
        self.lease_busy = False
        self.pending: list[tuple[float, Callable[[float, int], None]]] = []
        self.batch_busy = False
        self.batches: list[int] = []

    def commit(self, now: float, done: Callable[[float, int], None], base: int | None = None) -> None:
        """Start a region's commit at ``now``; ``done(time, rebases)`` when it has landed.

        ``base`` is the branch version the region's session was opened on (before its chunks
        were written); a commit landed since then costs a rebase, as in Icechunk.
        """
        if self.protocol == "free":  # the yardstick: a commit that costs nothing
            self.push(now, lambda t: done(t, 0))
        elif self.protocol == "direct":
            self.committing += 1
            self._attempt(now, self.version if base is None else base, 0, done)
        elif self.protocol == "lease":
            self.lease_queue.append(lambda t: self._leased(t, done))
            self._next_lease(now)
        elif self.protocol == "handoff":
            handed = now + HANDOFF_PUT_S * self.cal.slowdown(self.load)
            self.push(handed, lambda t: self._handed(t, done))
        else:
            self.pending.append((now, done))
            self._next_batch(now)

    def _handed(self, now: float, done: Callable[[float, int], None]) -> None:
        # The writer that finds the lease free commits the round with its own fork in it; the
        # others see their fork committed at their next poll.
        leader = not self.batch_busy

        def seen(t: float, rebases: int) -> None:
            self.push(t if leader else _discovered(now, t), lambda t2: done(t2, rebases))

        self.pending.append((now, seen))
        self._next_batch(now)

    def _attempt(self, now: float, base: int, rebases: int, done: Callable[[float, int], None]) -> None:
        cost = self.cal.flush(self.load)

        def land(t: float) -> None:
            if self.version == base:
                self.version += 1
                self.committing -= 1
                done(t, rebases)
            else:  # someone landed first: rebase onto the new tip and flush again
                self._attempt(t, self.version, rebases + 1, done)

        self.push(now + cost, land)

    def _leased(self, now: float, done: Callable[[float, int], None]) -> None:
        def release(t: float) -> None:
            self.lease_busy = False
            done(t, 0)
            self._next_lease(t)

        self.push(now + self.cal.lease_commit_s * self.cal.slowdown(self.load), release)

    def _next_lease(self, now: float) -> None:
        if not self.lease_busy and self.lease_queue:
            self.lease_busy = True
            self.lease_queue.pop(0)(now)

    def _next_batch(self, now: float) -> None:
        if self.batch_busy or not self.pending:
            return
        batch, self.pending = self.pending, []
        self.batch_busy = True
        self.batches.append(len(batch))

        def land(t: float) -> None:
            self.batch_busy = False
            for _, done in batch:
                done(t, 0)
            self._next_batch(t)

        cost = self.cal.batch(len(batch), self.load)
        if self.protocol == "handoff":
            cost += (ROUND_LEASE_S + ROUND_PER_FORK_S * len(batch)) * self.cal.slowdown(self.load)
        self.push(now + cost, land)


def simulate_bench(protocol: str, writers: int, cal: Calibration, seed: int) -> Outcome:
    """The bench's setting: ``writers`` writers each committing ``cal.per_writer`` small regions."""
    rng = random.Random(seed)
    events: list[tuple[float, int, Callable[[float], None]]] = []
    counter = itertools.count()

    def push(t: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(events, (t, next(counter), fn))

    committer = Committer(protocol, cal, push, load=writers)
    work = cal.work_s[protocol][writers]
    out = Outcome(0.0, [], [], [])

    def region(now: float, left: int) -> None:
        if left == 0:
            return
        compute = work * rng.uniform(0.8, 1.2)
        base = committer.version  # the session opens before the chunks are written

        def written(t: float) -> None:
            started = t

            def landed(t2: float, rebases: int) -> None:
                out.commit_s.append(t2 - started)
                out.rebases.append(rebases)
                out.compute_s.append(compute)
                out.wall_s = max(out.wall_s, t2)
                region(t2, left - 1)

            committer.commit(t, landed, base)

        push(now + compute, written)

    for _ in range(writers):
        region(rng.uniform(0, 0.05), cal.per_writer)
    _run(events)
    out.batches = committer.batches
    return out


@dataclass(frozen=True)
class Production:
    """The CONUS build's stated parameters."""

    regions: int = 405
    pods: int = 400
    pod_start_s: float = 4.0
    compute_s: float = PRODUCTION_COMPUTE_S
    compute_sigma: float = 0.15
    write_s: float = PRODUCTION_REGION_MB / WRITE_MB_PER_S
    preempt_per_hour: float = 0.1


def simulate_build(protocol: str, cal: Calibration, prod: Production, seed: int) -> Outcome:
    """All regions on ``prod.pods`` pods: start-up, compute, write, commit, preemptions and retries."""
    rng = random.Random(seed)
    events: list[tuple[float, int, Callable[[float], None]]] = []
    counter = itertools.count()

    def push(t: float, fn: Callable[[float], None]) -> None:
        heapq.heappush(events, (t, next(counter), fn))

    committer = Committer(protocol, cal, push)
    queue = list(range(prod.regions))
    out = Outcome(0.0, [], [], [])
    done: set[int] = set()
    rate = prod.preempt_per_hour / 3600

    def launch(now: float) -> None:
        """A pod takes the next region (regions first, retries at the back)."""
        if not queue:
            return
        region = queue.pop(0)
        out.pod_starts += 1
        compute = prod.compute_s * math.exp(rng.gauss(0, prod.compute_sigma))
        work_end = now + prod.pod_start_s + compute + prod.write_s
        preempt_at = now + (rng.expovariate(rate) if rate > 0 else math.inf)
        if preempt_at < work_end:
            # the pod is lost before its region was handed over or committed: retry elsewhere
            out.preemptions += 1
            queue.append(region)
            push(preempt_at, launch)
            return

        def opened(t0: float) -> None:
            base = committer.version  # the session opens after compute, before the chunks are written
            push(t0 + prod.write_s, lambda t: written(t, base))

        def written(t: float, base: int) -> None:
            def landed(t2: float, rebases: int) -> None:
                if region not in done:
                    done.add(region)
                    out.commit_s.append(t2 - t)
                    out.rebases.append(rebases)
                    out.compute_s.append(compute)
                    out.wall_s = max(out.wall_s, t2)
                launch(t2)  # the pod (or its replacement) takes the next region, if any

            committer.commit(t, landed, base)

        push(work_end - prod.write_s, opened)

    for _ in range(min(prod.pods, prod.regions)):
        launch(0.0)
    _run(events)
    out.batches = committer.batches
    assert len(done) == prod.regions, f"{len(done)} of {prod.regions} regions done"
    return out


def _run(events: list[tuple[float, int, Callable[[float], None]]]) -> None:
    for _ in range(10_000_000):  # bounded: a build is far fewer events
        if not events:
            return
        t, _, fn = heapq.heappop(events)
        fn(t)
    raise RuntimeError("the simulation did not finish")


def _seeds(fn: Callable[[int], Outcome], seeds: int) -> list[Outcome]:
    return [fn(seed) for seed in range(seeds)]


def main() -> None:
    """Print the validation table, the overhead table and the CONUS wall time."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calibration", type=Path, nargs="+", default=[Path("var/commit_scale.json")])
    parser.add_argument("--validate", action="store_true")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--regions", type=int, default=405)
    parser.add_argument("--pods", type=int, default=400)
    parser.add_argument("--pod-start", type=float, default=4.0)
    parser.add_argument("--preempt-per-hour", type=float, default=0.1)
    parser.add_argument("--compute-sigma", type=float, default=0.15)
    parser.add_argument("--flush", choices=["measured", "uncontended"], default="uncontended")
    args = parser.parse_args()
    cal = Calibration.from_bench(args.calibration)
    print(
        f"calibration: F(n) {', '.join(f'{n}: {f:.3f} s' for n, f in sorted(cal.flush_by_writers.items()))}; "
        f"lease commit {cal.lease_commit_s:.3f} s; batch T(k) = max({cal.batch_a:.3f} + {cal.batch_b:.4f} k, "
        f"{cal.batch_floor:.3f}) s alone; with n writers "
        + ", ".join(f"{n}: {a:.3f} + {b:.4f} k" for n, (a, b) in sorted(cal.batch_by_writers.items()))
    )
    if args.validate:
        print()
        print("| protocol | writers | measured commit p50 s | simulated p50 s | measured rebases | simulated rebases |")
        print("|---|---|---|---|---|---|")
        for proto, by_writers in sorted(cal.measured.items()):
            for n, (p50, rebases) in sorted(by_writers.items()):
                runs = _seeds(lambda seed, p=proto, w=n: simulate_bench(p, w, cal, seed), args.seeds)
                sim_p50 = statistics.median(r.p50() for r in runs)
                sim_rebases = statistics.fmean(statistics.fmean(r.rebases) for r in runs)
                print(f"| {proto} | {n} | {p50:.2f} | {sim_p50:.2f} | {rebases:.1f} | {sim_rebases:.1f} |")
    # Production: on real pods each writer has its own CPU, so a flush does not slow with the
    # number of writers as it does on this 2-core machine; "measured" keeps the emulator's F(n).
    if args.flush == "uncontended":
        cal = Calibration({1: cal.flush(1)}, cal.lease_commit_s, cal.batch_a, cal.batch_b, batch_floor=cal.batch_floor)
    print()
    print(
        f"production: {args.regions} regions on {args.pods} pods, pod start {args.pod_start:.1f} s, compute "
        f"{PRODUCTION_COMPUTE_S:.0f} s x lognormal(sigma {args.compute_sigma}), write "
        f"{PRODUCTION_REGION_MB / WRITE_MB_PER_S:.1f} s, preemptions {args.preempt_per_hour}/pod-hour, "
        f"flush {args.flush}; {args.seeds} seeds"
    )
    print()
    print(
        "| protocol | writers (pods) | commit wait p50 s | commit overhead % of compute | wall s (p50 / max) "
        "| mean batch | preemptions |"
    )
    print("|---|---|---|---|---|---|---|")
    for pods in (16, args.pods):
        regions = args.regions if pods == args.pods else 4 * pods
        for proto in ("free", "direct", "lease", "batch", "handoff"):
            prod = Production(
                regions, pods, args.pod_start, preempt_per_hour=args.preempt_per_hour, compute_sigma=args.compute_sigma
            )
            runs = _seeds(lambda seed, p=proto, pr=prod: simulate_build(p, cal, pr, seed), args.seeds)
            walls = [r.wall_s for r in runs]
            batches = [b for r in runs for b in r.batches] or [1]
            print(
                f"| {proto} | {pods} ({regions} regions) | {statistics.median(r.p50() for r in runs):.2f} "
                f"| {statistics.fmean(r.overhead_pct() for r in runs):.1f} "
                f"| {statistics.median(walls):.0f} / {max(walls):.0f} | {statistics.fmean(batches):.1f} "
                f"| {statistics.fmean(r.preemptions for r in runs):.1f} |"
            )


if __name__ == "__main__":
    main()

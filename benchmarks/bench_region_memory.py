"""Peak memory and CPU time of one production-size region, baseline against candidate in one run.

One region of the production grid (``conus-30m``: 6000 x 4500 px, plus its halo) is computed
by :func:`risk_model.compute.compute_region` in a fresh interpreter per measurement, pinned
to one core (``taskset -c 0`` when available) with every thread pool limited to one thread,
so "one core" is honest. Each child reports:

* its peak resident set size (``ru_maxrss`` of the child, read with :func:`os.wait4`, so one
  child's peak never hides another's), and the peak right after the computation, before it
  saves its result;
* its CPU seconds (user + sys), whole process and the computation alone (imports excluded).

The code under test is a checkout given by path (``PYTHONPATH`` of the child): run the
baseline from a git worktree of the integration branch and the candidate from this
checkout, and the ratios come from the same run on the same machine. The two results are
then compared pixel by pixel (largest relative difference of the float variables, NaN masks,
scores).

Inputs are synthesised once (not timed) by :func:`risk_model.synthetic.generate_inputs` for
a grid that is exactly the region plus its halo on the production lattice, at the latitude
of region ``y8_x4`` (northern California; the synthetic coast puts ocean in its west).

Run::

    git -C /work/main worktree add --detach /tmp/baseline science   # the code to compare with
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_region_memory.py --baseline /tmp/baseline

Without ``--baseline`` only this checkout is measured.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The region measured: chunk row 8 (37.2-39.1 N), chunk column 4 of the production grid.
REGION = (8, 4)
# Every thread pool a numerical library might start, limited to one thread.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "GDAL_NUM_THREADS")
FLOATS = ("burn_probability", "conditional_risk", "risk")


def bench_grid() -> tuple[Any, slice, slice]:
    """A grid on the production lattice holding exactly :data:`REGION` and its halo.

    Returns the grid and the region's rows and columns in it.
    """
    from risk_model.compute import window_halo
    from risk_model.grid import GridSpec, load_grid, region_of_chunk
    from risk_model.params import ModelParams

    conus = load_grid("conus-30m")
    region = region_of_chunk(conus, *REGION)
    halo = window_halo(conus, region.rows, ModelParams())
    a, b, c, d, e, f = conus.transform
    grid = GridSpec(
        name="bench-region",
        crs=conus.crs,
        transform=(a, b, c + (region.cols.start - halo) * a, d, e, f + (region.rows.start - halo) * e),
        shape=(region.shape[0] + 2 * halo, region.shape[1] + 2 * halo),
        # Only the synthetic coastline reads the chunk width: 1.1-1.9 chunks in from the west,
        # so about a sixth of the region is ocean, like a coastal production region.
        chunks=(512, 512),
    )
    return grid, slice(halo, halo + region.shape[0]), slice(halo, halo + region.shape[1])


def child(spec_path: Path) -> None:
    """Compute the region described by ``spec_path`` and print a JSON line of measurements."""
    import resource

    start = resource.getrusage(resource.RUSAGE_SELF)
    from risk_model.compute import compute_region
    from risk_model.grid import GridSpec, Region
    from risk_model.input_set import InputSet
    from risk_model.params import ModelParams

    spec = json.loads(spec_path.read_text())
    grid = GridSpec.model_validate(spec["grid"])
    rows, cols = slice(*spec["rows"]), slice(*spec["cols"])
    region = Region("bench", REGION[0], REGION[1], rows, cols, grid.bounds(rows, cols))
    inputs = InputSet.model_validate(spec["inputs"])
    params = ModelParams()

    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    ds = compute_region(grid, region, inputs, params)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "compute_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "compute_wall_s": wall,
        "rss_before_compute_mb": before.ru_maxrss / 1024,  # Linux reports KiB
        "peak_rss_after_compute_mb": after.ru_maxrss / 1024,
        "import_cpu_s": (before.ru_utime + before.ru_stime) - (start.ru_utime + start.ru_stime),
    }
    if spec.get("save"):
        np.savez(spec["save"], **{name: ds[name].values for name in ds.data_vars})
    print(json.dumps(result))


def run_child(code: Path, spec: dict[str, Any], spec_path: Path) -> dict[str, float]:
    """Run :func:`child` for the checkout ``code`` in a fresh, pinned, single-threaded interpreter."""
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(code), **dict.fromkeys(THREAD_VARS, "1")}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, env=env, stdout=out)
        # wait4 gives this child's own resource usage; RUSAGE_CHILDREN would be the maximum
        # over every child waited for so far.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child for {code} failed with exit code {proc.returncode}")
    result: dict[str, float] = json.loads(text.strip().splitlines()[-1])
    result["process_cpu_s"] = usage.ru_utime + usage.ru_stime
    result["process_peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def compare(baseline: Path, candidate: Path) -> None:
    """Print how far the candidate's region is from the baseline's."""
    with np.load(baseline) as base, np.load(candidate) as cand:
        for name in FLOATS:
            b, c = base[name].astype(np.float64), cand[name].astype(np.float64)
            same_nan = bool(np.array_equal(np.isnan(b), np.isnan(c)))
            finite = np.isfinite(b) & np.isfinite(c)
            scale = np.maximum(np.abs(b[finite]), np.finfo(np.float64).tiny)
            rel = np.abs(c[finite] - b[finite]) / scale
            print(
                f"  {name:18s} NaN masks equal: {same_nan}; largest relative difference {rel.max():.2e}; "
                f"pixels differing {np.count_nonzero(rel):,} of {rel.size:,}"
            )
        differ = np.count_nonzero(base["score"] != cand["score"])
        print(f"  {'score':18s} pixels differing {differ:,} of {base['score'].size:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="checkout of the code to compare with (e.g. a science worktree)")
    parser.add_argument("--candidate", type=Path, default=ROOT, help="checkout under test (default: this one)")
    parser.add_argument("--inputs", type=Path, help="reuse (or keep) the synthetic inputs in this directory")
    parser.add_argument("--repeats", type=int, default=1, help="measurements of each checkout (alternating)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from risk_model.synthetic import ensure_inputs

    grid, rows, cols = bench_grid()
    with tempfile.TemporaryDirectory(prefix="bench-region-") as tmp_name:
        tmp = Path(tmp_name)
        inputs_dir = args.inputs or tmp / "inputs"
        started = time.perf_counter()
        inputs = ensure_inputs(grid, inputs_dir)
        print(
            f"window {grid.shape[0]} x {grid.shape[1]} px (region {rows.stop - rows.start} x "
            f"{cols.stop - cols.start} + halo {rows.start}); inputs ready in {time.perf_counter() - started:.0f} s "
            f"(not timed) in {inputs_dir}"
        )
        codes = {"candidate": args.candidate.resolve()}
        if args.baseline is not None:
            codes = {"baseline": args.baseline.resolve(), **codes}
        results: dict[str, list[dict[str, float]]] = {label: [] for label in codes}
        for repeat in range(args.repeats):
            for label, code in codes.items():
                spec = {
                    "grid": grid.model_dump(mode="json"),
                    "rows": [rows.start, rows.stop],
                    "cols": [cols.start, cols.stop],
                    "inputs": inputs.model_dump(mode="json"),
                    "save": str(tmp / f"{label}.npz") if repeat == 0 else None,
                }
                result = run_child(code, spec, tmp / f"{label}.json")
                results[label].append(result)
                print(
                    f"{label:9s} ({code}, load average {os.getloadavg()[0]:.1f}): "
                    f"compute {result['compute_cpu_s']:.1f} s CPU "
                    f"({result['compute_wall_s']:.1f} s wall), peak RSS {result['peak_rss_after_compute_mb']:.0f} MiB "
                    f"(process: {result['process_cpu_s']:.1f} s CPU, {result['process_peak_rss_mb']:.0f} MiB)",
                    flush=True,
                )

        print("\n| measure | " + " | ".join(codes) + (" | ratio |" if len(codes) == 2 else " |"))
        print("|---" * (len(codes) + 1 + (len(codes) == 2)) + "|")
        for key, unit in (
            ("peak_rss_after_compute_mb", "MiB"),
            ("process_peak_rss_mb", "MiB"),
            ("compute_cpu_s", "s"),
            ("process_cpu_s", "s"),
        ):
            best = {label: min(r[key] for r in runs) for label, runs in results.items()}
            cells = " | ".join(f"{value:.1f} {unit}" for value in best.values())
            ratio = f" | {best['candidate'] / best['baseline']:.2f} |" if len(codes) == 2 else " |"
            print(f"| {key} (best of {args.repeats}) | {cells}{ratio}")
        if "baseline" in codes:
            print("\ncandidate against baseline:")
            compare(tmp / "baseline.npz", tmp / "candidate.npz")


if __name__ == "__main__":
    main()

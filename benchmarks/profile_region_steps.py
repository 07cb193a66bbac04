"""Where one production region's CPU time and peak memory go, step by step.

The steps of :func:`risk_model.compute.compute_window` run one after the other on the
production-size window of ``bench_region_memory.py`` (region ``y8_x4`` of ``conus-30m`` with its
halo, synthetic inputs in their native form). Before each step the process's peak resident set
size is reset (Linux: ``5`` written to ``/proc/self/clear_refs``), so each step reports

* its CPU seconds (user + sys of this process, :func:`time.process_time`);
* the peak RSS reached *during* the step (``VmHWM``), which includes what earlier steps left
  alive, and the RSS left when it returns (``VmRSS``).

The wind-share reads happen inside the composite; they are timed by wrapping the band reader,
and the composite's own time is the rest. Run it pinned to one core with one thread per pool,
as the region benchmark does::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 GDAL_NUM_THREADS=1 PYTHONPATH=$PWD taskset -c 0 \\
        .venv/bin/python benchmarks/profile_region_steps.py --inputs /tmp/region-memory-inputs
"""

import argparse
import inspect
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_region_memory import bench_grid  # the benchmark beside this script

T = TypeVar("T")


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class Steps:
    """Runs steps, printing CPU seconds and peak RSS of each."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, float]] = []

    def run(self, name: str, fn: Callable[[], T]) -> T:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
        cpu = time.process_time()
        value = fn()
        cpu = time.process_time() - cpu
        self.rows.append((name, cpu, _status("VmHWM"), _status("VmRSS")))
        print(f"{name:40s} {cpu:7.2f} s CPU  peak {self.rows[-1][2]:7.0f} MiB  after {self.rows[-1][3]:7.0f} MiB")
        return value


class TimedBands:
    """A share-band reader that adds the time and peak of each read to ``steps``."""

    def __init__(self, bands: Any, steps: Steps) -> None:
        self._bands, self._steps = bands, steps

    def __len__(self) -> int:
        return len(self._bands)

    def __getitem__(self, index: int) -> Any:
        return self._steps.run(f"  wind share band {index}", lambda: self._bands[index])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, help="reuse (or keep) the synthetic inputs in this directory")
    args = parser.parse_args()

    from risk_model.compute import WORKING_DTYPE, pixel_bands, window_halo
    from risk_model.inputs import read_burn_probability, read_conditional_risk
    from risk_model.params import ModelParams
    from risk_model.science import wind_informed_risk
    from risk_model.synthetic import ensure_inputs
    from risk_model.wind_inputs import WindShareBands

    grid, rows, cols = bench_grid()
    with tempfile.TemporaryDirectory(prefix="profile-region-") as tmp:
        inputs = ensure_inputs(grid, args.inputs or Path(tmp) / "inputs")
        params = ModelParams()
        halo = window_halo(grid, rows, params)
        steps = Steps()
        # As compute_window reads them: straight into float32 where the readers take a dtype
        # (this checkout), otherwise in float64 and narrowed (the code before they did).
        narrow = {"dtype": "float32"} if "dtype" in inspect.signature(read_conditional_risk).parameters else {}
        print(
            f"window {rows.stop - rows.start + 2 * halo} x {cols.stop - cols.start + 2 * halo} px; "
            f"RSS at start {_status('VmRSS'):.0f} MiB"
        )
        cr = steps.run(
            "read_conditional_risk",
            lambda: read_conditional_risk(inputs.conditional_risk, grid, rows, cols, halo, **narrow).astype(
                WORKING_DTYPE, copy=False
            ),
        )
        bp = steps.run(
            "read_burn_probability",
            lambda: read_burn_probability(
                inputs.burn_probability,
                grid,
                rows,
                cols,
                halo,
                params.burn_probability_resampling,
                gap_fill_window_px=params.gap_fill_window_px,
                **narrow,
            ).astype(WORKING_DTYPE, copy=False),
        )
        wind = TimedBands(
            WindShareBands(inputs.wind_shares(), grid, rows, cols, halo, params.wind_resampling, dtype="float32"),
            steps,
        )
        geometry = pixel_bands(grid, slice(rows.start - halo, rows.stop + halo), params)
        start = len(steps.rows)
        steps.run(
            "wind_informed_risk (all, incl. bands)",
            lambda: wind_informed_risk(bp, cr, wind, geometry, params, dtype=WORKING_DTYPE),
        )
        bands_cpu = sum(row[1] for row in steps.rows[start:-1])
        total = sum(row[1] for row in steps.rows if not row[0].startswith("  "))
        print(
            f"\nwind share reads together: {bands_cpu:.2f} s CPU; model without them: "
            f"{steps.rows[-1][1] - bands_cpu:.2f} s; all steps: {total:.2f} s CPU; "
            f"peak of the process {max(row[2] for row in steps.rows):.0f} MiB"
        )


if __name__ == "__main__":
    main()

"""How much memory does the wind-shares computation need per block of a CONUS404 year?

:func:`risk_model.wind.fire_weather_wind_shares` loads one spatial block with every hour at a
time. This measures the peak of Python-tracked allocations (numpy reports its buffers to
``tracemalloc``) while computing the shares of a lazily opened NetCDF holding one block of
8,760 hourly steps, and reports it as a ratio against the baseline measured in the same run:
the float32 bytes of the block's four hourly variables (what merely loading the block costs).
Time is reported against the same baseline's load time.

Run::

    .venv/bin/python benchmarks/bench_wind.py                  # one 32 x 32 block, 8,760 hours
    .venv/bin/python benchmarks/bench_wind.py --block 16 --hours 2000
"""

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import xarray as xr
from rasterio.crs import CRS

from risk_model.synthetic_wind import CONUS404_PROJ
from risk_model.wind import fire_weather_wind_shares
from risk_model.wind_files import open_hourly


def write_block(path: Path, hours: int, side: int) -> None:
    """A random but plausible hourly cube of ``side`` x ``side`` pixels."""
    rng = np.random.default_rng(0)
    shape = (hours, side, side)
    t2 = (290 + 10 * rng.random(shape)).astype(np.float32)
    ds = xr.Dataset(
        {
            "T2": (("time", "y", "x"), t2),
            "TD2": (("time", "y", "x"), (t2 - 5 - 20 * rng.random(shape)).astype(np.float32)),
            "U10": (("time", "y", "x"), (10 * rng.standard_normal(shape)).astype(np.float32)),
            "V10": (("time", "y", "x"), (10 * rng.standard_normal(shape)).astype(np.float32)),
            "SINALPHA": (("y", "x"), np.zeros((side, side), np.float32)),
            "COSALPHA": (("y", "x"), np.ones((side, side), np.float32)),
            "crs": ((), 0, {"crs_wkt": CRS.from_proj4(CONUS404_PROJ).to_wkt()}),
        },
        coords={"y": np.arange(side) * 4000.0, "x": np.arange(side) * 4000.0},
    )
    ds.to_netcdf(path, engine="scipy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hours", type=int, default=8760)
    parser.add_argument("--block", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "block.nc"
        write_block(path, args.hours, args.block)
        with open_hourly(str(path)) as ds:
            tracemalloc.start()
            started = time.perf_counter()
            ds[["T2", "TD2", "U10", "V10"]].load()
            load_s = time.perf_counter() - started
            _, load_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        with open_hourly(str(path)) as ds:
            tracemalloc.start()
            started = time.perf_counter()
            fire_weather_wind_shares(ds, block=(args.block, args.block))
            compute_s = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    pixel_hours = args.hours * args.block * args.block
    print(f"block {args.block} x {args.block}, {args.hours} hours ({pixel_hours:,} pixel-hours)")
    print(f"baseline: load the 4 hourly variables: peak {load_peak / 2**20:.0f} MiB, {load_s:.2f} s")
    print(
        f"shares: peak {peak / 2**20:.0f} MiB = {peak / load_peak:.1f} x baseline = {peak / pixel_hours:.0f} B per "
        f"pixel-hour; {compute_s:.2f} s = {compute_s / load_s:.0f} x baseline"
    )


if __name__ == "__main__":
    main()

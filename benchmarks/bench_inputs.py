"""What does reading conditional risk in its native form cost a region? Measure both paths in one run.

The synthetic demo inputs hold conditional risk as the USFS publishes it (30 m, EPSG:5070), so
every region warps its window (:func:`risk_model.inputs.read_conditional_risk`: rasterio's
``reproject``, nearest, exact transformer). The baseline is the same raster warped once onto the
demo grid's own pixels (EPSG:4326, north-up, grown by the halo) and written with the same tiling
and compression, which a region reads with a plain rasterio window (the on-grid fast path). Both
reads must give identical arrays (checked), so only the cost differs. For scale, the whole
:func:`risk_model.compute.compute_region` of the same region is timed too.

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_inputs.py [--repeats N]
"""

import argparse
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from risk_model.compute import compute_region, window_halo
from risk_model.grid import load_grid, load_registry
from risk_model.inputs import read_conditional_risk, read_window
from risk_model.params import ModelParams
from risk_model.raster_windows import on_grid
from risk_model.synthetic import NODATA, generate_inputs


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls, in seconds."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def write_on_grid_copy(native: str, target: Path, halo: int) -> str:
    """The native raster warped once onto the demo grid (plus ``halo`` px on every side), north-up."""
    grid = load_grid("demo")
    full = (slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    values = read_window(native, grid, *full, halo=halo, resampling="nearest")  # row 0 south
    a, _, west, _, e, south = grid.transform
    transform = Affine(a, 0.0, west - halo * a, 0.0, -e, south + (grid.shape[0] + halo) * e)
    with rasterio.open(native) as src:
        profile = src.profile
    profile.update(
        crs=grid.crs, transform=transform, width=values.shape[1], height=values.shape[0], blockxsize=256, blockysize=256
    )
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(np.where(np.isnan(values), NODATA, values)[::-1].astype(np.float32), 1)
    return str(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="best of this many reads per region")
    args = parser.parse_args()

    registry = load_registry("demo")
    grid, params = registry.grid, ModelParams()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = generate_inputs(grid, Path(tmp) / "inputs", seed=0)
        regions = [registry.get(rid) for rid in ("y1_x2", "y3_x5", "y6_x9")]  # coast, middle, north-east
        halo = max(window_halo(grid, r.rows, params) for r in regions)
        on_grid_path = write_on_grid_copy(inputs.conditional_risk, Path(tmp) / "cr_on_grid.tif", halo)
        with rasterio.open(inputs.conditional_risk) as native, rasterio.open(on_grid_path) as copy:
            assert not on_grid(native, grid) and on_grid(copy, grid)
            print(
                f"native: {native.crs} {native.res[0]:g} m {native.width} x {native.height}; on-grid copy: {copy.crs}"
            )
        print(f"region 256 x 256 + halo {halo} px = {256 + 2 * halo} x {256 + 2 * halo} px, best of {args.repeats}\n")
        print("| region | on-grid read (baseline) ms | warped from EPSG:5070 ms | ratio | compute_region ms |")
        print("|---|---|---|---|---|")
        for region in regions:
            warped = read_conditional_risk(inputs.conditional_risk, grid, region.rows, region.cols, halo)
            plain = read_conditional_risk(on_grid_path, grid, region.rows, region.cols, halo)
            np.testing.assert_array_equal(warped, plain)  # the same pixels either way
            base = best_of(
                lambda r=region: read_conditional_risk(on_grid_path, grid, r.rows, r.cols, halo), args.repeats
            )
            warp = best_of(
                lambda r=region: read_conditional_risk(inputs.conditional_risk, grid, r.rows, r.cols, halo),
                args.repeats,
            )
            whole = best_of(lambda r=region: compute_region(grid, r, inputs, params), max(1, args.repeats // 3))
            print(f"| {region.id} | {base * 1e3:.1f} | {warp * 1e3:.1f} | {warp / base:.2f} | {whole * 1e3:.0f} |")
        # The whole grid as one window (5.1 Mpx with the halo): the per-pixel cost of the warp at a
        # size closer to a production region (27 Mpx).
        full = (slice(0, grid.shape[0]), slice(0, grid.shape[1]))
        base = best_of(lambda: read_conditional_risk(on_grid_path, grid, *full, halo), 2)
        warp = best_of(lambda: read_conditional_risk(inputs.conditional_risk, grid, *full, halo), 2)
        pixels = (grid.shape[0] + 2 * halo) * (grid.shape[1] + 2 * halo)
        print(
            f"| whole grid, {pixels / 1e6:.1f} Mpx | {base * 1e3:.0f} | {warp * 1e3:.0f} | {warp / base:.2f} | "
            f"warp {warp / pixels * 1e9:.0f} ns/px |"
        )


if __name__ == "__main__":
    main()

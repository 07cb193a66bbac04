"""Which convolution should the spread step use? Measure the candidates in one run.

Candidates: :func:`scipy.ndimage.convolve` (direct, the reference), :func:`scipy.signal.fftconvolve`
and :func:`scipy.signal.oaconvolve` (overlap-add FFT), whole or by strips of 512 rows (the model
uses ``fftconvolve`` by strips), and ``oaconvolve`` in float32. Each is timed on the real spread kernels of the
model (default parameters, pixel size of the demo grid's latitude) applied to a realistic
burn-probability field (smooth, 0-0.1, with non-burnable holes), and checked against
``ndimage.convolve`` to 1e-9; the peak memory of each call is traced (numpy's and scipy's
arrays, through :mod:`tracemalloc`) and given as a multiple of the input's size.

Run::

    .venv/bin/python benchmarks/bench_convolution.py            # demo region and 1500 x 1500
    .venv/bin/python benchmarks/bench_convolution.py --production  # adds a 6000 x 4500 region
"""

import argparse
import math
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

import numpy as np
from scipy import ndimage, signal

from risk_model.grid import load_grid
from risk_model.kernels import DIRECTIONS, halo_pixels, spread_kernels
from risk_model.params import ModelParams

Convolve = Callable[[np.ndarray, np.ndarray], np.ndarray]

STRIP_ROWS = 512


def by_strips(
    values: np.ndarray, kernel: np.ndarray, convolve: Callable[..., np.ndarray] = signal.oaconvolve
) -> np.ndarray:
    """``convolve`` over strips of :data:`STRIP_ROWS` rows, each read with half a kernel of overlap."""
    half, n = kernel.shape[0] // 2, values.shape[0]
    out = np.empty_like(values)
    for start in range(0, n, STRIP_ROWS):
        stop = min(start + STRIP_ROWS, n)
        lo, hi = max(0, start - half), min(n, stop + half)
        out[start:stop] = convolve(values[lo:hi], kernel, mode="same")[start - lo : stop - lo]
    return out


CANDIDATES: dict[str, Convolve] = {
    "ndimage.convolve": lambda a, k: ndimage.convolve(a, k, mode="constant", cval=0.0),
    "signal.fftconvolve": lambda a, k: signal.fftconvolve(a, k, mode="same"),
    "signal.oaconvolve": lambda a, k: signal.oaconvolve(a, k, mode="same"),
    f"oaconvolve {STRIP_ROWS}-row strips": by_strips,
    # What the model does since 2026-12-02: one FFT per strip (docs/benchmarks.md, issue 12).
    f"fftconvolve {STRIP_ROWS}-row strips": partial(by_strips, convolve=signal.fftconvolve),
    "oaconvolve float32": lambda a, k: signal.oaconvolve(a.astype(np.float32), k.astype(np.float32), mode="same"),
}


def field(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth 0-0.1 burn-probability field with about 20 % non-burnable pixels."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), 20)
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-300)
    return np.where(smooth > 0.35, 0.1 * smooth, 0.0)


def best_of(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, int, np.ndarray]:
    """Minimum CPU time of ``repeats`` calls, the peak traced bytes of one call, and the last result.

    CPU time (``process_time``), not wall time: the machines are shared, and a single-threaded
    call's CPU time is what another process cannot inflate much.
    """
    best, result = math.inf, np.empty(0)
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    del result
    tracemalloc.start()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--production", action="store_true", help="also time a 6000 x 4500 region")
    args = parser.parse_args()

    params = ModelParams()
    demo = load_grid("demo")  # a window of the production lattice: same pixel size
    middle = demo.shape[0] // 2
    lat = float(demo.latitude(slice(middle, middle + 1))[0])  # centre of the demo grid
    dy = math.radians(demo.pixel_size[0]) * params.earth_radius_m
    pixel = (dy, dy * math.cos(math.radians(lat)))
    halo = halo_pixels(params, pixel)
    kernels = spread_kernels(params, pixel)
    print(
        f"pixel {pixel[0]:.1f} x {pixel[1]:.1f} m, halo {halo} px, kernel shapes "
        + ", ".join(f"{d} {kernels[d].shape}" for d in DIRECTIONS[:3])
    )

    sizes = [(256 + 2 * halo, 256 + 2 * halo, 5), (1500, 1500, 2)]
    if args.production:
        sizes.append((6000 + 2 * halo, 4500 + 2 * halo, 1))
    for ny, nx, repeats in sizes:
        values = field((ny, nx))
        print(
            f"\n{ny} x {nx} px, one convolution with the W kernel {kernels['W'].shape} "
            f"and the NE kernel {kernels['NE'].shape} (best of {repeats}):"
        )
        times: dict[str, float] = {}
        peaks: dict[str, int] = {}
        results: dict[str, list[np.ndarray]] = {}
        for name, fn in CANDIDATES.items():
            total, outs, peak = 0.0, [], 0
            for d in ("W", "NE"):
                t, p, out = best_of(partial(fn, values, kernels[d]), repeats)
                total, peak = total + t, max(peak, p)
                outs.append(out)
            times[name], peaks[name], results[name] = total / 2, peak, outs
        reference = results["ndimage.convolve"]
        for name, t in times.items():
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(results[name], reference, strict=True))
            # Relative to small convolved values (>= 1e-6): a weak fire next to a strong one.
            rel = max(
                float(np.max(np.abs(a[b > 1e-6] - b[b > 1e-6]) / b[b > 1e-6]))
                for a, b in zip(results[name], reference, strict=True)
            )
            ok = "ok" if diff <= 1e-9 else "DISAGREES"
            print(
                f"  {name:26s} {t * 1e3:9.1f} ms CPU   x{t / times['ndimage.convolve']:.3f} of ndimage"
                f"   peak {peaks[name] / 2**20:7.0f} MiB (x{peaks[name] / values.nbytes:.1f} of the input)"
                f"   max |diff| {diff:.1e}, relative {rel:.1e} ({ok})"
            )
        per_region = 2 * len(DIRECTIONS) * params.spread_iterations
        fastest = min((n for n in times if n != "oaconvolve float32"), key=times.__getitem__)
        print(f"  -> {fastest}: ~{per_region * times[fastest]:.2f} s for the {per_region} convolutions of one window")


if __name__ == "__main__":
    main()

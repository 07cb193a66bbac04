"""float32 working arrays against float64: the production path stays within 1e-5 relative.

The oracle is the model as it was computed before the float32 change, written out plainly:
all 8 share bands at once, whole-window FFT convolutions (:func:`scipy.signal.fftconvolve`,
which agrees with direct convolution to ~2e-16: ``benchmarks/bench_convolution.py``) for
numerator and denominator, the separable blur and ``np.digitize`` for the score, everything
in float64. The inputs are the
synthetic ``mini`` grid's (realistic fields: burn probability 0.0005-0.06 with non-burnable
patches and ocean, skewed conditional risk, turning winds).
"""

import numpy as np
import pytest
from scipy import ndimage, signal

from risk_model.compute import compute_window, pixel_size_at
from risk_model.grid import GridSpec, load_grid
from risk_model.input_set import InputSet
from risk_model.inputs import read_burn_probability, read_window
from risk_model.kernels import DIRECTIONS, gaussian_weights, spread_kernels
from risk_model.params import ModelParams
from risk_model.schema import SCORE_NODATA
from risk_model.science import wind_informed_risk
from risk_model.spread import spread
from risk_model.synthetic import generate_inputs
from risk_model.wind_inputs import read_wind_shares

PARAMS = ModelParams()
FLOATS = ("burn_probability", "conditional_risk", "risk")
#: The requirement: float32 results within this of float64, relative, pixel by pixel.
RTOL = 1e-5


def _reference_spread(source: np.ndarray, kernel: np.ndarray, iterations: int, clip: float) -> np.ndarray:
    values = source
    for _ in range(iterations):
        numerator = signal.fftconvolve(values, kernel, mode="same")
        denominator = signal.fftconvolve((values > 0).astype(np.float64), kernel, mode="same")
        reached = (denominator > 0.5 * kernel[kernel > 0].min()) & (numerator >= clip)
        values = np.where(reached, np.maximum(numerator / np.where(reached, denominator, 1.0), 0.0), 0.0)
    return values


def reference_model(
    bp: np.ndarray, cr: np.ndarray, shares: np.ndarray, pixel: tuple[float, float], params: ModelParams
) -> dict[str, np.ndarray]:
    """The model in float64 with every share band held, whole-window convolutions and np.digitize."""
    land = np.isfinite(cr)
    source = np.where(bp > 0, bp, 0.0)
    total = shares.sum(axis=0)
    valid = np.isfinite(total) & (total > 0)
    kernels = spread_kernels(params, pixel)
    composite = np.zeros(bp.shape)
    for i, direction in enumerate(DIRECTIONS):
        share = np.where(valid, shares[i] / np.where(valid, total, 1.0), 0.0)
        composite += share * _reference_spread(source, kernels[direction], params.spread_iterations, params.spread_clip)
    composite[~valid] = np.nan
    combined = np.where(bp == 0, composite, bp)
    weights = gaussian_weights(params.blur_kernel_px, params.blur_sigma_px)
    columns = ndimage.correlate1d(combined, weights, axis=0, mode="constant")
    blurred = ndimage.correlate1d(columns, weights, axis=1, mode="constant")
    blurred[~land] = np.nan
    conditional = np.where(land, cr, np.nan)
    risk = blurred * conditional
    edges = np.asarray((0.0, *params.score_bin_edges))
    score = np.minimum(np.digitize(np.where(np.isnan(risk), 0.0, risk), edges, right=True), 10).astype(np.uint8)
    score[np.isnan(risk)] = SCORE_NODATA
    return {"burn_probability": blurred, "conditional_risk": conditional, "risk": risk, "score": score}


@pytest.fixture(scope="module")
def mini_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[GridSpec, InputSet]:
    grid = load_grid("mini")
    return grid, generate_inputs(grid, tmp_path_factory.mktemp("mini_inputs"), seed=0)


@pytest.fixture(scope="module")
def mini_arrays(mini_inputs: tuple[GridSpec, InputSet]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mini grid's whole inputs in float64, as the model receives them."""
    grid, inputs = mini_inputs
    full = (slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    bp = read_burn_probability(inputs.burn_probability, grid, *full)
    cr = read_window(inputs.conditional_risk, grid, *full)
    shares = read_wind_shares(inputs.wind_direction, grid, *full)
    return bp, cr, shares


def _max_relative(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest ``|actual - expected| / |expected|`` over pixels finite in both (NaN masks must agree)."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = np.isfinite(expected)
    a, e = actual[finite].astype(np.float64), expected[finite]
    nonzero = e != 0
    assert np.all(a[~nonzero] == 0)  # a zero stays exactly zero
    return float(np.max(np.abs(a[nonzero] - e[nonzero]) / np.abs(e[nonzero])))


def _pixel(grid: GridSpec) -> tuple[float, float]:
    return pixel_size_at(grid, float(grid.latitude(slice(0, 1))[0]), PARAMS)


def test_float64_path_equals_the_reference_to_rounding(
    mini_inputs: tuple[GridSpec, InputSet], mini_arrays: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """Strips, exact burning counts and the accumulated composite change nothing in float64."""
    grid, _ = mini_inputs
    bp, cr, shares = mini_arrays
    pixel = _pixel(grid)
    expected = reference_model(bp, cr, shares, pixel, PARAMS)
    out = wind_informed_risk(bp, cr, shares, pixel, PARAMS, dtype=np.float64)
    for name in FLOATS:
        assert getattr(out, name).dtype == np.float64
        assert _max_relative(getattr(out, name), expected[name]) < 1e-12
    np.testing.assert_array_equal(out.score, expected["score"])


def test_float32_path_is_within_1e5_of_the_float64_reference(
    mini_inputs: tuple[GridSpec, InputSet], mini_arrays: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """The production precision: float32 working arrays (inputs narrowed as compute_window does)."""
    grid, _ = mini_inputs
    bp, cr, shares = mini_arrays
    pixel = _pixel(grid)
    expected = reference_model(bp, cr, shares, pixel, PARAMS)
    narrow = [bp.astype(np.float32), cr.astype(np.float32), shares.astype(np.float32)]
    out = wind_informed_risk(*narrow, pixel, PARAMS, dtype=np.float32)
    worst = {}
    for name in FLOATS:
        assert getattr(out, name).dtype == np.float32
        worst[name] = _max_relative(getattr(out, name), expected[name])
    assert max(worst.values()) < RTOL, worst
    # float32 is not float64: the comparison can tell them apart.
    assert worst["burn_probability"] > 1e-9
    # A score differs only where the risk lies within RTOL of a bin edge.
    differ = out.score != expected["score"]
    edges = np.asarray(PARAMS.score_bin_edges)
    risk = expected["risk"][differ]
    assert np.all(np.min(np.abs(risk[:, None] / edges[None, :] - 1.0), axis=1) < RTOL)
    land = np.isfinite(expected["risk"])
    assert 0.3 < land.mean() < 0.9 and len(np.unique(expected["score"][land])) >= 4  # a meaningful comparison


def test_region_windows_in_float32_and_float64_agree(mini_inputs: tuple[GridSpec, InputSet]) -> None:
    """Through the readers (wind shares band by band) and the latitude bands, as regions are computed."""
    grid, inputs = mini_inputs
    rows, cols = slice(64, 128), slice(128, 256)
    wide = compute_window(grid, rows, cols, inputs, PARAMS, dtype=np.float64)
    narrow = compute_window(grid, rows, cols, inputs, PARAMS)  # the default: float32
    assert wide is not None and narrow is not None
    for name in FLOATS:
        assert getattr(narrow, name).dtype == np.float32
        assert _max_relative(getattr(narrow, name), getattr(wide, name)) < RTOL
    assert np.count_nonzero(narrow.score != wide.score) <= 0.001 * narrow.score.size


def test_spread_next_to_a_strong_fire_keeps_weak_means_in_float32() -> None:
    """A float32 FFT would lose a weak fire's mean next to a strong one; the spread convolves in float64.

    Burn probability 0.06 over most of the window and 1e-5 on an island far from it: the
    island's spread values are 1e-5-scale means, while a float32 FFT's error scales with the
    window's largest values (~1e-7 x 0.06 = 6e-9, i.e. 6e-4 of the island's means).
    """
    n = 300
    rng = np.random.default_rng(5)
    source = np.where(rng.random((n, n)) < 0.7, 0.06, 0.0)
    source[60:240, 60:240] = 0.0  # farther from the island than 3 kernel reaches
    source[140:160, 140:160] = np.where(rng.random((20, 20)) < 0.7, 1e-5, 0.0)
    kernel = spread_kernels(PARAMS, (34.2, 26.9))["NE"]
    expected = _reference_spread(source, kernel, 3, PARAMS.spread_clip)
    out = spread(source.astype(np.float32), kernel, 3, clip=PARAMS.spread_clip)
    assert out.dtype == np.float32
    assert _max_relative(out, expected) < RTOL
    island = expected[130:170, 130:170]
    assert 0 < island[island > 0].max() < 2e-5  # the weak means are there, and were compared


def test_burning_counts_survive_a_float32_fft_at_high_latitude() -> None:
    """The largest production kernels (at 49 N, the narrowest pixels) still count exactly."""
    grid = load_grid("conus-30m")
    pixel = pixel_size_at(grid, 49.3, PARAMS)
    kernels = spread_kernels(PARAMS, pixel)
    assert max(np.count_nonzero(k) for k in kernels.values()) > 300  # bigger than at 38 N
    rng = np.random.default_rng(9)
    source = np.where(rng.random((400, 400)) < 0.5, rng.uniform(1e-4, 0.06, (400, 400)), 0.0)
    for direction in ("N", "NE", "E"):
        expected = _reference_spread(source, kernels[direction], 1, 0.0)
        out = spread(source.astype(np.float32), kernels[direction], 1)
        assert _max_relative(out, expected) < RTOL
        # Which pixels are reached at all is decided by the counts: exactly the same set.
        np.testing.assert_array_equal(out > 0, expected > 0)

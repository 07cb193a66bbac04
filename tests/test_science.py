"""Properties of the wind-informed risk model (pure arrays, no I/O)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_model.params import ModelParams
from risk_model.schema import SCORE_NODATA
from risk_model.science import (
    BEARINGS,
    DIRECTIONS,
    gap_fill,
    halo_pixels,
    kernel_mask,
    score,
    spread,
    spread_kernels,
    wind_informed_risk,
)

PARAMS = ModelParams()
pixel_sizes = st.tuples(st.floats(10.0, 120.0), st.floats(10.0, 120.0))
geometries = st.tuples(st.floats(50.0, 800.0), st.floats(20.0, 400.0), st.floats(0.0, 0.95))


def one_hot(direction: str, shape: tuple[int, int]) -> np.ndarray:
    shares = np.zeros((8, *shape))
    shares[DIRECTIONS.index(direction)] = 1.0
    return shares


@given(pixel=pixel_sizes, geometry=geometries)
@settings(max_examples=60, deadline=None)
def test_kernels_are_binary_and_sum_to_one(pixel: tuple[float, float], geometry: tuple[float, float, float]) -> None:
    major, minor, offset_fraction = geometry
    params = ModelParams(kernel_semi_major_m=major, kernel_semi_minor_m=minor, kernel_offset_m=offset_fraction * major)
    kernels = spread_kernels(params, pixel)
    assert list(kernels) == list(DIRECTIONS)
    for direction, kernel in kernels.items():
        mask = kernel_mask(direction, params, pixel)
        assert mask.dtype == np.bool_
        assert kernel.shape == mask.shape and kernel.shape[0] % 2 == 1 and kernel.shape[1] % 2 == 1
        assert math.isclose(kernel.sum(), 1.0, rel_tol=1e-12)
        weights = np.unique(kernel[mask])
        assert len(weights) == 1 and np.all(kernel[~mask] == 0)  # binary before normalisation
        # The centre pixel is always in the footprint (offset < semi-major).
        assert mask[mask.shape[0] // 2, mask.shape[1] // 2]


@given(pixel=pixel_sizes, direction=st.sampled_from(DIRECTIONS))
@settings(max_examples=40, deadline=None)
def test_kernel_footprint_lies_downwind(pixel: tuple[float, float], direction: str) -> None:
    """The mean displacement of a footprint points downwind by about the ellipse offset."""
    mask = kernel_mask(direction, PARAMS, pixel)
    rows, cols = np.nonzero(mask)
    north = (rows - mask.shape[0] // 2) * pixel[0]
    east = (cols - mask.shape[1] // 2) * pixel[1]
    theta = math.radians(BEARINGS[direction])
    downwind = (-math.sin(theta), -math.cos(theta))
    mean_along = float(np.mean(east * downwind[0] + north * downwind[1]))
    # Pixelation moves the centroid by at most a pixel diagonal.
    assert abs(mean_along - PARAMS.kernel_offset_m) < math.hypot(*pixel)


@given(
    seed=st.integers(0, 2**32 - 1),
    pixel=st.floats(60.0, 150.0),
    ocean_cols=st.integers(0, 10),
)
@settings(max_examples=25, deadline=None)
def test_outputs_are_non_negative_and_nan_exactly_over_ocean(seed: int, pixel: float, ocean_cols: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (40, 36)
    bp = np.where(rng.random(shape) < 0.3, 0.0, rng.random(shape) * 0.1)
    bp[rng.random(shape) < 0.05] = np.nan
    cr = rng.random(shape) * 100
    cr[:, :ocean_cols] = np.nan
    shares = rng.random((8, *shape))
    out = wind_informed_risk(bp, cr, shares, pixel, PARAMS)
    land = np.isfinite(cr)
    for arr in (out.burn_probability, out.conditional_risk, out.risk):
        assert np.all(arr[land] >= 0)
        assert np.all(np.isnan(arr[~land]))
    assert np.all(out.score[~land] == SCORE_NODATA)
    assert np.all(out.score[land] <= 10)
    # Spreading averages burning pixels and the blur averages too: nothing exceeds the input.
    assert np.nanmax(out.burn_probability) <= np.nanmax(np.where(bp > 0, bp, 0)) + 1e-12


def test_west_wind_spreads_east_within_the_kernel_reach() -> None:
    """A west wind carries a single burning pixel's probability east, at most 3 x 510 m.

    The reference geometry (ellipse with semi-major 400 m centred 110 m downwind) also
    reaches 290 m upwind of its source per iteration, so some spread to the west is
    unavoidable: its bound is computed from the parameters and asserted, and the eastern
    mass must dominate.
    """
    pixel = 30.0
    params = PARAMS.model_copy(update={"blur_radius_m": 0.0})  # look at the spread alone
    n = 151
    centre = n // 2
    bp = np.zeros((n, n))
    bp[centre, centre] = 0.05
    out = wind_informed_risk(bp, np.ones((n, n)), one_hot("W", (n, n)), pixel, params)
    rows, cols = np.nonzero(out.burn_probability > 0)
    iters = params.spread_iterations
    a, b, off = params.kernel_semi_major_m, params.kernel_semi_minor_m, params.kernel_offset_m
    east_reach = iters * math.floor((a + off) / pixel)
    west_reach = iters * math.floor((a - off) / pixel)
    side_reach = iters * math.floor(b / pixel)
    assert cols.max() - centre == east_reach  # reached exactly
    assert east_reach * pixel <= 1530.0 + 1e-9
    assert centre - cols.min() <= west_reach
    assert np.abs(rows - centre).max() <= side_reach
    field = out.burn_probability
    east_mass = field[:, centre + 1 :].sum()
    west_mass = field[:, :centre].sum()
    assert east_mass > 1.5 * west_mass
    # Each iteration moves the footprint's centre by the ellipse offset, downwind.
    centroid_east_m = float(np.mean(cols - centre)) * pixel
    assert centroid_east_m > 0.8 * iters * off
    # Normalised convolution of one burning pixel: every reached pixel takes its value.
    assert np.allclose(field[field > 0], 0.05)

    # With the default blur the reach grows by exactly the blur radius.
    blurred = wind_informed_risk(bp, np.ones((n, n)), one_hot("W", (n, n)), pixel, PARAMS).burn_probability
    _, bcols = np.nonzero(blurred > 0)
    assert bcols.max() - centre == east_reach + round(PARAMS.blur_radius_m / pixel)


@given(direction=st.sampled_from(DIRECTIONS), pixel=st.floats(40.0, 100.0))
@settings(max_examples=24, deadline=None)
def test_spread_centroid_moves_downwind(direction: str, pixel: float) -> None:
    n = 81
    source = np.zeros((n, n))
    source[n // 2, n // 2] = 0.02
    field = spread(source, spread_kernels(PARAMS, pixel)[direction], PARAMS.spread_iterations)
    rows, cols = np.nonzero(field)
    theta = math.radians(BEARINGS[direction])
    along = (cols - n // 2) * -math.sin(theta) + (rows - n // 2) * -math.cos(theta)
    assert float(along.mean()) * pixel > PARAMS.kernel_offset_m


def test_gap_fill_fills_an_isolated_hole_and_nothing_else() -> None:
    bp = np.full((7, 7), 0.02)
    bp[3, 3] = 0.0  # isolated non-burnable pixel: filled
    bp[1, 1] = np.nan  # isolated missing pixel: filled
    bp[5, 1] = bp[5, 2] = 0.0  # two adjacent holes: each lacks a neighbour
    bp[0, 4] = 0.0  # edge: outside the array counts as not burning
    bp[5, 5] = 0.0  # ocean: never filled
    bp[1, 5] = 0.06
    land = np.ones((7, 7), dtype=bool)
    land[5, 5] = False
    filled = gap_fill(bp, land)
    assert filled[3, 3] == pytest.approx(0.02)
    assert filled[1, 1] == pytest.approx(0.02)
    changed = ~((filled == bp) | (np.isnan(filled) & np.isnan(bp)))
    assert np.argwhere(changed).tolist() == [[1, 1], [3, 3]]
    # The mean covers the positive values of the 3 x 3 window only.
    bp2 = np.full((5, 5), 0.01)
    bp2[2, 2] = 0.0
    bp2[1, 1] = 0.0  # a diagonal non-burnable neighbour does not block filling
    bp2[3, 3] = 0.05
    filled2 = gap_fill(bp2, np.ones((5, 5), dtype=bool))
    assert filled2[2, 2] == pytest.approx((6 * 0.01 + 0.05) / 7)


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_gap_fill_matches_the_rule_pixel_by_pixel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bp = np.where(rng.random((12, 10)) < 0.25, 0.0, rng.random((12, 10)))
    land = rng.random((12, 10)) > 0.1
    filled = gap_fill(bp, land)
    for i in range(12):
        for j in range(10):
            neighbours = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
            inside = all(0 <= r < 12 and 0 <= c < 10 for r, c in neighbours)
            fills = land[i, j] and bp[i, j] <= 0 and inside and all(bp[r, c] > 0 for r, c in neighbours)
            if fills:
                window = bp[i - 1 : i + 2, j - 1 : j + 2]
                assert filled[i, j] == pytest.approx(window[window > 0].mean())
            else:
                assert filled[i, j] == bp[i, j]


def test_score_bins_at_their_edges() -> None:
    edges = PARAMS.score_bin_edges
    risk = np.array([0.0, 1e-12, *edges, *(e * (1 + 1e-9) for e in edges[:-1]), 150.0, np.nan])
    expected = [0, 1, *range(1, 11), *range(2, 11), 10, SCORE_NODATA]
    assert score(risk, PARAMS).tolist() == expected
    assert score(risk, PARAMS).dtype == np.uint8


def _random_inputs(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bp = rng.random(shape) * 0.05
    bp[rng.random(shape) < 0.15] = 0.0  # many isolated holes, so gap fill matters at the rim
    cr = rng.random(shape) * 100
    shares = rng.random((8, *shape))
    return bp, cr, shares


def _window_result(
    bp: np.ndarray,
    cr: np.ndarray,
    shares: np.ndarray,
    target: tuple[slice, slice],
    halo: int,
    pixel: float | tuple[float, float],
) -> np.ndarray:
    """Burn probability over ``target`` computed from the inputs cut to ``target`` plus ``halo``."""
    rows, cols = target
    cut = (slice(rows.start - halo, rows.stop + halo), slice(cols.start - halo, cols.stop + halo))
    out = wind_informed_risk(bp[cut], cr[cut], shares[(slice(None), *cut)], pixel, PARAMS)
    return out.burn_probability[halo:-halo, halo:-halo]


@pytest.mark.parametrize("pixel", [(100.0, 100.0), (90.0, 110.0), (34.2, 26.9)])
def test_halo_suffices(pixel: tuple[float, float]) -> None:
    """A window grown by the halo reproduces a larger computation over random inputs."""
    halo = halo_pixels(PARAMS, pixel)
    region, margin = 24, halo + 6
    size = region + 2 * margin
    bp, cr, shares = _random_inputs(7, (size, size))
    whole = wind_informed_risk(bp, cr, shares, pixel, PARAMS).burn_probability
    target = (slice(margin, margin + region), slice(margin, margin + region))
    assert np.abs(_window_result(bp, cr, shares, target, halo, pixel) - whole[target]).max() < 1e-12


@pytest.mark.parametrize("pixel", [100.0, 60.0])
def test_halo_is_tight(pixel: float) -> None:
    """An input one pixel beyond ``halo - 1`` changes the region: the halo is not generous.

    The chain that attains the full reach: a hole at the rim whose right neighbour is just
    outside a ``halo - 1`` window (so only the larger window fills it), three kernel reaches
    of an east wind carrying it west, and the blur radius to the region's edge, ending on a
    non-burnable pixel (where the spread value, not the original, is kept). Coarse pixels
    keep the kernels small, so the rim's share of each mean, and the signal, stays large.
    """
    halo = halo_pixels(PARAMS, pixel)
    reach = kernel_mask("E", PARAMS, pixel).shape[1] // 2
    blur = round(PARAMS.blur_radius_m / pixel)
    assert halo == 1 + PARAMS.spread_iterations * reach + blur  # columns attain the halo
    region, margin = 8, halo + 4
    size = region + 2 * margin
    rng = np.random.default_rng(3)
    bp = rng.uniform(0.01, 0.05, (size, size))
    edge_row, edge_col = margin + region // 2, margin + region - 1  # a pixel on the right edge
    composite_col = edge_col + blur
    bp[edge_row, composite_col] = bp[edge_row + 1, composite_col] = 0.0  # two zeros: neither is filled
    bp[edge_row, composite_col + PARAMS.spread_iterations * reach] = 0.0  # the hole at the rim
    assert composite_col + PARAMS.spread_iterations * reach + 1 == edge_col + halo
    cr = np.ones((size, size))
    shares = one_hot("E", (size, size))
    whole = wind_informed_risk(bp, cr, shares, pixel, PARAMS).burn_probability
    target = (slice(margin, margin + region), slice(margin, margin + region))
    exact = np.abs(_window_result(bp, cr, shares, target, halo, pixel) - whole[target]).max()
    short = np.abs(_window_result(bp, cr, shares, target, halo - 1, pixel) - whole[target]).max()
    assert exact < 1e-12
    assert short > 1e-12  # far beyond floating-point noise (~1e-17 here)


def test_halo_of_default_params_at_30m() -> None:
    # 1 (gap fill) + 3 x 17 (510 m kernel reach) + 12 (360 m blur radius)
    assert halo_pixels(PARAMS, 30.0) == 64


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        wind_informed_risk(np.zeros((4, 4)), np.zeros((4, 5)), np.zeros((8, 4, 4)), 30.0, PARAMS)

"""Properties of the wind-informed risk model (pure arrays, no I/O), and its reference behaviour."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from risk_model.kernels import (
    BEARINGS,
    DIRECTIONS,
    RowBand,
    gaussian_weights,
    halo_pixels,
    kernel_mask,
    row_bands,
    spread_kernels,
)
from risk_model.params import ModelParams
from risk_model.schema import SCORE_NODATA
from risk_model.science import blur, gap_fill, score, wind_informed_risk
from risk_model.spread import spread

PARAMS = ModelParams()
# No blur (a 1-tap kernel), to look at the spread and composite alone.
NO_BLUR = PARAMS.model_copy(update={"blur_kernel_px": 1})
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
def test_outputs_are_non_negative_and_nan_where_the_reference_puts_it(seed: int, pixel: float, ocean_cols: int) -> None:
    """Reference: NaN over the ocean and within the blur's half width of NaN burn probability."""
    rng = np.random.default_rng(seed)
    shape = (40, 36)
    bp = np.where(rng.random(shape) < 0.3, 0.0, rng.random(shape) * 0.1)
    bp[rng.random(shape) < 0.02] = np.nan
    cr = rng.random(shape) * 100
    cr[:, :ocean_cols] = np.nan
    shares = rng.random((8, *shape))
    land = np.isfinite(cr)
    half = PARAMS.blur_kernel_px // 2
    # cv.GaussianBlur propagates NaN over its whole 17 x 17 kernel.
    near_nan = ndimage.binary_dilation(np.isnan(bp), np.ones((2 * half + 1, 2 * half + 1), dtype=bool))
    out = wind_informed_risk(bp, cr, shares, pixel, PARAMS)
    np.testing.assert_array_equal(np.isnan(out.burn_probability), ~land | near_nan)
    np.testing.assert_array_equal(np.isnan(out.risk), ~land | near_nan)
    assert np.all(out.score[np.isnan(out.risk)] == SCORE_NODATA)
    assert np.all(out.score[np.isfinite(out.risk)] <= 10)
    assert np.all(out.burn_probability[np.isfinite(out.burn_probability)] >= 0)
    # The option that renormalises over valid land: NaN exactly over the ocean and at NaN burn
    # probability itself, never around it.
    renorm = wind_informed_risk(bp, cr, shares, pixel, PARAMS.model_copy(update={"blur_nodata": "renormalise"}))
    np.testing.assert_array_equal(np.isnan(renorm.burn_probability), ~land | np.isnan(bp))
    for arr in (renorm.burn_probability, renorm.conditional_risk, renorm.risk):
        assert np.all(arr[np.isfinite(arr)] >= 0)
    # Spreading averages burning pixels and the blur averages too: nothing exceeds the input.
    assert np.nanmax(renorm.burn_probability) <= np.nanmax(np.where(bp > 0, bp, 0)) + 1e-12


def test_west_wind_spreads_east_within_the_kernel_reach() -> None:
    """A west wind carries a single burning pixel's probability east, at most 3 x 510 m.

    The reference geometry (ellipse with semi-major 400 m centred 110 m downwind) also
    reaches 290 m upwind of its source per iteration, so some spread to the west is
    unavoidable: its bound is computed from the parameters and asserted, and the eastern
    mass must dominate.
    """
    pixel = 30.0
    params = NO_BLUR  # look at the spread alone
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

    # With the reference blur (17 px) the reach grows by exactly its half width, 8 px.
    blurred = wind_informed_risk(bp, np.ones((n, n)), one_hot("W", (n, n)), pixel, PARAMS).burn_probability
    _, bcols = np.nonzero(blurred > 0)
    assert bcols.max() - centre == east_reach + 8


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


def test_gap_fill_is_the_reference_3x3_mean_with_zeros_counted() -> None:
    """The reference fills a hole with the 3 x 3 rolling mean: NaN left out, zeros counted."""
    bp = np.full((5, 5), 0.02)
    bp[2, 2] = 0.0  # a non-burnable pixel whose four edge neighbours burn: filled
    bp[1, 1] = 0.06  # a diagonal neighbour takes part in the mean, not in the test
    filled = gap_fill(bp)
    # 3 x 3 around (2, 2): seven 0.02, one 0.06 and the centre's own 0 -> 0.2 / 9.
    assert filled[2, 2] == pytest.approx(0.2 / 9)
    bp[2, 2] = np.nan  # a missing centre is left out of the mean: 0.2 / 8
    assert gap_fill(bp)[2, 2] == pytest.approx(0.025)
    bp[1, 3] = np.nan  # a missing diagonal neighbour too: (0.2 - 0.02) / 7
    assert gap_fill(bp)[2, 2] == pytest.approx(0.18 / 7)
    bp[1, 1] = 0.0  # a non-burnable diagonal neighbour counts as 0: (6 * 0.02) / 7
    assert gap_fill(bp)[2, 2] == pytest.approx(0.12 / 7)


def test_gap_fill_fills_isolated_holes_only() -> None:
    bp = np.full((7, 7), 0.02)
    bp[3, 3] = 0.0  # isolated: filled
    bp[5, 1] = bp[5, 2] = 0.0  # two adjacent holes: each lacks a burning neighbour
    bp[0, 4] = 0.0  # edge: outside the array counts as not burning
    bp[2, 5] = np.nan  # isolated missing pixel: filled too (the reference fills NaN and 0 alike)
    filled = gap_fill(bp)
    changed = ~((filled == bp) | (np.isnan(filled) & np.isnan(bp)))
    assert np.argwhere(changed).tolist() == [[2, 5], [3, 3]]
    assert filled[2, 5] == pytest.approx(0.02)  # eight 0.02 around it, itself left out
    assert filled[3, 3] == pytest.approx(8 * 0.02 / 9)


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30, deadline=None)
def test_gap_fill_matches_the_rule_pixel_by_pixel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bp = np.where(rng.random((12, 10)) < 0.25, 0.0, rng.random((12, 10)))
    bp[rng.random((12, 10)) < 0.1] = np.nan
    filled = gap_fill(bp)
    for i in range(12):
        for j in range(10):
            neighbours = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
            inside = all(0 <= r < 12 and 0 <= c < 10 for r, c in neighbours)
            fills = not bp[i, j] > 0 and inside and all(bp[r, c] > 0 for r, c in neighbours)
            if fills:
                window = bp[i - 1 : i + 2, j - 1 : j + 2]
                assert filled[i, j] == pytest.approx(np.nanmean(window))
            else:
                assert filled[i, j] == bp[i, j] or (np.isnan(filled[i, j]) and np.isnan(bp[i, j]))


def test_score_bins_at_their_edges() -> None:
    edges = PARAMS.score_bin_edges
    risk = np.array([0.0, 1e-12, *edges, *(e * (1 + 1e-9) for e in edges[:-1]), 150.0, np.nan])
    expected = [0, 1, *range(1, 11), *range(2, 11), 10, SCORE_NODATA]
    assert score(risk, PARAMS).tolist() == expected
    assert score(risk, PARAMS).dtype == np.uint8


def _random_inputs(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bp = rng.random(shape) * 0.05
    bp[rng.random(shape) < 0.15] = 0.0  # many non-burnable pixels, which take the spread value
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

    The chain that attains the full reach: a distinct burning pixel at the rim, three kernel
    reaches of an east wind carrying it west, and the blur's half width to the region's
    edge, ending on a non-burnable pixel (where the spread value, not the original, is kept).
    Coarse pixels keep the kernels small, so the rim's share of each mean stays large.
    """
    halo = halo_pixels(PARAMS, pixel)
    reach = kernel_mask("E", PARAMS, pixel).shape[1] // 2
    blur_half = PARAMS.blur_kernel_px // 2
    assert halo == PARAMS.spread_iterations * reach + blur_half  # columns attain the halo
    region, margin = 8, halo + 4
    size = region + 2 * margin
    rng = np.random.default_rng(3)
    bp = rng.uniform(0.01, 0.05, (size, size))
    edge_row, edge_col = margin + region // 2, margin + region - 1  # a pixel on the right edge
    composite_col = edge_col + blur_half
    bp[edge_row, composite_col] = 0.0  # not burnable: takes the spread value
    rim_col = composite_col + PARAMS.spread_iterations * reach
    assert rim_col == edge_col + halo
    bp[edge_row, rim_col] = 0.9  # only the halo window holds it
    cr = np.ones((size, size))
    shares = one_hot("E", (size, size))
    whole = wind_informed_risk(bp, cr, shares, pixel, PARAMS).burn_probability
    target = (slice(margin, margin + region), slice(margin, margin + region))
    exact = np.abs(_window_result(bp, cr, shares, target, halo, pixel) - whole[target]).max()
    short = np.abs(_window_result(bp, cr, shares, target, halo - 1, pixel) - whole[target]).max()
    assert exact < 1e-12
    assert short > 1e-9  # far beyond floating-point noise (~1e-17 here)


def test_halo_of_default_params_at_30m() -> None:
    # 3 x 17 (510 m kernel reach) + 8 (half of the 17 px blur)
    assert halo_pixels(PARAMS, 30.0) == 59


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        wind_informed_risk(np.zeros((4, 4)), np.zeros((4, 5)), np.zeros((8, 4, 4)), 30.0, PARAMS)


# --- The reference model, step by step, on hand-checked cases -------------------------------


def test_kernel_of_a_west_wind_at_100m_by_hand() -> None:
    """The W footprint at 100 m pixels, counted by hand.

    A burning pixel spreads into the ellipse (semi-axes 400 m east-west, 200 m north-south)
    centred 110 m east of it. Row 0: ((e - 110) / 400)**2 <= 1 for e = -200 .. 500 m, i.e.
    columns -2 .. 5 (8 pixels; -300 m gives (410 / 400)**2 > 1). Rows +-1 (n = 100 m):
    ((e - 110) / 400)**2 <= 0.75, |e - 110| <= 346.4, columns -2 .. 4 (7 each). Rows +-2
    (n = 200 m) would need e = 110 exactly: none. 22 pixels, each weighing 1 / 22.
    """
    mask = kernel_mask("W", PARAMS, 100.0)
    expected = np.zeros((3, 11), dtype=bool)  # rows -1 .. 1, columns -5 .. 5
    expected[1, 3:11] = True  # columns -2 .. 5
    expected[0, 3:10] = expected[2, 3:10] = True  # columns -2 .. 4
    np.testing.assert_array_equal(mask, expected)
    kernel = spread_kernels(PARAMS, 100.0)["W"]
    np.testing.assert_allclose(kernel[expected], 1 / 22)
    # At 300 m only the pixel itself and its eastern neighbour remain (-300 m: (410 / 400)**2 > 1;
    # +300 m: (190 / 400)**2 < 1; rows +-1: (300 / 200)**2 > 1).
    np.testing.assert_array_equal(kernel_mask("W", PARAMS, 300.0), [[False, True, True]])


def test_spread_by_hand() -> None:
    """One round of ``conv(A, w) / conv(A > 0, w)`` with a 1 x 3 box: the mean of burning pixels in reach."""
    box = np.full((1, 3), 1 / 3)
    a = np.array([[0.3, 0.0, 0.6, 0.0, 0.0]])
    # Reach of each pixel: itself and both neighbours (zeros beyond the ends).
    # col 0: {0.3, 0} -> 0.3; col 1: {0.3, 0.6} -> 0.45; col 2: 0.6; col 3: 0.6; col 4: nothing -> 0.
    np.testing.assert_allclose(spread(a, box, 1), [[0.3, 0.45, 0.6, 0.6, 0.0]], atol=1e-15)
    # Round 2 spreads the new values: col 4 now reaches col 3 (0.6); col 0 reaches 0.3 and 0.45.
    np.testing.assert_allclose(spread(a, box, 2), [[0.375, 0.45, 0.55, 0.6, 0.6]], atol=1e-15)
    # The reference clips convolved burn probability below its threshold to 0: with a clip of
    # 0.15, col 0 (0.3 / 3 = 0.1) is cut while col 1 ((0.3 + 0.6) / 3 = 0.3) is kept.
    np.testing.assert_allclose(spread(a, box, 1, clip=0.15), [[0.0, 0.45, 0.6, 0.6, 0.0]], atol=1e-15)


def _direct_spread(values: np.ndarray, kernel: np.ndarray, iterations: int, clip: float) -> np.ndarray:
    """The spread by direct convolution (:func:`scipy.ndimage.convolve`), the definition without FFTs."""
    for _ in range(iterations):
        numerator = ndimage.convolve(values, kernel, mode="constant")
        counts = np.rint(ndimage.convolve((values > 0).astype(np.float64), (kernel > 0) * 1.0, mode="constant"))
        reached = (counts > 0) & (numerator >= clip)
        values = np.where(reached, numerator / np.where(reached, counts, 1) * np.count_nonzero(kernel), 0.0)
    return values


def test_spread_convolves_only_the_columns_a_fire_reaches() -> None:
    """Burning pixels in a middle band of columns, none in the first strip's rows: the result is the
    direct convolution's, 0 beyond the kernel's reach (the part the spread no longer convolves)."""
    rng = np.random.default_rng(7)
    values = np.zeros((700, 300))  # two strips of rows (512 + 188)
    values[560:690, 120:170] = rng.random((130, 50)) * (rng.random((130, 50)) > 0.4)
    kernel = spread_kernels(PARAMS, (30.0, 30.0))["NE"]
    result = spread(values, kernel, 3, clip=PARAMS.spread_clip)
    expected = _direct_spread(values, kernel, 3, PARAMS.spread_clip)
    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-15)
    reach = 3 * (kernel.shape[1] // 2)
    assert (result[:, : 120 - reach] == 0).all() and (result[:, 170 + reach :] == 0).all()
    assert (result[:400] == 0).all() and (result[:, 120:170] > 0).any()


def _row_case(shares_w: float, shares_e: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 x 7 window at 300 m pixels: one burning pixel (0.04) in the middle; W and E winds only.

    At 300 m the W kernel carries a burning pixel one column east per round (see the kernel
    test) and the E kernel one column west, so after 3 rounds the W spread is 0.04 at columns
    3 .. 6 of the middle row and the E spread 0.04 at columns 0 .. 3.
    """
    bp = np.zeros((3, 7))
    bp[1, 3] = 0.04
    shares = np.zeros((8, 3, 7))
    shares[DIRECTIONS.index("W")] = shares_w
    shares[DIRECTIONS.index("E")] = shares_e
    return bp, np.full((3, 7), 50.0), shares


def test_composite_by_hand() -> None:
    bp, cr, shares = _row_case(0.75, 0.25)
    out = wind_informed_risk(bp, cr, shares, 300.0, NO_BLUR)
    # East of the fire: 0.75 x 0.04; west: 0.25 x 0.04; the fire keeps its own 0.04.
    expected = np.zeros((3, 7))
    expected[1] = [0.01, 0.01, 0.01, 0.04, 0.03, 0.03, 0.03]
    np.testing.assert_allclose(out.burn_probability, expected, atol=1e-15)
    np.testing.assert_allclose(out.risk, expected * 50.0, atol=1e-13)
    # Shares are renormalised per pixel: 3 : 1 is the same as 0.75 : 0.25.
    bp, cr, shares = _row_case(3.0, 1.0)
    np.testing.assert_allclose(
        wind_informed_risk(bp, cr, shares, 300.0, NO_BLUR).burn_probability, expected, atol=1e-15
    )


def test_missing_wind_gives_nan_as_the_reference_does() -> None:
    bp, cr, shares = _row_case(0.75, 0.25)
    shares[:, 1, 5] = 0.0  # no fire-weather hours here
    shares[DIRECTIONS.index("N"), 1, 1] = np.nan  # a missing share makes the whole pixel missing
    shares[:, 1, 3] = 0.0  # where the burn probability is not 0 the wind does not matter
    out = wind_informed_risk(bp, cr, shares, 300.0, NO_BLUR).burn_probability
    assert np.isnan(out[1, 5]) and np.isnan(out[1, 1])
    assert out[1, 3] == 0.04
    assert out[1, 4] == pytest.approx(0.03) and out[1, 0] == pytest.approx(0.01)
    assert np.isnan(out).sum() == 2
    # The option: equal shares, the mean of the 8 spread fields. At (1, 5) only the W spread
    # (0.04) is non-zero: 0.04 / 8. At (1, 1) only the E spread: 0.04 / 8.
    option = NO_BLUR.model_copy(update={"missing_wind": "equal_shares"})
    out = wind_informed_risk(bp, cr, shares, 300.0, option).burn_probability
    assert out[1, 5] == pytest.approx(0.005) and out[1, 1] == pytest.approx(0.005)


def test_nan_burn_probability_stays_nan_and_zero_takes_the_spread() -> None:
    bp, cr, shares = _row_case(0.75, 0.25)
    bp[1, 4] = np.nan  # no burn probability on land: NaN (the reference keeps BP where BP != 0)
    bp[1, 6] = 0.02  # a burning pixel keeps its own value, whatever spreads into it
    out = wind_informed_risk(bp, cr, shares, 300.0, NO_BLUR).burn_probability
    assert np.isnan(out[1, 4]) and np.isnan(out).sum() == 1
    assert out[1, 6] == 0.02
    # NaN does not burn but the spread passes through it: column 5 still gathers 0.04 from
    # column 4's spread value, which came from the fire (and from the burning column 6 the E
    # wind brings 0.02: 0.75 x 0.04 + 0.25 x 0.02).
    assert out[1, 5] == pytest.approx(0.035)


def test_reference_blur_weights() -> None:
    """The reference's cv.GaussianBlur(ksize=(17, 17), sigmaX=0): OpenCV's sigma for 17 taps is
    0.3 * ((17 - 1) / 2 - 1) + 0.8 = 2.9 px, weights exp(-x**2 / (2 * 2.9**2)), x = -8 .. 8, / sum."""
    assert PARAMS.blur_kernel_px == 17 and PARAMS.blur_sigma_px == pytest.approx(0.3 * ((17 - 1) * 0.5 - 1) + 0.8)
    weights = gaussian_weights(17, 2.9)
    x = np.arange(-8, 9)
    np.testing.assert_allclose(weights, np.exp(-(x**2) / 16.82) / np.exp(-(x**2) / 16.82).sum(), rtol=1e-15)
    # The sum of exp(-x**2 / 16.82) over all integers is sqrt(2 pi) 2.9 = 7.2693; the taps beyond
    # 8 px hold 2 x (e^-4.82 + e^-5.95 + e^-7.19 + ...) = 2 x 0.0117: 7.2458 over x = -8 .. 8.
    assert weights[8] == pytest.approx(1 / 7.2458, rel=1e-4)
    # By hand, 5 taps at sigma 1: (e^-2, e^-0.5, 1, e^-0.5, e^-2) / their sum.
    five = np.exp([-2.0, -0.5, 0.0, -0.5, -2.0])
    np.testing.assert_allclose(gaussian_weights(5, 1.0), five / five.sum(), rtol=1e-15)
    with pytest.raises(ValueError, match="odd"):
        gaussian_weights(4, 1.0)


def test_reference_blur_propagates_nan_over_its_kernel() -> None:
    """One NaN makes its 17 x 17 neighbourhood NaN (the reference's blur); an impulse becomes
    the outer product of the 1-D weights."""
    n = 41
    land = np.ones((n, n), dtype=bool)
    impulse = np.zeros((n, n))
    impulse[20, 20] = 1.0
    weights = gaussian_weights(17, 2.9)
    out = blur(impulse, land, PARAMS, 30.0)
    np.testing.assert_allclose(out[12:29, 12:29], np.outer(weights, weights), rtol=1e-12)
    assert out[20, 20] == pytest.approx(weights[8] ** 2)
    field = np.full((n, n), 0.02)
    field[20, 20] = np.nan
    out = blur(field, land, PARAMS, 30.0)
    expected = np.zeros((n, n), dtype=bool)
    expected[12:29, 12:29] = True
    np.testing.assert_array_equal(np.isnan(out), expected)
    # The option renormalises over valid land: a constant stays that constant next to the hole
    # and next to the ocean, and only the hole itself is NaN.
    land[:, :5] = False
    option = PARAMS.model_copy(update={"blur_nodata": "renormalise"})
    out = blur(field, land, option, 30.0)
    np.testing.assert_array_equal(np.isnan(out), ~land | np.isnan(field))
    np.testing.assert_allclose(out[np.isfinite(out)], 0.02, rtol=1e-12)


def test_blur_in_metres_is_an_option_sized_per_band() -> None:
    option = PARAMS.model_copy(update={"blur_scale": "metres", "blur_sigma_m": 60.0, "blur_radius_m": 90.0})
    impulse = np.zeros((21, 21))
    impulse[10, 10] = 1.0
    # 30 m x 15 m pixels: sigma 2 px and radius 3 px north-south, 4 px and 6 px east-west.
    out = blur(impulse, np.ones((21, 21), dtype=bool), option, (30.0, 15.0))
    np.testing.assert_allclose(out[7:14, 4:17], np.outer(gaussian_weights(7, 2.0), gaussian_weights(13, 4.0)))


def test_row_bands_must_tile_the_window() -> None:
    assert row_bands(30.0, 5) == [RowBand(slice(0, 5), (30.0, 30.0))]
    assert row_bands((34.0, 27.0), 5) == [RowBand(slice(0, 5), (34.0, 27.0))]
    two = [RowBand(slice(0, 2), (34.0, 27.0)), RowBand(slice(2, 5), (34.0, 26.0))]
    assert row_bands(two, 5) == two
    with pytest.raises(ValueError, match="tile"):
        row_bands(two, 6)
    with pytest.raises(ValueError, match="tile"):
        row_bands([two[1], two[0]], 5)


@pytest.mark.parametrize("blur_scale", ["pixels", "metres"])
def test_row_bands_make_a_pixel_independent_of_its_window(blur_scale: str) -> None:
    """Two bands with different kernels: any window with a halo reproduces the whole window.

    The pixel sizes differ enough (80 vs 100 m east-west) that the kernels of the two bands
    differ; each row is computed with its own band's kernels whichever window holds it.
    """
    params = PARAMS.model_copy(update={"blur_scale": blur_scale})
    size_a, size_b = (100.0, 100.0), (100.0, 80.0)
    assert not np.array_equal(kernel_mask("NE", params, size_a), kernel_mask("NE", params, size_b))
    n, border = 140, 70
    bp, cr, shares = _random_inputs(11, (n, 60))
    whole = wind_informed_risk(
        bp, cr, shares, [RowBand(slice(0, border), size_a), RowBand(slice(border, n), size_b)], params
    ).burn_probability
    halo = max(halo_pixels(params, size_a), halo_pixels(params, size_b))
    for rows in (slice(halo, border), slice(border, n - halo), slice(border - 10, border + 10)):
        cut = slice(rows.start - halo, rows.stop + halo)
        local_border = min(max(border - cut.start, 0), cut.stop - cut.start)
        bands = [RowBand(slice(0, local_border), size_a), RowBand(slice(local_border, cut.stop - cut.start), size_b)]
        bands = [band for band in bands if band.rows.stop > band.rows.start]
        part = wind_informed_risk(bp[cut], cr[cut], shares[:, cut], bands, params).burn_probability
        np.testing.assert_allclose(part[halo:-halo, halo:-halo], whole[rows, halo:-halo], rtol=0, atol=1e-12)
    # And one band's kernels on every row would differ: the bands matter.
    single = wind_informed_risk(bp, cr, shares, size_a, params).burn_probability
    assert np.nanmax(np.abs(single[border + halo : n - halo] - whole[border + halo : n - halo])) > 1e-6


def test_gap_fill_window_is_a_parameter() -> None:
    bp = np.full((7, 7), 0.02)
    bp[3, 3] = 0.0
    bp[1, 1] = 0.1  # outside the 3 x 3 window, inside the 5 x 5 one
    assert gap_fill(bp)[3, 3] == pytest.approx(8 * 0.02 / 9)
    # 5 x 5: twenty-three 0.02, one 0.1 and the hole's 0: 0.56 / 25.
    assert gap_fill(bp, window_px=5)[3, 3] == pytest.approx(0.56 / 25)

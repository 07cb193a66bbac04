"""The region quicklook: colour scale, orientation, PNG validity, statistics, and its Dagster metadata.

PNGs are decoded with GDAL's PNG driver (through rasterio), not with the encoder's own
logic, so a malformed file or a wrong pixel would show.
"""

import base64
import itertools
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import xarray as xr
from dagster import DagsterInstance, materialize
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

import risk_model.quicklook as quicklook
from resources.local_store import LocalIcechunkStore
from resources.region_metadata import quicklook_metadata
from risk_assets.assets import build_assets
from risk_assets.definitions import build_resources
from risk_assets.settings import Settings
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet
from risk_model.quicklook import MAX_SIDE, SCORE_COLOURS, downsample_scores, quicklook_png, region_stats, score_rgba
from risk_model.schema import DIMS, SCORE_NODATA, coordinates

TRANSPARENT = (0, 0, 0, 0)
DATA_URI = re.compile(r"!\[quicklook\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def decode_png(png: bytes) -> npt.NDArray[np.uint8]:
    """The PNG's pixels as ``(height, width, 4)`` RGBA, decoded by GDAL."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with warnings.catch_warnings():
        # A PNG has no georeferencing; GDAL says so, and that is expected here.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(png) as memfile, memfile.open(driver="PNG") as src:
            assert src.count == 4, "RGBA"
            assert src.dtypes == ("uint8",) * 4
            bands: npt.NDArray[np.uint8] = src.read()
    return np.moveaxis(bands, 0, -1)


def _half_and_half(rows: int, cols: int) -> npt.NDArray[np.uint8]:
    """Left half score 3, right half no data, the southern row (row 0) of the left half scores 10."""
    score = np.full((rows, cols), SCORE_NODATA, dtype=np.uint8)
    score[:, : cols // 2] = 3
    score[0, : cols // 2] = 10
    return score


def test_the_scale_in_the_docstring_is_the_scale_in_the_code() -> None:
    assert quicklook.__doc__ is not None
    table = dict(re.findall(r"^(\d+)\s+``(#[0-9a-f]{6})``$", quicklook.__doc__, flags=re.MULTILINE))
    assert table == {str(s): colour for s, colour in enumerate(SCORE_COLOURS)}
    assert re.search(rf"^{SCORE_NODATA}\s+transparent", quicklook.__doc__, flags=re.MULTILINE)


def test_the_scale_is_eleven_distinct_colours_darkening_from_1_to_10() -> None:
    assert len(SCORE_COLOURS) == 11 and len(set(SCORE_COLOURS)) == 11
    rgba = [score_rgba(s) for s in range(11)]
    assert all(c[3] == 255 for c in rgba), "every score is opaque"
    assert score_rgba(SCORE_NODATA) == TRANSPARENT
    luminance = [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b, _ in rgba]
    assert all(a > b for a, b in itertools.pairwise(luminance[1:])), "sequential: 1 light, 10 dark"
    r0, g0, b0, _ = rgba[0]
    assert r0 == g0 == b0 and luminance[0] > 200, "score 0 is a light neutral grey"
    with pytest.raises(ValueError, match="11"):
        score_rgba(11)


def test_quicklook_is_a_png_in_the_scale_with_north_up() -> None:
    score = _half_and_half(40, 60)
    image = decode_png(quicklook_png(score))
    assert image.shape == (40, 60, 4), "small regions are not resampled"
    # Row 0 of the array is the south: it is the bottom row of the image.
    assert (image[-1, :30] == score_rgba(10)).all()
    assert (image[:-1, :30] == score_rgba(3)).all()
    assert (image[:, 30:] == TRANSPARENT).all()
    # Without the flip (an array already north-up) the marker row is at the top.
    assert (decode_png(quicklook_png(score, south_up=False))[0, :30] == score_rgba(10)).all()


def test_every_score_gets_its_colour() -> None:
    score = np.array([[*range(11), SCORE_NODATA]], dtype=np.uint8)
    image = decode_png(quicklook_png(score))
    assert [tuple(int(v) for v in px) for px in image[0]] == [*(score_rgba(s) for s in range(11)), TRANSPARENT]


def test_a_production_sized_region_becomes_a_small_png() -> None:
    score = _half_and_half(6000, 4500)
    png = quicklook_png(score)
    image = decode_png(png)
    # factor ceil(6000 / 256) = 24: 250 x 188 pixels
    assert image.shape == (250, 188, 4)
    assert max(image.shape[:2]) <= MAX_SIDE
    # Column block 93 covers columns 2232-2255: 18 of score 3 and 6 of no data; data wins.
    assert (image[:-1, :94] == score_rgba(3)).all()
    assert (image[:, 94:] == TRANSPARENT).all()
    # The southern row is one row in 24 of the bottom block: the block mode is 3 there.
    assert (image[-1, :94] == score_rgba(3)).all()
    assert len(png) < 5_000, f"a two-colour quicklook compresses well, got {len(png)} bytes"
    noisy = np.random.default_rng(0).integers(0, 11, (6000, 4500), dtype=np.uint8)
    assert len(quicklook_png(noisy)) < 64_000, "even per-pixel noise stays within a few tens of kB"


def test_block_mode_ties_go_to_the_lower_score_then_to_data() -> None:
    score = np.array(
        [
            [5, 5, 2, 2, 255, 255, 255, 255],
            [7, 5, 7, 2, 9, 9, 255, 4],
            [1, 1, 255, 255, 3, 6, 8, 8],
            [255, 255, 255, 255, 6, 3, 8, 8],
        ],
        dtype=np.uint8,
    )
    # factor ceil(8 / 4) = 2: eight 2 x 2 blocks
    assert downsample_scores(score, max_side=4).tolist() == [[5, 2, 9, 255], [1, 255, 3, 8]]
    assert downsample_scores(score, max_side=8) is score


@pytest.mark.parametrize("bad", [11, 254])
def test_invalid_scores_are_refused(bad: int) -> None:
    score = np.zeros((4, 4), dtype=np.uint8)
    score[1, 2] = bad
    with pytest.raises(ValueError, match=str(bad)):
        quicklook_png(score)
    with pytest.raises(ValueError, match=str(bad)):
        region_stats(np.zeros((4, 4), dtype=np.float32), score)


def _random_region(seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    rng = np.random.default_rng(seed)
    risk = rng.gamma(0.5, 0.2, (300, 260)).astype(np.float32)
    risk[rng.random(risk.shape) < 0.1] = 0.0
    risk[:, :40] = np.nan
    score = np.minimum(np.digitize(risk, (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0)), 10).astype(np.uint8)
    score[risk == 0] = 0
    score[np.isnan(risk)] = SCORE_NODATA
    return risk, score


def test_statistics_match_a_direct_computation() -> None:
    risk, score = _random_region(1)
    stats = region_stats(risk, score)
    assert stats.risk_min == float(np.nanmin(risk)) == 0.0
    assert stats.risk_max == float(np.nanmax(risk))
    assert stats.risk_mean == pytest.approx(float(np.nanmean(risk.astype(np.float64))), rel=1e-12)
    assert stats.pixels == 300 * 260
    assert stats.nodata_share == pytest.approx(40 / 260)
    assert stats.class_shares == tuple(pytest.approx(float((score == s).mean())) for s in range(11))
    assert stats.class_shares[0] > 0.05, "the zero class is populated"
    assert sum(stats.class_shares) + stats.nodata_share == pytest.approx(1.0)


def test_an_all_ocean_region_has_no_risk_range_and_no_warning() -> None:
    risk = np.full((8, 8), np.nan, dtype=np.float32)
    score = np.full((8, 8), SCORE_NODATA, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = region_stats(risk, score)
    assert np.isnan([stats.risk_min, stats.risk_mean, stats.risk_max]).all()
    assert stats.nodata_share == 1.0 and sum(stats.class_shares) == 0.0
    assert (decode_png(quicklook_png(score)) == TRANSPARENT).all()


def test_metadata_reads_the_orientation_from_the_latitude(demo_registry: RegionRegistry) -> None:
    region = demo_registry.get(demo_registry.ids[0])
    risk, score = _random_region(2)
    risk, score = risk[: region.shape[0], : region.shape[1]], score[: region.shape[0], : region.shape[1]]
    coords = coordinates(demo_registry.grid, region.rows, region.cols)
    ds = xr.Dataset({"risk": (DIMS, risk), "score": (DIMS, score)}, coords=coords)
    ascending = _metadata_png(quicklook_metadata(ds))
    descending = _metadata_png(quicklook_metadata(ds.isel(latitude=slice(None, None, -1))))
    assert np.array_equal(ascending, descending), "the same place gives the same picture"
    assert np.array_equal(ascending, decode_png(quicklook_png(score, south_up=True)))


def _metadata_png(metadata: dict[str, Any]) -> npt.NDArray[np.uint8]:
    match = DATA_URI.search(metadata["quicklook"].value)
    assert match, metadata["quicklook"].value[:200]
    return decode_png(base64.b64decode(match.group(1)))


def _materialize(home: Path, registry: RegionRegistry, inputs: InputSet, partition: str | None) -> Any:
    resources = build_resources(Settings(home=home, grid="demo"), inputs=inputs)
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            build_assets(registry),
            selection=["risk_raster"] if partition else ["model_params", "raster_template"],
            partition_key=partition,
            resources=resources,
            instance=instance,
        )
    assert result.success
    return result


def _stored_region(home: Path, registry: RegionRegistry, region_id: str) -> xr.Dataset:
    """The region as stored on the branch tip, read back from the repository."""
    repo = LocalIcechunkStore(path=str(Settings(home=home).store_path)).repository()
    region = registry.get(region_id)
    # the version's branch, where regions are written (main before the first region)
    branch = next((b for b in repo.list_branches() if b.startswith("build-")), "main")
    stored = xr.open_zarr(repo.readonly_session(branch=branch).store, consolidated=False)
    region_ds: xr.Dataset = stored.isel(latitude=region.rows, longitude=region.cols).load()
    return region_ds


def test_materialization_metadata_carries_the_quicklook_of_the_stored_region(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet
) -> None:
    _materialize(tmp_path, demo_registry, demo_inputs, None)
    region_id = "y0_x1"  # on the coast: land and ocean (no data) side by side
    assert (_stored_region(tmp_path, demo_registry, region_id)["score"].values == SCORE_NODATA).all(), "not built"

    for status in ("written", "skipped"):
        [event] = _materialize(tmp_path, demo_registry, demo_inputs, region_id).get_asset_materialization_events()
        meta = event.materialization.metadata
        assert meta["status"].value == status
        assert {"snapshot_id", "region", "bounds", "params_version"} <= set(meta), "existing keys are kept"

        ds = _stored_region(tmp_path, demo_registry, region_id)
        risk, score = ds["risk"].values, ds["score"].values
        assert meta["risk_min"].value == float(np.nanmin(risk))
        assert meta["risk_max"].value == float(np.nanmax(risk))
        assert meta["risk_mean"].value == pytest.approx(float(np.nanmean(risk.astype(np.float64))), rel=1e-12)
        assert meta["nodata_share"].value == pytest.approx(float(np.isnan(risk).mean()))
        assert 0.2 < meta["nodata_share"].value < 0.8, "a coastal region"
        assert meta["score_class_shares"].value == pytest.approx(
            {str(s): float((score == s).mean()) for s in range(11)}
        )

        image = _metadata_png(meta)
        assert image.shape == (*score.shape, 4), "a 256 px demo region is drawn at full resolution"
        # Pixel by pixel in the documented scale, north (the last latitude row) at the top.
        lookup = np.zeros((256, 4), dtype=np.uint8)
        for value in (*range(11), SCORE_NODATA):
            lookup[value] = score_rgba(value)
        expected_image = lookup[score[::-1]]
        assert np.array_equal(image, expected_image)
        assert len(set(np.unique(score).tolist()) - {SCORE_NODATA}) >= 3, "a region with several classes"
        assert meta["quicklook_bytes"].value < 30_000

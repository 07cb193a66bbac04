"""Loading, validating and versioning the model parameters."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from risk_model.params import DEFAULT_PARAMS_PATH, ModelParams, ParamsError, load_params, params_version


def write(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_file_loads_and_holds_the_model_defaults() -> None:
    params = load_params(DEFAULT_PARAMS_PATH)
    assert params == ModelParams()
    # Every field is spelled out in the checked-in file, so it documents all of them.
    assert set(yaml.safe_load(DEFAULT_PARAMS_PATH.read_text())) == set(ModelParams.model_fields)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ParamsError, match=r"nope\.yaml does not exist") as info:
        load_params(missing)
    assert str(DEFAULT_PARAMS_PATH) in str(info.value)  # says where the defaults are


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "kernel_semi_major_m: [400\nspread_iterations: 3\n", "broken.yaml")
    with pytest.raises(ParamsError, match=r"broken\.yaml is not valid YAML"):
        load_params(path)


def test_a_list_is_not_a_parameters_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="must hold a mapping"):
        load_params(write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("kernel_semi_major_m: -1\n", "kernel_semi_major_m"),
        ("kernel_semi_minor_m: 0\n", "kernel_semi_minor_m"),
        ("spread_iterations: 0\n", "spread_iterations"),
        ("blur_sigma_m: abc\n", "blur_sigma_m"),
        ("score_bin_edges: [0.01, 0.02, 0.02, 0.06, 0.1, 0.2, 0.5, 1, 3, 100]\n", "score_bin_edges"),
        ("score_bin_edges: [0.01, 0.02]\n", "score_bin_edges"),
        ("score_bin_edges: [0, 0.02, 0.035, 0.06, 0.1, 0.2, 0.5, 1, 3, 100]\n", "score_bin_edges"),
        ("wind_resampling: lanczos-ish\n", "wind_resampling"),
        ("blur_kernel_px: 16\n", "blur_kernel_px"),  # a centred kernel has an odd side
        ("gap_fill_window_px: 4\n", "gap_fill_window_px"),
        ("blur_nodata: ignore\n", "blur_nodata"),
        ("missing_wind: zero\n", "missing_wind"),
        ("blur_scale: feet\n", "blur_scale"),
        ("kernel_band_deg: 0\n", "kernel_band_deg"),
        ("kernel_sem_major_m: 400\n", "kernel_sem_major_m"),  # unknown (misspelt) key
    ],
)
def test_invalid_values_name_the_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message


def test_offset_must_stay_inside_the_ellipse(tmp_path: Path) -> None:
    path = write(tmp_path, "kernel_semi_major_m: 100\nkernel_offset_m: 100\n")
    with pytest.raises(ParamsError, match="kernel_offset_m"):
        load_params(path)


def test_params_are_frozen() -> None:
    params = ModelParams()
    with pytest.raises(ValidationError):
        params.spread_iterations = 4  # type: ignore[misc]


def test_version_ignores_formatting_and_key_order(tmp_path: Path) -> None:
    block = write(tmp_path, "kernel_semi_major_m: 400\nblur_sigma_m: 120.0\n", "a.yaml")
    flow = write(tmp_path, "{blur_sigma_m: 1.2e2, kernel_semi_major_m: 400.0}  # same values\n", "b.yaml")
    assert params_version(load_params(block)) == params_version(load_params(flow))
    assert params_version(load_params(block)) == params_version(load_params(DEFAULT_PARAMS_PATH))
    assert len(params_version(ModelParams())) == 12


@given(order=st.permutations(sorted(ModelParams.model_fields)))
@settings(max_examples=20, deadline=None)
def test_version_is_stable_under_any_key_order(order: list[str]) -> None:
    defaults = ModelParams().model_dump()
    reordered = ModelParams.model_validate({key: defaults[key] for key in order})
    assert params_version(reordered) == params_version(ModelParams())


@pytest.mark.parametrize(
    "update",
    [
        {"kernel_offset_m": 111.0},
        {"spread_iterations": 2},
        {"wind_resampling": "bilinear"},
        {"blur_radius_m": 0.0},
        {"blur_nodata": "renormalise"},
        {"missing_wind": "equal_shares"},
        {"kernel_band_deg": 1.0},
    ],
)
def test_version_changes_with_any_value(update: dict[str, object]) -> None:
    changed = ModelParams.model_validate({**ModelParams().model_dump(), **update})
    assert params_version(changed) != params_version(ModelParams())


def test_defaults_are_the_reference_model() -> None:
    """Every constant of the reference (carbonplan/ocr, ocr/risks/fire.py) is the default."""
    params = ModelParams()
    assert (params.kernel_semi_major_m, params.kernel_semi_minor_m, params.kernel_offset_m) == (400.0, 200.0, 110.0)
    assert params.spread_iterations == 3 and params.spread_clip == 10e-12
    assert (params.blur_scale, params.blur_kernel_px, params.blur_sigma_px) == ("pixels", 17, 2.9)
    assert params.blur_nodata == "propagate" and params.missing_wind == "nan"
    assert params.gap_fill_window_px == 3
    assert params.burn_probability_resampling == params.wind_resampling == "nearest"
    assert params.earth_radius_m == 6_371_000.0
    # Latitude bands: the reference grid's 6000-row chunks (its regions) from its southern edge.
    assert params.kernel_band_origin_deg == 22.428114227623333
    assert params.kernel_band_deg == pytest.approx(6000 * 0.00030799387843671866, rel=1e-15)

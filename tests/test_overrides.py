"""Per-region parameter overrides: loading, validation, applying and per-region versions."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from risk_model.grid import RegionRegistry
from risk_model.overrides import (
    DEFAULT_OVERRIDES_PATH,
    NO_OVERRIDE_VERSION,
    RegionOverrides,
    effective_params_version,
    load_overrides,
)
from risk_model.params import ModelParams, ParamsError, params_version

TWO_REGIONS = """\
y1_x1:
  blur_sigma_m: 150.0
y2_x3:
  kernel_semi_major_m: 500.0
  kernel_offset_m: 150.0
"""


def write(tmp_path: Path, text: str, name: str = "overrides.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def versions(overrides: RegionOverrides, registry: RegionRegistry) -> dict[str, str]:
    return {rid: overrides.region_version(rid) for rid in registry.ids}


def test_checked_in_file_means_no_overrides(demo_registry: RegionRegistry) -> None:
    overrides = load_overrides(DEFAULT_OVERRIDES_PATH, demo_registry.ids)
    assert overrides.regions == {}
    assert yaml.safe_load(DEFAULT_OVERRIDES_PATH.read_text()) == {}
    assert overrides.version() == NO_OVERRIDE_VERSION
    assert set(versions(overrides, demo_registry).values()) == {NO_OVERRIDE_VERSION}
    params = ModelParams()
    assert {effective_params_version(params, overrides, rid) for rid in demo_registry.ids} == {params_version(params)}


def test_no_path_means_no_overrides() -> None:
    assert load_overrides(None) == RegionOverrides()
    assert load_overrides(None).version() == NO_OVERRIDE_VERSION


def test_an_override_changes_only_its_fields(tmp_path: Path, demo_registry: RegionRegistry) -> None:
    overrides = load_overrides(write(tmp_path, TWO_REGIONS), demo_registry.ids)
    params = ModelParams()
    assert overrides.for_region("y1_x1") == {"blur_sigma_m": 150.0}
    assert overrides.for_region("y0_x1") == {}

    base = params.model_dump()
    effective = overrides.apply(params, "y2_x3").model_dump()
    assert {k for k in base if base[k] != effective[k]} == {"kernel_semi_major_m", "kernel_offset_m"}
    assert (effective["kernel_semi_major_m"], effective["kernel_offset_m"]) == (500.0, 150.0)
    assert overrides.apply(params, "y1_x1").blur_sigma_m == 150.0

    assert overrides.apply(params, "y0_x1") is params  # no override: the global parameters
    assert effective_params_version(params, overrides, "y0_x1") == params_version(params)
    assert effective_params_version(params, overrides, "y1_x1") == params_version(overrides.apply(params, "y1_x1"))
    assert len({effective_params_version(params, overrides, rid) for rid in ("y0_x1", "y1_x1", "y2_x3")}) == 3


def test_for_region_returns_a_copy(tmp_path: Path) -> None:
    overrides = load_overrides(write(tmp_path, TWO_REGIONS))
    overrides.for_region("y1_x1")["blur_sigma_m"] = 1.0
    assert overrides.for_region("y1_x1") == {"blur_sigma_m": 150.0}


def test_editing_one_override_changes_only_that_regions_version(tmp_path: Path, demo_registry: RegionRegistry) -> None:
    before = load_overrides(write(tmp_path, TWO_REGIONS, "before.yaml"), demo_registry.ids)
    after = load_overrides(
        write(tmp_path, TWO_REGIONS.replace("blur_sigma_m: 150.0", "blur_sigma_m: 160.0"), "after.yaml"),
        demo_registry.ids,
    )
    old, new = versions(before, demo_registry), versions(after, demo_registry)
    assert {rid for rid in old if old[rid] != new[rid]} == {"y1_x1"}
    assert old["y2_x3"] != NO_OVERRIDE_VERSION and old["y1_x1"] != old["y2_x3"]
    assert before.version() != after.version()

    # Adding a region changes that region alone; removing one sets it back to "none".
    added = load_overrides(write(tmp_path, TWO_REGIONS + "y3_x4: {spread_iterations: 2}\n", "added.yaml"))
    assert {rid for rid in old if old[rid] != added.region_version(rid)} == {"y3_x4"}
    removed = load_overrides(write(tmp_path, TWO_REGIONS.split("y2_x3")[0], "removed.yaml"))
    assert {rid for rid in old if old[rid] != removed.region_version(rid)} == {"y2_x3"}
    assert removed.region_version("y2_x3") == NO_OVERRIDE_VERSION


def test_spelling_and_key_order_do_not_change_versions(tmp_path: Path) -> None:
    block = load_overrides(write(tmp_path, TWO_REGIONS + "y3_x4:\n  spread_iterations: 2\n", "block.yaml"))
    flow = load_overrides(
        write(
            tmp_path,
            "# same content, other spelling\n"
            "{y3_x4: {spread_iterations: 2.0},\n"
            " y2_x3: {kernel_offset_m: 150, kernel_semi_major_m: 5e2},\n"
            " y1_x1: {blur_sigma_m: 150}}\n",
            "flow.yaml",
        )
    )
    for rid in ("y1_x1", "y2_x3", "y3_x4"):
        assert block.region_version(rid) == flow.region_version(rid)
    assert block.version() == flow.version()
    assert block.regions == flow.regions
    assert flow.for_region("y1_x1") == {"blur_sigma_m": 150.0}
    assert isinstance(flow.for_region("y3_x4")["spread_iterations"], int)


@given(order=st.permutations(["blur_sigma_m", "kernel_semi_minor_m", "spread_iterations", "wind_resampling"]))
@settings(max_examples=20, deadline=None)
def test_region_version_is_stable_under_any_key_order(order: list[str]) -> None:
    values = {"blur_sigma_m": 150, "kernel_semi_minor_m": 210.0, "spread_iterations": 2, "wind_resampling": "nearest"}
    reference = RegionOverrides(regions={"y1_x1": values})
    reordered = RegionOverrides(regions={"y1_x1": {key: values[key] for key in order}})
    assert reordered.region_version("y1_x1") == reference.region_version("y1_x1")


def test_empty_overrides_are_no_overrides(tmp_path: Path) -> None:
    overrides = load_overrides(write(tmp_path, "y1_x1: {}\ny1_x2:\n"))
    assert overrides.regions == {}
    assert overrides.region_version("y1_x1") == overrides.region_version("y1_x2") == NO_OVERRIDE_VERSION
    assert overrides.version() == NO_OVERRIDE_VERSION
    assert load_overrides(write(tmp_path, "# only a comment\n", "comment.yaml")).regions == {}


def test_restating_a_global_value_is_content_but_not_a_parameter_change(tmp_path: Path) -> None:
    overrides = load_overrides(write(tmp_path, "y1_x1: {blur_sigma_m: 120.0}\n"))
    params = ModelParams()
    assert overrides.region_version("y1_x1") != NO_OVERRIDE_VERSION
    assert effective_params_version(params, overrides, "y1_x1") == params_version(params)


def test_yaml_anchors_and_merges_are_allowed(tmp_path: Path) -> None:
    text = "y1_x1: &coastal {blur_sigma_m: 150.0, spread_iterations: 2}\ny1_x2:\n  <<: *coastal\n  blur_sigma_m: 200\n"
    overrides = load_overrides(write(tmp_path, text))
    assert overrides.for_region("y1_x2") == {"blur_sigma_m": 200.0, "spread_iterations": 2}


@pytest.mark.parametrize(
    ("text", "culprits"),
    [
        ("y1_x1: {blur_sigma_m: -1}\n", ["y1_x1", "blur_sigma_m", "greater than 0"]),
        ("y1_x1: {blur_sigma_m: abc}\n", ["y1_x1", "blur_sigma_m", "'abc'"]),
        ("y1_x1: {spread_iterations: 2.5}\n", ["y1_x1", "spread_iterations"]),
        ("y1_x1: {wind_resampling: lanczos-ish}\n", ["y1_x1", "wind_resampling"]),
        ("y1_x1: {score_bin_edges: [0.01, 0.02]}\n", ["y1_x1", "score_bin_edges", "exactly 10"]),
        ("y1_x1: {blur_sigm_m: 150}\n", ["y1_x1", "unknown parameter 'blur_sigm_m'", "did you mean 'blur_sigma_m'"]),
        ("y99_x99: {blur_sigma_m: 150}\n", ["unknown region 'y99_x99'", "risk regions"]),
        ("r02c03: {blur_sigma_m: 150}\n", ["'r02c03' is malformed", "y3_x12", "risk regions"]),
        ("y01_x1: {blur_sigma_m: 150}\n", ["'y01_x1' is not canonical", "'y1_x1'"]),
        ("12: {blur_sigma_m: 150}\n", ["region id 12 is not a string"]),
        ("y1_x1: 150\n", ["y1_x1", "must be a mapping", "int"]),
        ("y1_x1: [blur_sigma_m, 150]\n", ["y1_x1", "must be a mapping", "list"]),
    ],
)
def test_invalid_entries_name_the_file_region_and_field(
    tmp_path: Path, demo_registry: RegionRegistry, text: str, culprits: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        load_overrides(path, demo_registry.ids)
    message = str(info.value)
    assert f"overrides file {path}" in message
    for culprit in culprits:
        assert culprit in message


def test_every_problem_is_reported_at_once(tmp_path: Path, demo_registry: RegionRegistry) -> None:
    path = write(tmp_path, "y1_x1: {blur_sigma_m: -1}\ny99_x99: {}\ny2_x2: {spread_iterations: 0, nope: 1}\n")
    with pytest.raises(ParamsError) as info:
        load_overrides(path, demo_registry.ids)
    message = str(info.value)
    for culprit in ("y1_x1, field blur_sigma_m", "'y99_x99'", "y2_x2, field spread_iterations", "'nope'"):
        assert culprit in message


def test_without_a_registry_only_the_id_form_is_checked(tmp_path: Path) -> None:
    assert load_overrides(write(tmp_path, "y99_x99: {blur_sigma_m: 150}\n")).for_region("y99_x99") == {
        "blur_sigma_m": 150.0
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("y1_x1: {blur_sigma_m: [150\n", r"bad\.yaml is not valid YAML"),
        (
            "y1_x1: {blur_sigma_m: 150}\ny1_x1: {spread_iterations: 2}\n",
            r"(?s)bad\.yaml is not valid YAML.*duplicate key .y1_x1.",
        ),
        ("- y1_x1\n- y1_x2\n", r"bad\.yaml must hold a mapping of region ids"),
        ("just a string\n", r"bad\.yaml must hold a mapping of region ids"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        load_overrides(write(tmp_path, text, "bad.yaml"))


def test_a_missing_file_is_an_error_not_no_overrides(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"nope\.yaml does not exist") as info:
        load_overrides(tmp_path / "nope.yaml")
    assert str(DEFAULT_OVERRIDES_PATH) in str(info.value)


def test_cross_field_checks_run_on_the_effective_parameters(tmp_path: Path) -> None:
    # Valid field by field; whether it is valid as a whole depends on the global kernel_offset_m.
    path = write(tmp_path, "y1_x1: {kernel_semi_major_m: 100.0}\n")
    overrides = load_overrides(path)
    with pytest.raises(ParamsError) as info:
        overrides.apply(ModelParams(), "y1_x1")
    message = str(info.value)
    assert str(path) in message and "y1_x1" in message and "kernel_offset_m" in message
    with pytest.raises(ParamsError, match="y1_x1"):
        effective_params_version(ModelParams(), overrides, "y1_x1")
    with pytest.raises(ParamsError, match="kernel_offset_m"):
        load_overrides(path, params=ModelParams())  # checked at load time when the parameters are given

    assert overrides.apply(ModelParams(kernel_offset_m=50.0), "y1_x1").kernel_semi_major_m == 100.0
    both = load_overrides(write(tmp_path, "y1_x1: {kernel_semi_major_m: 100, kernel_offset_m: 50}\n", "b.yaml"))
    assert both.apply(ModelParams(), "y1_x1").kernel_offset_m == 50.0


def test_overrides_built_in_code_are_validated_and_frozen() -> None:
    overrides = RegionOverrides(regions={"y1_x1": {"blur_sigma_m": 150}})
    assert overrides.for_region("y1_x1") == {"blur_sigma_m": 150.0}
    with pytest.raises(ValidationError, match="blur_sigma_m"):
        RegionOverrides(regions={"y1_x1": {"blur_sigma_m": -1}})
    with pytest.raises(ValidationError, match="malformed"):
        RegionOverrides(regions={"r02c03": {"blur_sigma_m": 150}})
    with pytest.raises(ValidationError):
        overrides.regions = {}  # type: ignore[misc]

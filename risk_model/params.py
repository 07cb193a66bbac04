"""Parameters of the wind-informed risk model, loaded from YAML and versioned by content.

Every constant of :mod:`risk_model.science` lives in :class:`ModelParams`, so a change of
any of them changes :func:`params_version` and therefore which regions are stale. The
checked-in defaults are ``risk_model/data/params/default.yaml``; per-region overrides are
:mod:`risk_model.overrides`.
"""

import difflib
import itertools
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from risk_model.digest import digest
from risk_model.errors import BadInputError

DEFAULT_PARAMS_PATH = Path(__file__).parent / "data" / "params" / "default.yaml"

Resampling = Literal["nearest", "bilinear", "cubic", "average"]
#: A float that must be a finite number: NaN passes every range check (comparisons with NaN are
#: false) and infinity has no JSON form, so both are refused with "Input should be a finite number".
Finite = Annotated[float, Field(allow_inf_nan=False)]
PositiveMetres = Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)]


class ParamsError(BadInputError, ValueError):
    """A parameters file that is missing, is not valid YAML, or holds invalid values."""


class ModelParams(BaseModel):
    """All constants of the wind-informed risk model.

    Lengths are in metres on the ground; the science converts them to pixels with the
    pixel size of the region being computed.

    Parameters
    ----------
    kernel_semi_major_m
        Semi-axis of the spread ellipse along the wind.
    kernel_semi_minor_m
        Semi-axis of the spread ellipse across the wind.
    kernel_offset_m
        Distance from a target pixel to the centre of the ellipse it gathers from, upwind.
        It must be smaller than ``kernel_semi_major_m`` so every kernel holds its own
        centre pixel (a burning pixel then always counts in its own normalisation).
    spread_iterations
        Iterations of the zero-ignoring normalised convolution per direction.
    blur_sigma_m
        Standard deviation of the final Gaussian blur.
    blur_radius_m
        Truncation radius of the Gaussian blur; it bounds the halo a region needs.
    score_bin_edges
        Upper edges of score bins 1..10: risk in ``(0, edge[0]]`` scores 1, risk in
        ``(edge[8], edge[9]]`` scores 10; risk 0 scores 0. Finite: risk above the last edge
        also scores 10, so no edge needs to be infinite.
    earth_radius_m
        Radius of the sphere used to turn degrees into metres for the pixel size.
    burn_probability_resampling, wind_resampling
        Resampling used when a source is not already on the output grid.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kernel_semi_major_m: PositiveMetres = 400.0
    kernel_semi_minor_m: PositiveMetres = 200.0
    kernel_offset_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] = 110.0
    spread_iterations: Annotated[int, Field(ge=1, le=10)] = 3
    blur_sigma_m: PositiveMetres = 120.0
    blur_radius_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] = 360.0
    score_bin_edges: tuple[Finite, ...] = (0.01, 0.02, 0.035, 0.06, 0.1, 0.2, 0.5, 1.0, 3.0, 100.0)
    earth_radius_m: Annotated[float, Field(ge=6_350_000, le=6_390_000, allow_inf_nan=False)] = 6_371_008.8
    burn_probability_resampling: Resampling = "bilinear"
    wind_resampling: Resampling = "bilinear"

    @field_validator("score_bin_edges")
    @classmethod
    def _ten_increasing_positive_edges(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        # The score variable is documented as 0-10, so exactly ten upper edges.
        if len(value) != 10:
            raise ValueError(f"needs exactly 10 upper bin edges (scores 1-10), got {len(value)}")
        if value[0] <= 0:
            raise ValueError("the first edge must be > 0: score 0 is reserved for risk 0")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"edges must be strictly increasing, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _centre_inside_ellipse(self) -> "ModelParams":
        if self.kernel_offset_m >= self.kernel_semi_major_m:
            raise ValueError(
                f"kernel_offset_m ({self.kernel_offset_m}) must be smaller than kernel_semi_major_m "
                f"({self.kernel_semi_major_m}) so each kernel contains its own centre pixel"
            )
        return self


def _did_you_mean(name: str) -> str:
    """For an unknown parameter name: the closest valid names, if any look alike."""
    close = difflib.get_close_matches(name, list(ModelParams.model_fields), n=3)
    return f", did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def load_params(path: Path | str = DEFAULT_PARAMS_PATH) -> ModelParams:
    """Read and validate a parameters YAML file.

    Keys left out take their defaults; unknown keys are rejected.

    Parameters
    ----------
    path
        The YAML file (a mapping of :class:`ModelParams` field names to values).

    Returns
    -------
    ModelParams
        The validated parameters.

    Raises
    ------
    ParamsError
        If the file does not exist, is not valid YAML, is not a mapping, or a value is
        invalid; the message names the file and every offending field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(
            f"parameters file {path} does not exist: pass an existing YAML file "
            f"(the defaults are in {DEFAULT_PARAMS_PATH})"
        ) from None
    try:
        payload = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"parameters file {path} is not valid YAML: {exc}; fix the syntax") from None
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ParamsError(
            f"parameters file {path} must hold a mapping of parameter names to values, not a {type(payload).__name__}"
        )
    try:
        return ModelParams.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg'].removeprefix('Value error, ')}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" else "")
            + (_did_you_mean(str(err["loc"][-1])) if err["type"] == "extra_forbidden" and err["loc"] else "")
            for err in exc.errors()
        )
        raise ParamsError(
            f"parameters file {path} has invalid values: {problems}. Fix these fields "
            f"(valid names and ranges are documented in risk_model/params.py)"
        ) from None


def params_version(params: ModelParams) -> str:
    """A content hash of the parameters: equal values give equal versions.

    The hash covers the canonical JSON dump (sorted keys, no whitespace), so YAML layout,
    key order and ``400`` versus ``400.0`` do not change it.

    Parameters
    ----------
    params
        The parameters to fingerprint.

    Returns
    -------
    str
        The first 12 hex characters of the SHA-256 of the canonical JSON.
    """
    return digest(params.model_dump(mode="json"))

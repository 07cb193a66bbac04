"""Parameters of the wind-informed risk model, loaded from YAML and versioned by content.

Every constant of :mod:`risk_model.science` lives in :class:`ModelParams`, with the
reference model's value as its default, so a change of any of them changes
:func:`params_version` and therefore which regions are stale. The
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
#: Parameters of the whole grid that a region cannot override: the wind shares are one raster.
GLOBAL_ONLY_PARAMS = frozenset({"fire_weather_percentile"})
#: Parameters that act through an input's version, not :func:`params_version`.
_NOT_IN_PARAMS_VERSION = frozenset({"fire_weather_percentile"})

Resampling = Literal["nearest", "bilinear", "cubic", "average"]
#: A float that must be a finite number: NaN passes every range check (comparisons with NaN are
#: false) and infinity has no JSON form, so both are refused with "Input should be a finite number".
Finite = Annotated[float, Field(allow_inf_nan=False)]
PositiveMetres = Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)]


class ParamsError(BadInputError, ValueError):
    """A parameters file that is missing, is not valid YAML, or holds invalid values."""


class ModelParams(BaseModel):
    """All constants of the wind-informed risk model.

    The defaults are the reference model (carbonplan/ocr, ``ocr/risks/fire.py``): every
    constant it uses is a field here with its value. Where the platform keeps an alternative
    to a reference behaviour, a ``Literal`` field names it and the reference is the default.
    Lengths are in metres on the ground; the science converts them to pixels with the pixel
    size of the latitude band a pixel lies in (see ``kernel_band_deg``).

    Parameters
    ----------
    kernel_semi_major_m
        Semi-axis of the spread ellipse along the wind (reference: 400 m).
    kernel_semi_minor_m
        Semi-axis of the spread ellipse across the wind (reference: 200 m).
    kernel_offset_m
        Distance from a target pixel to the centre of the ellipse it gathers from, upwind
        (reference: 110 m). It must be smaller than ``kernel_semi_major_m`` so every kernel
        holds its own centre pixel (a burning pixel then always counts in its own
        normalisation).
    spread_iterations
        Iterations of the zero-ignoring normalised convolution per direction (reference: 3).
    spread_clip
        Convolved burn probability below this is taken as 0 in each iteration (reference:
        ``10e-12``, i.e. 1e-11, which it applies against convolution round-off).
    kernel_band_origin_deg, kernel_band_deg
        Latitude bands that fix the pixel size used to size the spread kernels (and a blur in
        metres). Band ``k`` spans ``origin + k * band`` to ``origin + (k + 1) * band`` degrees;
        a pixel belongs to the band holding its centre, and every pixel of a band gets the
        kernels of the pixel size at the band's middle latitude, whichever window computes
        it. The reference sizes the kernels at the centre latitude of each region it
        computes, and its regions are 6000-row chunks of its grid from 22.428 N: so the
        defaults (that grid's southern edge, 6000 of its rows) give every pixel of a
        reference region the kernels the reference gives it, without making a pixel's
        kernels depend on the window (which makes seams between regions).
    gap_fill_window_px
        Side of the window whose mean fills an isolated hole in the burn probability, at
        the burn probability's source resolution (reference: 3 x 3 at 270 m).
    blur_kernel_px, blur_sigma_px
        The final Gaussian blur of the reference: a ``blur_kernel_px`` square kernel (odd;
        reference: 17) with standard deviation ``blur_sigma_px`` pixels on both axes
        (reference: 2.9, the value OpenCV derives for a 17 px kernel). On the reference's
        pixel that is about 99 m north-south and 78 m east-west at 38 N.
    blur_scale
        ``"pixels"`` (reference): the blur above, the same number of pixels everywhere.
        ``"metres"``: a Gaussian of ``blur_sigma_m`` truncated at ``blur_radius_m`` on the
        ground, converted to pixels per latitude band (the platform's earlier blur; kept so a
        study can hold the blur's ground size fixed across latitudes).
    blur_sigma_m, blur_radius_m
        The blur in metres; used only with ``blur_scale: metres``.
    blur_nodata
        ``"propagate"`` (reference): no-data inside the kernel makes the blurred pixel no-data,
        so a missing pixel costs its 17 x 17 neighbourhood and the coast loses a strip of
        half a kernel. ``"renormalise"``: the blur averages the valid land pixels within
        reach (normalised by the blurred validity mask), so coasts and holes keep their
        neighbours' values; kept because the reference's loss of coastal pixels is a side
        effect of its blur, not a modelling choice.
    missing_wind
        What pixels whose wind shares are missing or all zero (no fire-weather hours) get
        where the burn probability is 0: ``"nan"`` (reference) or ``"equal_shares"`` (the
        mean of the 8 spread fields; the platform's earlier behaviour).
    score_bin_edges
        Upper edges of score bins 1..10: risk in ``(0, edge[0]]`` scores 1, risk in
        ``(edge[8], edge[9]]`` scores 10; risk 0 scores 0. Finite: risk above the last edge
        also scores 10, so no edge needs to be infinite.
    earth_radius_m
        Radius of the sphere on which degrees become metres: the haversine distance across a
        pixel (reference: 6,371,000 m).
    burn_probability_resampling, wind_resampling
        Resampling of a source onto the output grid (reference: nearest for both; nearest
        keeps the burn probability's 0 mask, which the spread depends on).
    fire_weather_percentile
        With an hourly wind dataset (``InputSet.wind_hourly``): the per-pixel percentile of the
        Fosberg fire weather index at or above which an hour is a fire-weather hour
        (reference: 99; see :mod:`risk_model.wind`). One value for the whole grid: it cannot
        be overridden per region. It is not part of :func:`params_version`: it acts through
        the wind shares' version, which is part of the inputs version, so with ready-made
        shares changing it rebuilds nothing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kernel_semi_major_m: PositiveMetres = 400.0
    kernel_semi_minor_m: PositiveMetres = 200.0
    kernel_offset_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] = 110.0
    spread_iterations: Annotated[int, Field(ge=1, le=10)] = 3
    spread_clip: Annotated[float, Field(ge=0, le=1e-3, allow_inf_nan=False)] = 1e-11
    kernel_band_origin_deg: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] = 22.428114227623333
    kernel_band_deg: Annotated[float, Field(gt=0, le=180, allow_inf_nan=False)] = 1.847963270620312
    gap_fill_window_px: Annotated[int, Field(ge=3, le=99)] = 3
    blur_kernel_px: Annotated[int, Field(ge=1, le=999)] = 17
    blur_sigma_px: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = 2.9
    blur_scale: Literal["pixels", "metres"] = "pixels"
    blur_sigma_m: PositiveMetres = 120.0
    blur_radius_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] = 360.0
    blur_nodata: Literal["propagate", "renormalise"] = "propagate"
    missing_wind: Literal["nan", "equal_shares"] = "nan"
    score_bin_edges: tuple[Finite, ...] = (0.01, 0.02, 0.035, 0.06, 0.1, 0.2, 0.5, 1.0, 3.0, 100.0)
    earth_radius_m: Annotated[float, Field(ge=6_350_000, le=6_390_000, allow_inf_nan=False)] = 6_371_000.0
    burn_probability_resampling: Resampling = "nearest"
    wind_resampling: Resampling = "nearest"
    fire_weather_percentile: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 99.0

    @field_validator("blur_kernel_px", "gap_fill_window_px")
    @classmethod
    def _odd(cls, value: int) -> int:
        # A centred window needs a middle pixel.
        if value % 2 != 1:
            raise ValueError(f"must be odd (a window centred on its pixel), got {value}")
        return value

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
    key order and ``400`` versus ``400.0`` do not change it. ``fire_weather_percentile`` is
    left out: it changes the raster only through the wind shares, whose version is an input
    version (:func:`risk_model.wind.shares_version`).

    Parameters
    ----------
    params
        The parameters to fingerprint.

    Returns
    -------
    str
        The first 12 hex characters of the SHA-256 of the canonical JSON.
    """
    return digest(params.model_dump(mode="json", exclude=set(_NOT_IN_PARAMS_VERSION)))

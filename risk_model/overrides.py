"""Per-region parameter overrides, validated field by field and versioned per region.

A region may override some parameters (:class:`RegionOverrides`, read by
:func:`load_overrides` from a YAML file such as ``risk_model/data/params/overrides.yaml``).
Each region's override has its own content hash (:meth:`RegionOverrides.region_version`), so
editing one region's override makes only that region stale; the version a region records is
that of its effective parameters (:func:`effective_params_version`).
"""

import difflib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_core import ErrorDetails

from risk_model.digest import digest
from risk_model.grid import UnknownRegionError, parse_region_id
from risk_model.params import GLOBAL_ONLY_PARAMS, ModelParams, ParamsError, params_version

DEFAULT_OVERRIDES_PATH = Path(__file__).parent / "data" / "params" / "overrides.yaml"
#: What :meth:`RegionOverrides.region_version` and :meth:`RegionOverrides.version` return when
#: there is no override at all.
NO_OVERRIDE_VERSION = "none"
_REGION_ID_EXAMPLE = "'y3_x12' (chunk row, column)"
_LIST_REGIONS = "list the valid ids with `risk regions --grid <grid> --list`"

# The fields of ModelParams with their types and ranges but without its validators: it coerces
# the values of one override exactly as ModelParams does, whatever the other fields hold.
_FIELD_TYPES: dict[str, Any] = {name: (info.annotation, info) for name, info in ModelParams.model_fields.items()}
_ParamFields: type[BaseModel] = create_model("ParamFields", __config__=ConfigDict(extra="forbid"), **_FIELD_TYPES)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _error_lines(errors: Iterable[ErrorDetails], prefix: str) -> list[str]:
    lines = []
    for err in errors:
        msg = err["msg"].removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
        if err["loc"]:
            lines.append(f"{prefix}field {'.'.join(str(p) for p in err['loc'])}: {msg}{got}")
        else:  # a check across fields (ModelParams' model validator) names its fields itself
            lines.append(f"{prefix}{msg}")
    return lines


def _check_region(region_id: object, override: object, known_regions: Collection[str] | None) -> list[str]:
    """Problems with one region id and its override, field by field (empty list: none)."""
    if not isinstance(region_id, str):
        return [f"region id {region_id!r} is not a string: region ids look like {_REGION_ID_EXAMPLE}"]
    try:
        iy, ix = parse_region_id(region_id)
    except UnknownRegionError as exc:
        return [f"{exc}; {_LIST_REGIONS}"]
    if region_id != f"y{iy}_x{ix}":  # y03_x12 would never match a region
        return [f"region id {region_id!r} is not canonical: write 'y{iy}_x{ix}' (no leading zeros)"]
    problems = []
    if known_regions is not None and region_id not in known_regions:
        problems.append(
            f"unknown region {region_id!r}: the grid has no such region holding data"
            f"{_suggest(region_id, known_regions)}; valid ids look like {_REGION_ID_EXAMPLE}; {_LIST_REGIONS}"
        )
    if override is None:  # `y3_x12:` with nothing under it
        return problems
    if not isinstance(override, dict):
        problems.append(
            f"region {region_id}: the override must be a mapping of parameter names to values, "
            f"not a {type(override).__name__}"
        )
        return problems
    names = ModelParams.model_fields
    problems.extend(
        f"region {region_id}: unknown parameter {name!r}{_suggest(str(name), names)}; "
        f"valid names are {', '.join(names)}"
        for name in override
        if name not in names
    )
    problems.extend(
        f"region {region_id}: {name} cannot be overridden per region (it applies to the whole grid): "
        "set it in the parameters file"
        for name in override
        if name in GLOBAL_ONLY_PARAMS
    )
    try:
        ModelParams.model_validate({k: v for k, v in override.items() if k in names})
    except ValidationError as exc:
        # Field errors only: an error of the whole model (empty loc) is a cross-field check made
        # here against the defaults, while the override will apply to the actual parameters
        # (:meth:`RegionOverrides.apply` checks it then).
        problems.extend(_error_lines([err for err in exc.errors() if err["loc"]], f"region {region_id}, "))
    return problems


def _normalise(
    regions: Mapping[Any, Any], known_regions: Collection[str] | None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The overrides with values coerced as :class:`ModelParams` does, or the problems found."""
    problems = [p for rid, override in regions.items() for p in _check_region(rid, override, known_regions)]
    if problems:
        return {}, problems
    normalised: dict[str, dict[str, Any]] = {}
    for region_id, override in regions.items():
        if override:  # None and {} both mean "no override": drop them
            coerced = _ParamFields.model_validate(override)
            normalised[region_id] = {name: getattr(coerced, name) for name in sorted(override)}
    return normalised, []


class RegionOverrides(BaseModel):
    """Per-region overrides of some model parameters: pure data, validated on construction.

    Values are stored coerced as :class:`ModelParams` coerces them (``150`` becomes ``150.0``
    for a float field, a list of bin edges a tuple of floats), so the versions below do not
    depend on YAML spelling or key order. Regions whose override is empty (``{}`` or
    ``null``) are dropped: they are the same as no override.

    Parameters
    ----------
    regions
        Region id (``y{row}_x{col}``) to a partial mapping of :class:`ModelParams` field
        names to values.
    source
        Where the overrides come from (the file), for error messages; ``None`` if built in code.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    regions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str | None = None

    @field_validator("regions", mode="before")
    @classmethod
    def _valid_and_normalised(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value  # pydantic reports the wrong type
        normalised, problems = _normalise(value, known_regions=None)
        if problems:
            raise ValueError("; ".join(problems))
        return normalised

    @property
    def _where(self) -> str:
        return f"overrides file {self.source}" if self.source else "overrides"

    def for_region(self, region_id: str) -> dict[str, Any]:
        """The override of one region: parameter names to values.

        Parameters
        ----------
        region_id
            The region.

        Returns
        -------
        dict
            A copy of the region's override; empty if it has none.
        """
        return dict(self.regions.get(region_id, {}))

    def apply(self, params: ModelParams, region_id: str) -> ModelParams:
        """The effective parameters of one region: ``params`` with the region's override.

        The result is validated as a whole, so checks across fields (``kernel_offset_m`` must
        stay below ``kernel_semi_major_m``) hold for the combination.

        Parameters
        ----------
        params
            The global parameters.
        region_id
            The region.

        Returns
        -------
        ModelParams
            ``params`` itself when the region has no override, otherwise a new instance that
            differs from ``params`` only in the overridden fields.

        Raises
        ------
        ParamsError
            If the combination is invalid; the message names the overrides file, the region
            and the offending fields.
        """
        override = self.regions.get(region_id)
        if not override:
            return params
        try:
            return ModelParams.model_validate({**params.model_dump(), **override})
        except ValidationError as exc:
            problems = "; ".join(_error_lines(exc.errors(), ""))
            raise ParamsError(
                f"{self._where}, region {region_id}: the override {override} gives invalid parameters "
                f"together with the global ones (version {params_version(params)}): {problems}. "
                f"Fix the override of {region_id} (or the parameters file)"
            ) from None

    def region_version(self, region_id: str) -> str:
        """A content hash of one region's override: the region's data version.

        It changes exactly when the region's override content changes. Key order and
        spellings that :class:`ModelParams` coerces to the same value (``150`` and ``150.0``)
        do not change it; an override that restates a global value still counts as content
        (the effective parameters, and so :func:`effective_params_version`, are unchanged
        then). The region id is not part of the hash.

        Parameters
        ----------
        region_id
            The region.

        Returns
        -------
        str
            :data:`NO_OVERRIDE_VERSION` (``"none"``) when the region has no override (or an
            empty one), otherwise 12 hex characters of the SHA-256 of the canonical JSON.
        """
        override = self.regions.get(region_id)
        return digest(override) if override else NO_OVERRIDE_VERSION

    def version(self) -> str:
        """A content hash of all overrides (region ids included).

        Returns
        -------
        str
            :data:`NO_OVERRIDE_VERSION` (``"none"``) when no region has an override, otherwise
            12 hex characters of the SHA-256 of the canonical JSON.
        """
        return digest(self.regions) if self.regions else NO_OVERRIDE_VERSION


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping.

    Plain ``safe_load`` keeps the last value silently, so a region listed twice would lose
    its first override without a word. Keys brought in by a merge (``<<: *anchor``) may be
    overridden explicitly, as YAML intends.
    """


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_overrides(
    path: Path | str | None = DEFAULT_OVERRIDES_PATH,
    known_regions: Collection[str] | None = None,
    *,
    params: ModelParams | None = None,
) -> RegionOverrides:
    """Read and validate a per-region overrides YAML file.

    The file maps region ids to partial parameter mappings, e.g.
    ``{"y3_x12": {"blur_sigma_m": 150.0}}``. Every override is checked field by field here
    (names exist, types and ranges hold), so a bad file fails when it is observed rather
    than in a worker. Checks across fields depend on the global parameters: pass ``params``
    to run them for every region now, otherwise :meth:`RegionOverrides.apply` runs them.

    Parameters
    ----------
    path
        The YAML file. ``None`` means no overrides. A path that does not exist is an error,
        not "no overrides": a mistyped path must not silently drop every override.
    known_regions
        The region ids of the grid (the region registry); ids not in it are rejected.
        ``None`` checks only the form ``y{row}_x{col}``.
    params
        The global parameters; when given, every override is also applied to them.

    Returns
    -------
    RegionOverrides
        The overrides; empty for ``None``, an empty file or ``{}``.

    Raises
    ------
    ParamsError
        If the file does not exist, is not valid YAML (a key given twice included), is not a
        mapping, names a malformed or unknown region or an unknown parameter, or holds an
        invalid value; the message names the file, every offending region and field.
    """
    if path is None:
        return RegionOverrides()
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(
            f"overrides file {path} does not exist: pass an existing YAML file, or no overrides file "
            f"for no overrides (an empty one is {DEFAULT_OVERRIDES_PATH})"
        ) from None
    try:
        payload = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        raise ParamsError(f"overrides file {path} is not valid YAML: {exc}; fix the syntax") from None
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ParamsError(
            f"overrides file {path} must hold a mapping of region ids to parameter mappings "
            f"(e.g. `y3_x12: {{blur_sigma_m: 150.0}}`), not a {type(payload).__name__}"
        )
    regions, problems = _normalise(payload, known_regions)
    if problems:
        listed = "".join(f"\n  - {p}" for p in problems)
        raise ParamsError(
            f"overrides file {path} is invalid:{listed}\nFix these entries "
            f"(parameter names and ranges are documented in risk_model/params.py)"
        )
    overrides = RegionOverrides(regions=regions, source=str(path))
    if params is not None:
        for region_id in overrides.regions:
            overrides.apply(params, region_id)
    return overrides


def effective_params_version(params: ModelParams, overrides: RegionOverrides, region_id: str) -> str:
    """The version of a region's effective parameters: the one recorded in its commit.

    Equal to ``params_version(params)`` for a region without an override, so adding an
    overrides file changes nothing for the regions it does not name.

    Parameters
    ----------
    params
        The global parameters.
    overrides
        The per-region overrides.
    region_id
        The region.

    Returns
    -------
    str
        ``params_version(overrides.apply(params, region_id))``.

    Raises
    ------
    ParamsError
        If the region's override is invalid together with ``params``.
    """
    return params_version(overrides.apply(params, region_id))

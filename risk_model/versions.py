"""What the raster should be now: versions of parameters, overrides, inputs and code.

A *raster version* names one complete state of the raster: the global parameters, every
region's override, the input datasets and the model code. Each raster version is built on
its own Icechunk branch, ``build-<version>``; ``main`` moves to that branch's tip only when
every region is committed there and the checks pass (see :mod:`risk_assets.release`).

A region's *build key* (:class:`BuildKey`) is narrower: the version of its
*effective* parameters (global parameters with its override), the inputs version and the
code version. A region is rebuilt only when its build key changes, so a new override
rebuilds its region alone, while the raster version (and so the branch) still changes.

Pure data: the files are read by :mod:`resources.target`.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from risk_model.digest import digest
from risk_model.errors import BadInputError
from risk_model.overrides import RegionOverrides
from risk_model.params import ModelParams, params_version


class BuildKey(NamedTuple):
    """What a region's data depends on: a region committed for the same key is not built again.

    Attributes
    ----------
    params_version
        Content hash of the region's effective parameters (global parameters with the
        region's override applied).
    inputs_version
        Hash of the input datasets' versions (checksums or object generations).
    code_version
        The model code version.
    """

    params_version: str
    inputs_version: str
    code_version: str


#: Prefix of the build branches; ``main`` is never written by a region.
BUILD_BRANCH_PREFIX = "build-"
#: The branch readers use: the last complete, checked raster version.
MAIN = "main"
#: A scenario's name (its input set, e.g. a climate): lower-case letters, digits and ``_``.
SCENARIO_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")


class ScenarioNameError(BadInputError, ValueError):
    """A scenario name that cannot name a branch and a release tag."""


def check_scenario(name: str) -> str:
    """``name`` if it can name a scenario; raises :class:`ScenarioNameError` naming the rule otherwise."""
    if not SCENARIO_PATTERN.match(name):
        raise ScenarioNameError(
            f"scenario {name!r} is not a valid name: use 1-32 lower-case letters, digits and '_', starting with a "
            "letter or digit (for example 2047 or ssp245_2050)"
        )
    return name


def readers_branch(scenario: str | None, base: str = MAIN) -> str:
    """The branch readers of ``scenario`` use: ``base`` itself, or ``<base>-<scenario>``.

    Each scenario (its own input set, so its own raster versions) is released on its own
    readers' branch, so several scenarios stay published side by side in one repository.
    """
    return base if scenario is None else f"{base}-{check_scenario(scenario)}"


def scenario_of(readers_branch: str) -> str | None:
    """The scenario whose readers' branch is ``readers_branch`` (``main-<scenario>``); ``None`` for ``main``."""
    prefix = f"{MAIN}-"
    if readers_branch.startswith(prefix) and SCENARIO_PATTERN.match(readers_branch[len(prefix) :]):
        return readers_branch[len(prefix) :]
    return None


@dataclass(frozen=True)
class RasterVersion:
    """The versions that make up one complete raster.

    Attributes
    ----------
    params_version
        Content hash of the global parameters.
    overrides_version
        Content hash of all per-region overrides.
    inputs_version
        Hash of the input datasets' versions.
    code_version
        The model code version.
    """

    params_version: str
    overrides_version: str
    inputs_version: str
    code_version: str

    @property
    def id(self) -> str:
        """A 12-hex-digit name of this version."""
        return digest(
            {
                "params": self.params_version,
                "overrides": self.overrides_version,
                "inputs": self.inputs_version,
                "code": self.code_version,
            }
        )

    @property
    def branch(self) -> str:
        """The Icechunk branch this version is built on."""
        return f"{BUILD_BRANCH_PREFIX}{self.id}"

    def as_metadata(self) -> dict[str, str]:
        """The versions as plain strings, for commit and Dagster metadata."""
        return {
            "raster_version": self.id,
            "params_version": self.params_version,
            "overrides_version": self.overrides_version,
            "inputs_version": self.inputs_version,
            "code_version": self.code_version,
        }


@dataclass(frozen=True)
class Target:
    """What every region should be built from, as read from the files right now.

    Attributes
    ----------
    params
        The global parameters.
    overrides
        The per-region overrides.
    input_versions
        Version of each input dataset, by name.
    inputs_version
        Hash of ``input_versions``.
    code_version
        The model code version.
    """

    params: ModelParams
    overrides: RegionOverrides
    input_versions: dict[str, str]
    inputs_version: str
    code_version: str
    _params_version: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_params_version", params_version(self.params))

    @property
    def version(self) -> RasterVersion:
        """The raster version this target builds."""
        return RasterVersion(self._params_version, self.overrides.version(), self.inputs_version, self.code_version)

    def region_params(self, region_id: str) -> ModelParams:
        """The effective parameters of one region (raises ``ParamsError`` if the override is invalid)."""
        return self.overrides.apply(self.params, region_id)

    def region_key(self, region_id: str) -> BuildKey:
        """The build key of one region."""
        # Regions without an override share the global version: no hashing per region.
        if not self.overrides.for_region(region_id):
            return BuildKey(self._params_version, self.inputs_version, self.code_version)
        return BuildKey(params_version(self.region_params(region_id)), self.inputs_version, self.code_version)

    def keys(self, region_ids: Iterable[str]) -> dict[str, BuildKey]:
        """The build key of each region."""
        return {region: self.region_key(region) for region in region_ids}

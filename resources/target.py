"""Resources that read the model's parameters, overrides and input rasters.

The parameters model and the input set are pure data (``risk_model.params``,
``risk_model.inputs``); these resources are where files get opened.
"""

from collections.abc import Collection
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from resources.input_versions import input_versions
from risk_model.checksums import inputs_version
from risk_model.code_version import MODEL_CODE_VERSION
from risk_model.input_set import InputSet
from risk_model.overrides import RegionOverrides, load_overrides
from risk_model.params import ModelParams, load_params, params_version
from risk_model.versions import Target


class ModelParamsResource(ConfigurableResource):  # type: ignore[type-arg]  # generic only for typing
    """The model parameters YAML file and the per-region overrides file."""

    path: str = Field(description="Path of the parameters YAML file.")
    overrides_path: str | None = Field(
        default=None, description="Path of the per-region overrides YAML file; none: no overrides."
    )

    def load(self) -> ModelParams:
        """Read and validate the parameters (raises ``ParamsError`` naming the file and field)."""
        return load_params(self.path)

    def version(self) -> str:
        """Content hash of the global parameters: equal content, equal version."""
        return params_version(self.load())

    def overrides(self, known_regions: Collection[str] | None = None) -> RegionOverrides:
        """Read and validate the overrides (raises ``ParamsError`` naming the file, region and field)."""
        return load_overrides(self.overrides_path, known_regions)


class InputsResource(ConfigurableResource):  # type: ignore[type-arg]  # generic only for typing
    """Where the input rasters are: local paths or ``gs://`` / ``s3://`` URLs."""

    burn_probability: str
    conditional_risk: str
    wind_direction: str
    checksum_cache: str | None = Field(
        default=None,
        description=(
            "JSON file caching local files' checksums by size, mtime, ctime and inode: without it every "
            "observation and every region run reads each input whole (minutes for CONUS GeoTIFFs)."
        ),
    )

    def input_set(self) -> InputSet:
        """The inputs as the model's pure-data description."""
        return InputSet(
            burn_probability=self.burn_probability,
            conditional_risk=self.conditional_risk,
            wind_direction=self.wind_direction,
        )

    def versions(self) -> dict[str, str]:
        """Version of each input (checksum or object generation), by name; raises ``InputError``."""
        return input_versions(self.input_set(), cache=Path(self.checksum_cache) if self.checksum_cache else None)


def current_target(
    params: ModelParamsResource, inputs: InputsResource, known_regions: Collection[str] | None = None
) -> Target:
    """What the raster should be built from now, read from the parameters, overrides and inputs.

    Raises
    ------
    ParamsError
        If the parameters or overrides are invalid.
    InputError
        If an input cannot be found.
    """
    versions = inputs.versions()
    return Target(
        params=params.load(),
        overrides=params.overrides(known_regions),
        input_versions=versions,
        inputs_version=inputs_version(versions),
        code_version=MODEL_CODE_VERSION,
    )

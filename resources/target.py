"""Resources that read the model's parameters, overrides and input rasters.

The parameters model and the input set are pure data (``risk_model.params``,
``risk_model.input_set``); these resources are where files get opened. Like the store
(:class:`resources.store.IcechunkStore`) they are plain pydantic models, so that deciding a rerun
needs no Dagster; the code location hands them to Dagster as resource objects.
"""

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from resources.input_versions import input_versions
from resources.wind_shares import check_shares_location, shares_read_env, stored_shares_version
from risk_model.checksums import inputs_version
from risk_model.code_version import MODEL_CODE_VERSION, shares_version
from risk_model.input_set import InputError, InputSet
from risk_model.overrides import RegionOverrides, load_overrides
from risk_model.params import ModelParams, load_params, params_version
from risk_model.versions import Target

if TYPE_CHECKING:  # loaded where rasters are read: see resources.wind_shares
    import rasterio


class ModelParamsResource(BaseModel):
    """The model parameters YAML file and the per-region overrides file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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


class InputsResource(BaseModel):
    """Where the inputs are: local paths or ``gs://`` / ``s3://`` URLs.

    The wind is either ready-made shares (``wind_direction``) or an hourly dataset
    (``wind_hourly``) whose shares the ``wind_shares`` asset writes to ``wind_shares_path``
    and the region runs read from there: a local GeoTIFF, or an ``s3://`` / ``gs://`` object
    when the runs are in pods of their own (see :mod:`resources.wind_shares`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    burn_probability: str
    conditional_risk: str
    wind_direction: str | None = None
    wind_hourly: str | None = None
    wind_shares_path: str | None = Field(
        default=None,
        description=(
            "Where the wind_shares asset writes the shares computed from wind_hourly: an absolute local "
            "path or an s3:// / gs:// object URL, ending in .tif."
        ),
    )
    checksum_cache: str | None = Field(
        default=None,
        description=(
            "JSON file caching local files' checksums by size, mtime, ctime and inode: without it every "
            "observation and every region run reads each input whole (minutes for CONUS GeoTIFFs)."
        ),
    )

    @field_validator("wind_shares_path")
    @classmethod
    def _shares_location(cls, value: str | None) -> str | None:
        return None if value is None else check_shares_location(value, "wind_shares_path")

    def gdal_env(self) -> "rasterio.Env":
        """The GDAL configuration to read the rasters under: bucket endpoints, and fresh reads of the
        computed shares (:func:`resources.wind_shares.shares_read_env`)."""
        return shares_read_env(self.wind_shares_path if self.wind_hourly is not None else None)

    def stored_shares_version(self) -> str | None:
        """The version tag of the computed shares where they are; None if there are none (raises ``InputError``)."""
        return stored_shares_version(self.shares_path())

    def input_set(self) -> InputSet:
        """The inputs as configured, as the model's pure-data description (raises ``ValidationError``)."""
        return InputSet(
            burn_probability=self.burn_probability,
            conditional_risk=self.conditional_risk,
            wind_direction=self.wind_direction,
            wind_hourly=self.wind_hourly,
        )

    def shares_path(self) -> str:
        """Where the shares computed from the hourly dataset are (raises ``InputError`` if not set)."""
        if not self.wind_shares_path:
            raise InputError(
                "wind_hourly is set but wind_shares_path is not: configure where the wind_shares asset writes "
                "its GeoTIFF"
            )
        return self.wind_shares_path

    def raster_inputs(self) -> InputSet:
        """The rasters the model reads: with an hourly dataset, its computed shares as the wind."""
        inputs = self.input_set()
        return inputs if inputs.wind_hourly is None else inputs.with_wind_shares(self.shares_path())

    def locations(self) -> dict[str, str]:
        """Where each versioned input is, by name (the computed shares included), for lineage."""
        located: dict[str, str] = {role: str(getattr(self, role)) for role in self.input_set().roles}
        if self.wind_hourly is not None:
            located["wind_direction"] = self.shares_path()
        return located

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
    values = params.load()
    if inputs.wind_hourly is not None:
        # The shares the regions read are named by what they are computed from: a new hourly
        # dataset or percentile is a new inputs version, so a new build key for every region.
        versions["wind_direction"] = shares_version(versions["wind_hourly"], values.fire_weather_percentile)
    return Target(
        params=values,
        overrides=params.overrides(known_regions),
        input_versions=versions,
        inputs_version=inputs_version(versions),
        code_version=MODEL_CODE_VERSION,
    )

"""Resources that read the model's parameters and input rasters.

The parameters model and the input set are pure data (``risk_assets.params``,
``risk_assets.inputs``); these resources are where files get opened.
"""

from dagster import ConfigurableResource
from pydantic import Field

from risk_assets.inputs import InputSet
from risk_assets.params import ModelParams, load_params, params_version


class ModelParamsResource(ConfigurableResource):  # type: ignore[type-arg]  # generic only for typing
    """The model parameters YAML file."""

    path: str = Field(description="Path of the parameters YAML file.")

    def load(self) -> ModelParams:
        """Read and validate the parameters (raises ``ParamsError`` naming the file and field)."""
        return load_params(self.path)

    def version(self) -> str:
        """Content hash of the parameters: equal content, equal version."""
        return params_version(self.load())


class InputsResource(ConfigurableResource):  # type: ignore[type-arg]  # generic only for typing
    """Where the input rasters are: local paths or ``gs://`` / ``s3://`` URLs."""

    burn_probability: str
    conditional_risk: str
    wind_direction: str

    def input_set(self) -> InputSet:
        """The inputs as the model's pure-data description."""
        return InputSet(
            burn_probability=self.burn_probability,
            conditional_risk=self.conditional_risk,
            wind_direction=self.wind_direction,
        )

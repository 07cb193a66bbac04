"""Resources and build targets of the tests (importable by module name from worker processes)."""

from resources.target import InputsResource, ModelParamsResource, current_target
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet
from risk_model.overrides import DEFAULT_OVERRIDES_PATH
from risk_model.params import DEFAULT_PARAMS_PATH
from risk_model.versions import Target


def inputs_resource(inputs: InputSet) -> InputsResource:
    """The inputs resource of an input set."""
    return InputsResource(**inputs.model_dump())


def params_resource(
    path: str = str(DEFAULT_PARAMS_PATH), overrides: str = str(DEFAULT_OVERRIDES_PATH)
) -> ModelParamsResource:
    """A parameters resource: the checked-in defaults and no overrides unless told otherwise."""
    return ModelParamsResource(path=path, overrides_path=overrides)


def default_target(inputs: InputSet, registry: RegionRegistry) -> Target:
    """What a raster is built from with the default parameters and ``inputs``."""
    return current_target(params_resource(), inputs_resource(inputs), registry.ids)

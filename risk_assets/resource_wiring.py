"""The store, parameters and inputs resources of one deployment, without the rest of the code location.

:func:`risk_assets.definitions.build_resources` and the ``risk build`` decision both build them
here, so the two always agree on what the raster is built from. This module stays light to
import (no xarray, no rasterio, no asset definitions): the decision runs before any of that loads.
"""

from resources.local_store import LocalIcechunkStore
from resources.store import IcechunkStore
from resources.target import InputsResource, ModelParamsResource
from risk_assets.deployment import Deployment, deployment_from_env
from risk_assets.settings import Settings
from risk_model.input_set import InputSet, local_hourly_input_set
from risk_model.versions import readers_branch


def store_resource(settings: Settings, store: IcechunkStore | None = None) -> IcechunkStore:
    """``store``, or by default the local repository under ``settings.home``.

    With a scenario, the same repository with the scenario's readers' branch
    (``<branch>-<scenario>``): every scenario's versions and releases live side by side in one
    repository, each released on its own branch.
    """
    store = store or LocalIcechunkStore(path=str(settings.store_path))
    if settings.scenario is None:
        return store
    # A new resource, not ``model_copy``: Dagster builds a run's resources from their
    # constructor arguments, which a copy would leave at the old branch.
    fields = {**store.model_dump(), "branch": readers_branch(settings.scenario, store.branch)}
    return type(store)(**fields)


def model_resources(
    settings: Settings, inputs: InputSet | None = None, wind_shares: str | None = None
) -> tuple[ModelParamsResource, InputsResource]:
    """The parameters resource and the inputs resource.

    By default the synthetic rasters and hourly wind cube under ``settings.inputs_dir``. With an
    hourly wind dataset, the shares computed from it are written to ``wind_shares`` (a local path
    or an ``s3://`` / ``gs://`` object URL, ``RISK_WIND_SHARES``), by default to
    ``settings.wind_shares_path``.
    """
    inputs = inputs or local_hourly_input_set(settings.inputs_dir)
    params = ModelParamsResource(path=str(settings.params_path), overrides_path=str(settings.overrides_path))
    return params, InputsResource(
        burn_probability=inputs.burn_probability,
        conditional_risk=inputs.conditional_risk,
        wind_direction=inputs.wind_direction,
        wind_hourly=inputs.wind_hourly,
        wind_shares_path=(wind_shares or str(settings.wind_shares_path)) if inputs.wind_hourly is not None else None,
        checksum_cache=str(settings.var_dir / "input-checksums.json"),
    )


def deployed_resources(
    settings: Settings, deployment: Deployment | None = None
) -> tuple[IcechunkStore, ModelParamsResource, InputsResource]:
    """The store, parameters and inputs resources of ``deployment``, by default this process's
    (``RISK_*`` variables: :func:`risk_assets.deployment.deployment_from_env`).

    The ones the code location's definitions are built with, without loading the definitions
    or Dagster: what ``risk build`` decides from, and what ``risk status``, ``lineage`` and
    ``compare`` read.
    """
    deployment = deployment or deployment_from_env()
    store = store_resource(settings, deployment.store)
    params, inputs = model_resources(settings, deployment.inputs, deployment.wind_shares)
    return store, params, inputs

"""The asset keys of the code location, spelled once.

Lineage in the asset graph::

    model_params ─┐
    region_params ┼─> risk_raster (one partition per region) ─> risk_pyramid ─> raster_release
    input_* ──────┤         │                                          ^
    raster_template ────────┘            raster_status (checks) ───────┘

With an hourly wind dataset, the wind input of ``risk_raster`` is the ``wind_shares`` asset::

    input_wind_hourly ─┐
    wind_params ───────┴─> wind_shares ─> risk_raster
"""

from dagster import AssetKey

#: The input datasets with ready-made wind shares, each an observable source asset ``input_<name>``;
#: with an hourly wind dataset, ``wind_direction`` is replaced by ``wind_hourly`` (see ``InputSet.roles``).
INPUT_NAMES = ("burn_probability", "conditional_risk", "wind_direction")
#: The 8-band wind-direction shares computed from the hourly dataset.
WIND_SHARES_KEY = AssetKey("wind_shares")
#: The parameters the wind shares depend on (the FFWI percentile), an observable source.
WIND_PARAMS_KEY = AssetKey("wind_params")
PARAMS_KEY = AssetKey("model_params")
REGION_PARAMS_KEY = AssetKey("region_params")
TEMPLATE_KEY = AssetKey("raster_template")
RASTER_KEY = AssetKey("risk_raster")
PYRAMID_KEY = AssetKey("risk_pyramid")
RELEASE_KEY = AssetKey("raster_release")
#: The raster's completeness as its own small asset. The checks live on it, not on
#: ``risk_raster``: Dagster runs an asset's checks in every run of the asset, and so in every
#: region's run and backfill (measured: two extra step processes per region, each scanning the
#: whole store), which would put the whole-raster checks into every spot pod.
STATUS_KEY = AssetKey("raster_status")


def input_key(name: str) -> AssetKey:
    """Asset key of the observable source of input ``name``."""
    return AssetKey(f"input_{name}")

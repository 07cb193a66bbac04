"""The ``wind_shares`` asset: the 8-band fire-weather wind-direction shares computed from an hourly dataset.

Built only with an hourly wind dataset (``InputSet.wind_hourly``)::

    input_wind_hourly ─┐
    wind_params ───────┴─> wind_shares ─> risk_raster
"""

from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    DagsterInstance,
    DataVersion,
    Failure,
    MaterializeResult,
    ResourceParam,
    asset,
)

from resources.input_versions import input_version
from resources.target import InputsResource, ModelParamsResource
from resources.wind_shares import publish_shares
from risk_assets.keys import WIND_PARAMS_KEY, WIND_SHARES_KEY, input_key
from risk_assets.sources import DATA_VERSION_TAG
from risk_model.errors import StoreUnavailableError
from risk_model.input_set import InputError
from risk_model.params import ParamsError
from risk_model.wind import WIND_CODE_VERSION, fire_weather_wind_shares, shares_version
from risk_model.wind_files import open_hourly


def _latest_data_version(instance: DagsterInstance, key: AssetKey) -> str | None:
    """The data version of the latest materialization of ``key``; None if there is none."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return event.asset_materialization.tags.get(DATA_VERSION_TAG) if event.asset_materialization.tags else None


def build_wind_shares() -> AssetsDefinition:
    """The ``wind_shares`` asset: the 8-band shares computed from the hourly dataset."""

    @asset(
        key=WIND_SHARES_KEY,
        group_name="inputs",
        deps=[input_key("wind_hourly"), WIND_PARAMS_KEY],
        code_version=WIND_CODE_VERSION,
        # A new hourly dataset or percentile (a new observed data version) recomputes the
        # shares; their new materialization then requests every region of the raster.
        automation_condition=AutomationCondition.eager(),
        # No materialization when the shares on disk are the current ones and recorded: the
        # prepare job runs this every time, and a re-materialization of identical shares would
        # make eager automation rebuild every region (measured for parameters, FIELD-NOTES).
        output_required=False,
    )
    def wind_shares(
        context: AssetExecutionContext,
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> Iterator[MaterializeResult]:  # type: ignore[type-arg]
        """Fire-weather wind-direction shares (8 bands) on the hourly dataset's own grid and CRS.

        Computed from ``wind_hourly`` with the FFWI percentile of the parameters (see
        :mod:`risk_model.wind`) and written as a GeoTIFF to ``wind_shares_path``: a local file,
        or an ``s3://`` / ``gs://`` object uploaded whole (:mod:`resources.wind_shares`) that
        every region pod reads. The region runs warp it onto the output grid (nearest). Its data
        version is the shares' version (:func:`risk_model.wind.shares_version`), which is also in
        every region's build key and in the GeoTIFF's tag: shares already current where they are
        configured are neither recomputed nor uploaded again.
        """
        try:
            url = str(inputs.wind_hourly)
            path = inputs.shares_path()
            percentile = params.load().fire_weather_percentile
            cache = Path(inputs.checksum_cache) if inputs.checksum_cache else None
            hourly_version = input_version(url, name="wind_hourly", cache=cache)
            version = shares_version(hourly_version, percentile)
            on_disk = inputs.stored_shares_version()
            if on_disk == version and _latest_data_version(context.instance, WIND_SHARES_KEY) == version:
                context.log.info(f"wind shares {path} are current ({version}): nothing to do")
                return
            status = "already on disk"
            uploaded: str | None = None
            if on_disk != version:
                with open_hourly(url) as ds:
                    shares = fire_weather_wind_shares(ds, percentile=percentile)
                tags = {"WIND_HOURLY_VERSION": hourly_version, "FIRE_WEATHER_PERCENTILE": str(percentile)}
                uploaded = publish_shares(shares, path, version=version, tags=tags)
                status = "computed"
        except (InputError, ParamsError) as err:
            raise Failure(description=str(err), allow_retries=False) from err
        except StoreUnavailableError as err:  # the bucket did not answer: a later run may
            raise Failure(description=str(err)) from err
        yield MaterializeResult(
            data_version=DataVersion(version),
            metadata={
                "status": status,
                "path": path,
                "version": version,
                "hourly": url,
                "hourly_version": hourly_version,
                "fire_weather_percentile": percentile,
                # The uploaded object's ETag or generation: which object the region pods read.
                **({"object_version": uploaded} if uploaded else {}),
            },
        )

    return wind_shares

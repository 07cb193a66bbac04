"""The input rasters as pure data: where they are, and the error for one that cannot be used.

Light to import on purpose (pydantic only): ``risk build`` decides whether anything is to be
done before it loads rasterio, SciPy or Dagster's definitions. Reading the rasters is
:mod:`risk_model.inputs`.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from risk_model.errors import BadInputError

#: File names of the synthetic inputs that :mod:`risk_model.synthetic` generates, by role.
FILENAMES = {
    "burn_probability": "burn_probability_270m_5070.tif",
    "conditional_risk": "conditional_risk_30m_5070.tif",
    "wind_direction": "wind_direction_shares_4326.tif",
}

#: File name of the synthetic hourly wind cube (:mod:`risk_model.synthetic_wind`).
HOURLY_FILENAME = "conus404_hourly_synthetic.nc"


class InputError(BadInputError, ValueError):
    """An input raster that is missing, unreadable, or does not fit the output grid."""


class InputSet(BaseModel):
    """Locations of the inputs (local paths, ``gs://`` or ``s3://`` URLs).

    The wind comes in one of two forms, exactly one of which is given: ready-made shares
    (``wind_direction``), or the hourly dataset they are computed from (``wind_hourly``, by
    the ``wind_shares`` asset, see :mod:`risk_model.wind`). Fields left unset are left out of
    the dumped form, so a ready-made set dumps (and ``RISK_INPUTS`` reads) as it always did.

    Parameters
    ----------
    burn_probability
        Annual burn probability (0-1), one band, any CRS and resolution (the USFS product:
        270 m, EPSG:5070).
    conditional_risk
        Conditional risk to potential structures (0-100), one band, any CRS and resolution
        (the USFS product: 30 m, EPSG:5070); its no-data marks the ocean.
    wind_direction
        Fire-weather wind-direction shares, 8 bands (from N, NE, E, SE, S, SW, W, NW),
        any CRS and resolution.
    wind_hourly
        An hourly CONUS404-like dataset (NetCDF file or Zarr store) the shares are computed from.

    Each raster must carry its CRS and cover the output grid; :mod:`risk_model.input_checks`
    says what else it checks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    burn_probability: str = Field(min_length=1)
    conditional_risk: str = Field(min_length=1)
    wind_direction: str | None = Field(default=None, min_length=1)
    wind_hourly: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_wind_input(self) -> "InputSet":
        if (self.wind_direction is None) == (self.wind_hourly is None):
            given = "both" if self.wind_direction is not None else "neither"
            raise ValueError(
                f"give exactly one wind input, got {given}: wind_direction (a ready-made 8-band share raster) "
                "or wind_hourly (an hourly CONUS404-like dataset the shares are computed from)"
            )
        return self

    @model_serializer(mode="wrap")
    def _without_unset_wind(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        dumped: dict[str, object] = handler(self)
        return {name: value for name, value in dumped.items() if value is not None}

    @property
    def wind_role(self) -> Literal["wind_direction", "wind_hourly"]:
        """Which wind input is given."""
        return "wind_direction" if self.wind_direction is not None else "wind_hourly"

    @property
    def roles(self) -> tuple[str, ...]:
        """The names of the inputs given: the two rasters and the wind input."""
        return ("burn_probability", "conditional_risk", self.wind_role)

    def with_wind_shares(self, path: str) -> "InputSet":
        """The rasters the model reads: this set with ready-made shares at ``path`` as its wind."""
        return InputSet(
            burn_probability=self.burn_probability, conditional_risk=self.conditional_risk, wind_direction=path
        )

    def wind_shares(self) -> str:
        """The wind-direction share raster; raises ``InputError`` for a set holding an hourly dataset."""
        if self.wind_direction is None:
            raise InputError(
                f"the inputs name the hourly dataset {self.wind_hourly}, not a share raster: compute its shares "
                "(the wind_shares asset) and read them (InputSet.with_wind_shares)"
            )
        return self.wind_direction


def local_input_set(inputs_dir: Path) -> InputSet:
    """The inputs that :func:`risk_model.synthetic.generate_inputs` writes into ``inputs_dir`` (may not exist yet)."""
    return InputSet(**{role: str((inputs_dir / name).resolve()) for role, name in FILENAMES.items()})


def local_hourly_input_set(inputs_dir: Path) -> InputSet:
    """The synthetic inputs of ``inputs_dir`` with the hourly cube as the wind input (files may not exist yet)."""
    rasters = local_input_set(inputs_dir)
    return InputSet(
        burn_probability=rasters.burn_probability,
        conditional_risk=rasters.conditional_risk,
        wind_hourly=str((inputs_dir / HOURLY_FILENAME).resolve()),
    )

"""The input rasters as pure data: where they are, and the error for one that cannot be used.

Light to import on purpose (pydantic only): ``risk build`` decides whether anything is to be
done before it loads rasterio, SciPy or Dagster's definitions. Reading the rasters is
:mod:`risk_model.inputs`.
"""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from risk_model.errors import BadInputError

#: File names of the synthetic inputs that :mod:`risk_model.synthetic` generates, by role.
FILENAMES = {
    "burn_probability": "burn_probability_270m_5070.tif",
    "conditional_risk": "conditional_risk_30m_4326.tif",
    "wind_direction": "wind_direction_shares_4326.tif",
}


class InputError(BadInputError, ValueError):
    """An input raster that is missing, unreadable, or does not fit the output grid."""


class InputSet(BaseModel):
    """Locations of the three input rasters (local paths, ``gs://`` or ``s3://`` URLs).

    Parameters
    ----------
    burn_probability
        Annual burn probability, one band, projected EPSG:5070 (about 270 m).
    conditional_risk
        Conditional risk to potential structures (0-100), one band, on the output grid
        (same CRS and pixel grid); its no-data marks the ocean.
    wind_direction
        Fire-weather wind-direction shares, 8 bands (from N, NE, E, SE, S, SW, W, NW),
        any CRS and resolution.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    burn_probability: str = Field(min_length=1)
    conditional_risk: str = Field(min_length=1)
    wind_direction: str = Field(min_length=1)


def local_input_set(inputs_dir: Path) -> InputSet:
    """The inputs that :func:`risk_model.synthetic.generate_inputs` writes into ``inputs_dir`` (may not exist yet)."""
    return InputSet(**{role: str((inputs_dir / name).resolve()) for role, name in FILENAMES.items()})

"""Project settings: which grid, and where the store, inputs and parameters live.

Pure data. :func:`settings_from_env` is the one place that reads the environment, and it
is called when the definitions are built, never at import.
"""

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from risk_model.overrides import DEFAULT_OVERRIDES_PATH
from risk_model.params import DEFAULT_PARAMS_PATH
from risk_model.versions import check_scenario, readers_branch


class Settings(BaseModel):
    """Where everything of one deployment lives.

    Parameters
    ----------
    home
        The project folder: holds ``var/`` (store, inputs) and, locally, the Dagster instance.
    grid
        Name of the output grid (``demo`` or ``conus-30m``).
    params_path
        The model parameters YAML file.
    overrides_path
        The per-region parameter overrides YAML file.
    sensor_interval_s
        Minimum seconds between two ticks of the reconciliation, automation and history sensors.
    scenario
        The scenario built (its own input set, e.g. the 2047 climate), released on its own
        readers' branch ``main-<scenario>`` beside the others; ``None``: the default, on ``main``.
    history_threshold
        Snapshots added since the last expiry at which the ``history_maintenance`` sensor
        requests maintenance (``RISK_HISTORY_COMMITS``).
    history_keep_hours
        The automatic maintenance expires snapshots older than this; 0 keeps only branch and tag
        tips and the ledger (``RISK_HISTORY_KEEP_HOURS``).
    """

    model_config = ConfigDict(frozen=True)

    home: Path
    grid: str = "demo"
    params_path: Path = DEFAULT_PARAMS_PATH
    overrides_path: Path = DEFAULT_OVERRIDES_PATH
    sensor_interval_s: int = 30
    scenario: str | None = None
    # 500: commits then list at most a few hundred snapshots (docs/scale.md section 4), and
    # the sensor counts them in the one repository file a session reads anyway (1,000 updates).
    history_threshold: int = Field(default=500, ge=1)
    # 0: a build of thousands of regions within hours would otherwise keep them all listed.
    history_keep_hours: float = Field(default=0.0, ge=0)

    @field_validator("scenario")
    @classmethod
    def _scenario_name(cls, value: str | None) -> str | None:
        return None if value is None else check_scenario(value)

    @property
    def readers_branch(self) -> str:
        """The branch this scenario is released on: ``main``, or ``main-<scenario>``."""
        return readers_branch(self.scenario)

    @property
    def slot(self) -> str:
        """The grid, and the scenario if one is named: what a scenario's local files are kept under."""
        return self.grid if self.scenario is None else f"{self.grid}-{self.scenario}"

    @property
    def var_dir(self) -> Path:
        """Generated state of the local default: store and inputs (git-ignored)."""
        return self.home / "var"

    @property
    def store_path(self) -> Path:
        """The local Icechunk repository of this grid."""
        return self.var_dir / "store" / f"{self.grid}.icechunk"

    @property
    def wind_shares_path(self) -> Path:
        """Where the wind shares computed from an hourly dataset are written (a GeoTIFF)."""
        return self.var_dir / "derived" / self.slot / "wind_shares_4km.tif"

    @property
    def inputs_dir(self) -> Path:
        """Where the synthetic inputs of this grid (and scenario) are generated."""
        return self.var_dir / "inputs" / self.slot


def settings_from_env() -> Settings:
    """Settings from ``RISK_HOME`` (default: the current directory), ``RISK_GRID``, ``RISK_PARAMS``,
    ``RISK_OVERRIDES``, ``RISK_SENSOR_INTERVAL``, ``RISK_SCENARIO``, ``RISK_HISTORY_COMMITS`` and
    ``RISK_HISTORY_KEEP_HOURS`` (the last two validated as numbers by pydantic, which names the field)."""
    fields: dict[str, object] = {"home": Path(os.environ.get("RISK_HOME", Path.cwd())).resolve()}
    if "RISK_GRID" in os.environ:
        fields["grid"] = os.environ["RISK_GRID"]
    if "RISK_SENSOR_INTERVAL" in os.environ:
        fields["sensor_interval_s"] = int(os.environ["RISK_SENSOR_INTERVAL"])
    if "RISK_PARAMS" in os.environ:
        fields["params_path"] = Path(os.environ["RISK_PARAMS"]).resolve()
    if "RISK_OVERRIDES" in os.environ:
        fields["overrides_path"] = Path(os.environ["RISK_OVERRIDES"]).resolve()
    if os.environ.get("RISK_SCENARIO"):
        fields["scenario"] = os.environ["RISK_SCENARIO"]
    if "RISK_HISTORY_COMMITS" in os.environ:
        fields["history_threshold"] = os.environ["RISK_HISTORY_COMMITS"]
    if "RISK_HISTORY_KEEP_HOURS" in os.environ:
        fields["history_keep_hours"] = os.environ["RISK_HISTORY_KEEP_HOURS"]
    return Settings.model_validate(fields)

"""Checking everything a build reads, once, before anything is written or any region run is launched.

A bad parameter, override or input fails the same way in every region: caught here it fails
the build once, within seconds, with one message naming each file, what is wrong and the fix.
"""

from collections.abc import Collection
from pathlib import Path

from risk_model.errors import BadInputError
from risk_model.grid import GridSpec
from risk_model.input_checks import input_problems
from risk_model.input_set import InputSet
from risk_model.overrides import load_overrides
from risk_model.params import ModelParams, ParamsError, load_params


class PreflightError(BadInputError, ValueError):
    """Several problems found before a build: each one's message is in :attr:`problems`."""

    def __init__(self, problems: list[BadInputError]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


def preflight_problems(
    params_path: Path | str,
    overrides_path: Path | str | None,
    inputs: InputSet,
    grid: GridSpec,
    region_ids: Collection[str] | None = None,
    *,
    check_inputs: bool = True,
) -> list[BadInputError]:
    """Every problem of the parameters, the overrides and the inputs; empty if none.

    Parameters
    ----------
    params_path
        The parameters YAML file.
    overrides_path
        The per-region overrides YAML file; ``None``: no overrides.
    inputs
        The input rasters.
    grid
        The output grid.
    region_ids
        The grid's regions (overrides of other ids are rejected); ``None``: not checked.
    check_inputs
        ``False``: skip the inputs (they passed these checks already, see
        :func:`resources.ledger.inputs_checked`); the parameters and overrides are checked.
    """
    problems: list[BadInputError] = []
    params: ModelParams | None = None
    try:
        params = load_params(params_path)
    except ParamsError as err:
        problems.append(err)
    try:
        # With the global parameters (when valid), every override's checks across fields run too.
        load_overrides(overrides_path, region_ids, params=params)
    except ParamsError as err:
        problems.append(err)
    if check_inputs:
        problems.extend(input_problems(inputs, grid))
    return problems


def preflight(
    params_path: Path | str,
    overrides_path: Path | str | None,
    inputs: InputSet,
    grid: GridSpec,
    region_ids: Collection[str] | None = None,
    *,
    check_inputs: bool = True,
) -> None:
    """Refuse a build whose parameters, overrides or inputs are wrong (see :func:`preflight_problems`).

    Raises
    ------
    BadInputError
        The one problem found (a ``ParamsError`` or ``InputError``), or a :class:`PreflightError`
        listing them all.
    """
    problems = preflight_problems(params_path, overrides_path, inputs, grid, region_ids, check_inputs=check_inputs)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise PreflightError(problems)

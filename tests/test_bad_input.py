"""Fail fast, once, with the cause: a bad parameter or input stops `risk build` before any run.

Each case runs the real `risk build` command on the `mini` grid with one thing wrong and checks
that it exits non-zero with one `error:` line naming the file (or field), the problem and the
fix, prints no traceback, launches no Dagster run (so no region run) and commits nothing on any
branch of the repository (which already holds the template, as after an earlier build).
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from dagster import DagsterEventType, DagsterInstance

from resources.store import LocalIcechunkStore
from resources.template import ensure_template
from risk_assets.definitions import PREPARE_JOB, build_definitions
from risk_assets.runs import failure_reasons, user_reason
from risk_assets.settings import Settings
from risk_model.grid import load_grid
from risk_model.inputs import InputSet
from risk_model.synthetic import generate_inputs

ROOT = Path(__file__).resolve().parents[1]
#: Generous: a failing build takes seconds (no run is launched); this only bounds a hang.
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def mini_inputs(tmp_path_factory: pytest.TempPathFactory) -> InputSet:
    """Good synthetic inputs of the mini grid; tests copy and break them."""
    return generate_inputs(load_grid("mini"), tmp_path_factory.mktemp("mini_inputs"), seed=0)


def _copy_inputs(inputs: InputSet, to: Path) -> InputSet:
    to.mkdir()
    return InputSet(
        **{role: str(shutil.copy(path, to / Path(path).name)) for role, path in inputs.model_dump().items()}
    )


def _project(tmp_path: Path) -> Path:
    """A project folder whose repository holds the template (as after an earlier build)."""
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    ensure_template(_store(home), load_grid("mini"), {"code_version": "test"})
    return home


def _store(home: Path) -> LocalIcechunkStore:
    return LocalIcechunkStore(path=str(Settings(home=home, grid="mini").store_path))


def _branch_tips(home: Path, store: LocalIcechunkStore | None = None) -> dict[str, str]:
    """Every branch's tip; empty when there is no repository."""
    store = store or _store(home)
    if not store.exists():
        return {}
    repo = store.repository()
    return {branch: repo.lookup_branch(branch) for branch in repo.list_branches()}


def _risk(
    home: Path, inputs: InputSet, *args: str, command: tuple[str, ...] = ("build",), grid: str = "mini", **env: str
) -> subprocess.CompletedProcess[str]:
    environ = os.environ | {
        "PYTHONPATH": str(ROOT),
        "DAGSTER_HOME": str(home),
        "RISK_HOME": str(home),
        "RISK_GRID": grid,
        "RISK_INPUTS": inputs.model_dump_json(),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(home), "--grid", grid, *args, *command],
        env=environ,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _assert_refused(
    home: Path,
    tips: dict[str, str],
    done: subprocess.CompletedProcess[str],
    *words: str,
    store: LocalIcechunkStore | None = None,
    returncode: int = 1,
) -> str:
    """Exit 1, one `error:` message holding ``words``, no traceback, no run, no commit."""
    assert done.returncode == returncode, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    message = done.stderr[done.stderr.index("error: ") :]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "Traceback" not in done.stderr and "dagster._core" not in done.stderr, done.stderr
    assert _branch_tips(home, store) == tips, "nothing committed on any branch"
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == [], "no run launched: neither the prepare run nor any region run"
    return message


def _params_case(text: str) -> Callable[[Path], dict[str, str]]:
    def write(tmp_path: Path) -> dict[str, str]:
        path = tmp_path / "params.yaml"
        path.write_text(text)
        return {"RISK_PARAMS": str(path)}

    return write


@pytest.mark.parametrize(
    ("write_params", "words"),
    [
        pytest.param(
            _params_case("kernel_semi_major_m: [400, 200\nblur_sigma_m: 120\n"),
            ["params.yaml", "is not valid YAML", "fix the syntax"],
            id="malformed-yaml",
        ),
        pytest.param(
            _params_case("kernel_semi_majr_m: 400\n"),
            ["params.yaml", "kernel_semi_majr_m", "did you mean 'kernel_semi_major_m'", "Fix these fields"],
            id="unknown-key",
        ),
        pytest.param(
            _params_case("blur_sigma_m: -120\n"),
            ["params.yaml", "blur_sigma_m", "greater than 0", "got -120", "Fix these fields"],
            id="negative-length",
        ),
        pytest.param(
            _params_case("kernel_semi_minor_m: 0\n"),
            ["params.yaml", "kernel_semi_minor_m", "greater than 0", "got 0", "Fix these fields"],
            id="zero-length",
        ),
        pytest.param(
            _params_case("kernel_semi_major_m: .nan\n"),
            ["params.yaml", "kernel_semi_major_m", "finite number", "got nan", "Fix these fields"],
            id="nan",
        ),
        pytest.param(
            _params_case("blur_radius_m: .inf\n"),
            ["params.yaml", "blur_radius_m", "finite number", "got inf", "Fix these fields"],
            id="inf",
        ),
        pytest.param(
            _params_case("score_bin_edges: [0.01, 0.02, 0.035, 0.06, 0.1, 0.2, 0.5, 1.0, 3.0, .inf]\n"),
            ["params.yaml", "score_bin_edges.9", "finite number", "got inf", "Fix these fields"],
            id="inf-bin-edge",
        ),
        pytest.param(
            _params_case("score_bin_edges: [0.01, 0.02, 0.035, 0.06, 0.2, 0.1, 0.5, 1.0, 3.0, 100]\n"),
            ["params.yaml", "score_bin_edges", "edges must be strictly increasing", "0.2, 0.1", "Fix these fields"],
            id="unsorted-bins",
        ),
    ],
)
def test_bad_parameters_stop_the_build_before_any_run(
    tmp_path: Path, mini_inputs: InputSet, write_params: Callable[[Path], dict[str, str]], words: list[str]
) -> None:
    home = _project(tmp_path)
    tips = _branch_tips(home)
    done = _risk(home, mini_inputs, **write_params(tmp_path))
    _assert_refused(home, tips, done, *words)


def _truncate(size: Callable[[int], int]) -> Callable[[InputSet], InputSet]:
    def broken(inputs: InputSet) -> InputSet:
        os.truncate(inputs.conditional_risk, size(os.path.getsize(inputs.conditional_risk)))
        return inputs

    return broken


def _missing(inputs: InputSet) -> InputSet:
    return inputs.model_copy(update={"wind_direction": str(Path(inputs.wind_direction).with_name("nowhere.tif"))})


def _elsewhere(inputs: InputSet) -> InputSet:
    """The wind raster re-labelled in UTM zone 33N (central Europe): it cannot cover California."""
    path = Path(inputs.wind_direction).with_name("wind_utm33n.tif")
    with rasterio.open(inputs.wind_direction) as src:
        profile, data = src.profile, src.read()
    profile.update(crs="EPSG:32633", transform=Affine(5000.0, 0.0, 400_000.0, 0.0, -5000.0, 5_400_000.0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(np.float32))
    return inputs.model_copy(update={"wind_direction": str(path)})


def _rewrite(role: str, change: Callable[[np.ndarray, np.ndarray], None]) -> Callable[[InputSet], InputSet]:
    """Change the values of one input in place: ``change(data, valid)`` on all its bands."""

    def broken(inputs: InputSet) -> InputSet:
        with rasterio.open(getattr(inputs, role), "r+") as dst:
            data = dst.read()
            valid = data != dst.nodata
            change(data, valid)
            dst.write(data)
        return inputs

    return broken


def _set_some(value: float) -> Callable[[np.ndarray, np.ndarray], None]:
    """Set every 97th pixel holding data to ``value``."""

    def change(data: np.ndarray, valid: np.ndarray) -> None:
        data[valid.nonzero()[0][::97], valid.nonzero()[1][::97], valid.nonzero()[2][::97]] = value

    return change


def _halve(data: np.ndarray, valid: np.ndarray) -> None:
    data[valid] *= 0.5


@pytest.mark.parametrize(
    ("break_inputs", "role", "words"),
    [
        pytest.param(
            _rewrite("burn_probability", _set_some(1.5)),
            "burn_probability",
            ["value(s) outside 0 to 1", "annual burn probability", "from 1.5 to 1.5", "the first at row", "fix the"],
            id="burn-probability-above-1",
        ),
        pytest.param(
            _rewrite("burn_probability", _set_some(-0.25)),
            "burn_probability",
            ["value(s) outside 0 to 1", "from -0.25 to -0.25", "fix the raster"],
            id="burn-probability-negative",
        ),
        pytest.param(
            _rewrite("conditional_risk", _set_some(250.0)),
            "conditional_risk",
            ["value(s) outside 0 to 100", "from 250 to 250", "fix the raster"],
            id="conditional-risk-above-100",
        ),
        pytest.param(
            _rewrite("wind_direction", _halve),
            "wind_direction",
            ["do not sum to 1", "sums from 0.5", "tolerance 0.01", "must sum to 1", "percentages divide them by 100"],
            id="wind-shares-not-summing-to-1",
        ),
        pytest.param(
            _truncate(lambda _: 1024),
            "conditional_risk",
            ["is truncated or corrupt", "GDAL cannot read", "expected", "replace it with a complete copy"],
            id="truncated-1KiB",
        ),
        pytest.param(
            _truncate(lambda size: size // 2),
            "conditional_risk",
            ["is truncated or corrupt", "GDAL cannot read", "expected", "replace it with a complete copy"],
            id="truncated-half",
        ),
        pytest.param(
            _missing,
            "wind_direction",
            ["cannot be opened", "No such file or directory", "check that the file exists"],
            id="missing",
        ),
        pytest.param(
            _elsewhere,
            "wind_direction",
            ["EPSG:32633", "does not cover grid 'mini'", "use a raster that covers the whole grid"],
            id="crs-not-covering",
        ),
    ],
)
def test_bad_inputs_stop_the_build_before_any_run(
    tmp_path: Path,
    mini_inputs: InputSet,
    break_inputs: Callable[[InputSet], InputSet],
    role: str,
    words: list[str],
) -> None:
    home = _project(tmp_path)
    tips = _branch_tips(home)
    inputs = break_inputs(_copy_inputs(mini_inputs, tmp_path / "inputs"))
    done = _risk(home, inputs)
    path = str(getattr(inputs, role))
    _assert_refused(home, tips, done, f"{role} input {path}", *words)


def test_nothing_is_created_when_the_first_build_is_refused(tmp_path: Path, mini_inputs: InputSet) -> None:
    home = tmp_path / "fresh"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    done = _risk(home, _missing(mini_inputs))
    assert done.returncode == 1 and done.stderr.startswith("error: wind_direction input "), done.stderr
    assert not Settings(home=home, grid="mini").store_path.exists(), "no repository, no template"


def test_several_problems_are_reported_together_and_debug_shows_the_traceback(
    tmp_path: Path, mini_inputs: InputSet
) -> None:
    home = _project(tmp_path)
    tips = _branch_tips(home)
    params = _params_case("blur_sigma_m: -120\n")(tmp_path)
    inputs = _missing(mini_inputs)
    message = _assert_refused(home, tips, _risk(home, inputs, **params), "2 problems", "blur_sigma_m", "nowhere.tif")
    assert message.count("\n  - ") == 2, message

    debug = _risk(home, inputs, "--debug", **params)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "PreflightError" in debug.stderr, debug.stderr
    assert _branch_tips(home) == tips


def test_prepare_job_fails_without_retry_and_commits_nothing(tmp_path: Path, mini_inputs: InputSet) -> None:
    """What automation and the schedule run: the prepare job refuses a truncated input."""
    inputs = _truncate(lambda size: size // 2)(_copy_inputs(mini_inputs, tmp_path / "inputs"))
    settings = Settings(home=tmp_path, grid="mini")
    defs = build_definitions(settings, inputs=inputs)
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    reasons = failure_reasons(result.all_events)
    assert reasons, "the failed steps give their reasons"
    for reason in reasons:
        assert f"conditional_risk input {inputs.conditional_risk} is truncated or corrupt" in reason, reasons
        assert not reason.startswith(("Failure", "dagster")), reason
    assert not any(e.event_type == DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events), "not retried"
    failed = {e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE}
    assert "raster_template" in failed and "input_conditional_risk" in "".join(str(s) for s in failed), failed
    observed = [e for e in result.all_events if e.event_type == DagsterEventType.ASSET_OBSERVATION]
    assert not any("conditional_risk" in str(e.asset_key) for e in observed), "no new data version for automation"
    assert not settings.store_path.exists(), "no template committed"


def test_user_reason_drops_dagsters_failure_prefix() -> None:
    assert user_reason("dagster._core.definitions.events.Failure: input x is bad: fix it\n") == "input x is bad: fix it"
    assert user_reason("Failure: input x is bad") == "input x is bad"
    assert user_reason("input x is bad: Failure: y") == "input x is bad: Failure: y"

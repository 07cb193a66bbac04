"""Fail fast, once, with the cause: a bad parameter or input stops `risk build` before any run.

Each case runs the real `risk build` command on the `mini` grid with one thing wrong and checks
that it exits non-zero with one `error:` line naming the file (or field), the problem and the
fix, prints no traceback, launches no Dagster run (so no region run) and commits nothing on any
branch of the repository (which already holds the template, as after an earlier build). The
refusals run the command's ``main`` in the test's process (``_refused_here``): they end before any
run or worker, and a fresh interpreter per case cost the suite about 9 s each under load. Cases
that need a process of their own (``--debug``'s traceback, a damaged database, a full disk,
Ctrl-C) run it as a user does (``_risk``), and are slow.

The rest of issue 15's catalogue follows the same pattern where it can (a region id, the store,
the grid, the instance's databases); a full disk and Ctrl-C happen during a write, after runs were
launched: those tests (slow) check the message, that nothing was committed or half-written, that
no run is left STARTED, and that a rerun completes.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _cli import risk_here
from _rundb import region_runs
from affine import Affine
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from rasterio.crs import CRS

from resources.ledger import iter_region_commits
from resources.local_store import LocalIcechunkStore
from resources.template import ensure_template
from risk_assets.definitions import PREPARE_JOB, build_definitions
from risk_assets.runs import failure_reasons, user_reason
from risk_assets.settings import Settings
from risk_model.grid import DATA_DIR, load_grid, load_registry, regions_file
from risk_model.input_set import InputSet
from risk_model.synthetic import generate_inputs

ROOT = Path(__file__).resolve().parents[1]
#: Generous: a failing build takes seconds (no run is launched); this only bounds a hang (the
#: SIGINT test's rerun builds the mini grid, which took over 120 s under a load of 25).
TIMEOUT_S = 600


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
    if not Path(store.path).is_dir() or not store.exists():
        return {}
    repo = store.repository()
    return {branch: repo.lookup_branch(branch) for branch in repo.list_branches()}


def _risk(
    home: Path, inputs: InputSet, *args: str, command: tuple[str, ...] = ("build",), grid: str = "mini", **env: str
) -> subprocess.CompletedProcess[str]:
    """The ``risk`` command in a process of its own: what a user runs, console and exit code included."""
    environ = os.environ | _risk_env(home, inputs, grid) | env
    return subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(home), "--grid", grid, *args, *command],
        env=environ,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _risk_env(home: Path, inputs: InputSet, grid: str) -> dict[str, str]:
    return {
        "PYTHONPATH": str(ROOT),
        "DAGSTER_HOME": str(home),
        "RISK_HOME": str(home),
        "RISK_GRID": grid,
        "RISK_INPUTS": inputs.model_dump_json(),
    }


def _refused_here(
    home: Path, inputs: InputSet, *args: str, command: tuple[str, ...] = ("build",), grid: str = "mini", **env: str
) -> subprocess.CompletedProcess[str]:
    """The same ``risk`` command in this process (:func:`_cli.risk_here`), for the cases refused before any run.

    A refusal launches no run and no worker, so nothing of the build outlives the call. ``_risk``
    keeps the cases that need a process of their own: ``--debug``'s traceback, a damaged
    database, a full disk, Ctrl-C.
    """
    return risk_here(["--home", str(home), "--grid", grid, *args, *command], _risk_env(home, inputs, grid) | env)


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
    _assert_no_run(home)
    return message


def _assert_no_run(home: Path) -> None:
    """No run launched: neither the prepare run nor any region run."""
    # A run is recorded in the instance's runs database, created with the first run; opening the
    # instance when there is none would create it (over a second per case), so look first.
    if (home / "history" / "runs.db").exists():
        with DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_runs() == [], "no run launched: neither the prepare run nor any region run"


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
    done = _refused_here(home, mini_inputs, **write_params(tmp_path))
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


def _unwarpable(inputs: InputSet) -> InputSet:
    """The wind raster labelled with a local engineering CRS: PROJ has no way to EPSG:4326."""
    path = Path(inputs.wind_direction).with_name("wind_engineering.tif")
    with rasterio.open(inputs.wind_direction) as src:
        profile, data = src.profile, src.read()
    profile.update(
        crs=CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1]]'),
        transform=Affine(5000.0, 0.0, 100_000.0, 0.0, -5000.0, 900_000.0),  # metres, as the CRS says
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
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
        pytest.param(
            _unwarpable,
            "wind_direction",
            ["cannot be transformed to the grid's EPSG:4326", "gdalwarp -t_srs", "gdal_edit.py -a_srs"],
            id="crs-cannot-be-warped",
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
    done = _refused_here(home, inputs)
    path = str(getattr(inputs, role))
    _assert_refused(home, tips, done, f"{role} input {path}", *words)


def test_nothing_is_created_when_the_first_build_is_refused(tmp_path: Path, mini_inputs: InputSet) -> None:
    home = tmp_path / "fresh"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    done = _refused_here(home, _missing(mini_inputs))
    assert done.returncode == 1 and done.stderr.startswith("error: wind_direction input "), done.stderr
    assert not Settings(home=home, grid="mini").store_path.exists(), "no repository, no template"


@pytest.mark.slow  # a `risk` process of its own
def test_several_problems_are_reported_together_and_debug_shows_the_traceback(
    tmp_path: Path, mini_inputs: InputSet
) -> None:
    home = _project(tmp_path)
    tips = _branch_tips(home)
    params = _params_case("blur_sigma_m: -120\n")(tmp_path)
    inputs = _missing(mini_inputs)
    message = _assert_refused(
        home, tips, _refused_here(home, inputs, **params), "2 problems", "blur_sigma_m", "nowhere.tif"
    )
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


# --- The rest of the catalogue: overrides, region ids, the store, the grid, the instance, interrupts.


def test_an_override_for_an_unknown_region_stops_the_build(tmp_path: Path, mini_inputs: InputSet) -> None:
    home = _project(tmp_path)
    tips = _branch_tips(home)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("y9_x9:\n  blur_sigma_m: 150\n")
    done = _refused_here(home, mini_inputs, RISK_OVERRIDES=str(overrides))
    _assert_refused(
        home, tips, done, "overrides.yaml", "unknown region 'y9_x9'", "risk regions --grid", "Fix these entries"
    )


@pytest.mark.parametrize(
    ("region", "words"),
    [
        pytest.param("y9_x9", ["region 'y9_x9' is not a region of grid 'mini'", "risk regions --grid mini --list"]),
        pytest.param("9_9", ["region id '9_9' is malformed", "look like 'y3_x12'"]),
    ],
)
def test_an_unknown_region_id_is_refused(tmp_path: Path, mini_inputs: InputSet, region: str, words: list[str]) -> None:
    """`risk lineage --region`, the command that takes a region id, refuses one the grid does not have."""
    home = _project(tmp_path)
    tips = _branch_tips(home)
    done = _refused_here(home, mini_inputs, command=("lineage", "--region", region))
    _assert_refused(home, tips, done, *words)


def _local_store_env(path: Path) -> dict[str, str]:
    return {"RISK_STORE": json.dumps({"kind": "local", "path": str(path)})}


def _mount_tmpfs(where: Path, options: str) -> None:
    """Mount a tmpfs at ``where``, or skip the test saying why not (mounting needs privileges)."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, check=False)


def test_a_store_path_under_a_regular_file_is_refused(tmp_path: Path, mini_inputs: InputSet) -> None:
    """Not writable even for root: a path through a regular file cannot be created."""
    home = _project(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    path = blocker / "mini.icechunk"
    store = LocalIcechunkStore(path=str(path))
    done = _refused_here(home, mini_inputs, **_local_store_env(path))
    _assert_refused(
        home,
        {},
        done,
        f"store path {path} cannot be created",
        f"{blocker} is a file, not a folder",
        "point the store at a new or empty folder",
        store=store,
    )
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize("existing", [False, True], ids=["new-store", "existing-store"])
def test_a_store_on_a_read_only_file_system_is_refused(tmp_path: Path, mini_inputs: InputSet, existing: bool) -> None:
    """A read-only tmpfs: unlike chmod, it stops root too (the tests run as root)."""
    home = _project(tmp_path)
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "size=4m")
    try:
        path = mount / "mini.icechunk"
        store = LocalIcechunkStore(path=str(path))
        if existing:
            ensure_template(store, load_grid("mini"), {"code_version": "test"})
        tips = _branch_tips(home, store)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True, check=False)
        assert remount.returncode == 0, remount.stderr
        done = _refused_here(home, mini_inputs, **_local_store_env(path))
        _assert_refused(
            home, tips, done, f"store path {path} is not writable", "Read-only file system", "remount it", store=store
        )
    finally:
        _umount(mount)


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_store_path_holding_something_else_is_refused(tmp_path: Path, mini_inputs: InputSet, kind: str) -> None:
    home = _project(tmp_path)
    path = tmp_path / "elsewhere.icechunk"
    if kind == "folder":
        path.mkdir()
        (path / "notes.txt").write_text("someone's notes")
        words = ["holds something that is not an Icechunk repository (notes.txt)", "move its contents away"]
    else:
        path.write_text("someone's notes")
        words = ["is a file, not an Icechunk repository", "move the file away"]
    done = _refused_here(home, mini_inputs, **_local_store_env(path))
    _assert_refused(home, {}, done, f"store path {path}", *words, store=LocalIcechunkStore(path=str(path)))
    assert (path / "notes.txt" if kind == "folder" else path).read_text() == "someone's notes", "left as it was"
    assert kind == "file" or sorted(p.name for p in path.iterdir()) == ["notes.txt"]


def test_a_store_holding_another_grids_template_is_refused(tmp_path: Path, mini_inputs: InputSet) -> None:
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    ensure_template(_store(home), load_grid("demo"), {"code_version": "test"})
    tips = _branch_tips(home)
    done = _refused_here(home, mini_inputs)
    _assert_refused(
        home, tips, done, "already holds a template of grid 'demo'", "not of grid 'mini'", "use another store path"
    )


@pytest.fixture
def misaligned_grid() -> Iterator[str]:
    """A grid file like mini's with its origin half a pixel off the conus-30m lattice (removed afterwards)."""
    name = f"misaligned-{os.getpid()}"
    mini = load_grid("mini")
    a, b, c, d, e, f = mini.transform
    spec = mini.model_copy(update={"name": name, "transform": (a, b, c + a / 2, d, e, f)})
    files = [DATA_DIR / "grids" / f"{name}.json", regions_file(name)]
    files[0].write_text(spec.model_dump_json(indent=1))
    files[1].write_text(json.dumps({"grid": name, "source": "test", "regions": load_registry("mini").ids}))
    try:
        yield name
    finally:
        for path in files:
            path.unlink(missing_ok=True)


def test_a_misaligned_grid_definition_is_refused(tmp_path: Path, mini_inputs: InputSet, misaligned_grid: str) -> None:
    home = _project(tmp_path)
    done = _refused_here(home, mini_inputs, grid=misaligned_grid)
    store = LocalIcechunkStore(path=str(Settings(home=home, grid=misaligned_grid).store_path))
    _assert_refused(
        home,
        {},
        done,
        f"grid file {DATA_DIR / 'grids' / misaligned_grid}.json is misaligned",
        "17817.5000 columns",
        "not a whole number of pixels",
        "nearest origin on the lattice",
        "move the origin onto the lattice",
        store=store,
    )


def test_an_unknown_grid_is_refused(tmp_path: Path, mini_inputs: InputSet) -> None:
    home = _project(tmp_path)
    done = _refused_here(home, mini_inputs, grid="nowhere")
    store = LocalIcechunkStore(path=str(Settings(home=home, grid="nowhere").store_path))
    _assert_refused(home, {}, done, "unknown grid 'nowhere'", "known grids are conus-30m, demo, mini", store=store)


@pytest.mark.slow  # a `risk` process of its own
@pytest.mark.parametrize("database", ["history/runs.db", "history/runs/index.db"])
def test_a_truncated_instance_database_is_named(tmp_path: Path, mini_inputs: InputSet, database: str) -> None:
    """The message names the file and says to move it aside; done, the instance works again."""
    home = _project(tmp_path)
    tips = _branch_tips(home)
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []  # creates the databases
    path = home / database
    os.truncate(path, path.stat().st_size // 2)
    done = _risk(home, mini_inputs)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    for word in [str(path), "is damaged", "malformed", "move the file aside", f"mv {path} {path}.damaged"]:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    assert "Traceback" not in done.stderr and "sqlalchemy" not in done.stderr, done.stderr
    assert _branch_tips(home) == tips, "nothing committed on any branch"

    path.rename(f"{path}.damaged")  # what the message says to do
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == [], "the instance opens and lists its runs again"


def _tip_snapshots(home: Path, store: LocalIcechunkStore) -> set[str]:
    return set(_branch_tips(home, store).values())


def _runs_left_started(home: Path) -> list[str]:
    with DagsterInstance.from_config(str(home)) as instance:
        return [r.run_id for r in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))]


@pytest.mark.slow
def test_a_full_disk_stops_the_build_at_once_and_a_rerun_after_freeing_space_completes(
    tmp_path: Path, mini_inputs: InputSet
) -> None:
    """The store on a 16 MiB tmpfs holding the template and a filler that leaves 16 KiB free."""
    home = _project(tmp_path)
    mount = tmp_path / "small-disk"
    _mount_tmpfs(mount, "size=16m")
    try:
        path = mount / "mini.icechunk"
        store = LocalIcechunkStore(path=str(path))
        ensure_template(store, load_grid("mini"), {"code_version": "test"})
        before = _tip_snapshots(home, store)
        free = shutil.disk_usage(mount).free
        filler = mount / "filler"
        filler.write_bytes(b"\0" * (free - 16 * 1024))
        # One region per run, as on Kubernetes: the bound below counts regions launched after the
        # first failure, which a group of regions per run would make as large as the group.
        env = {**_local_store_env(path), "RISK_REGIONS_PER_RUN": "1"}

        started = time.monotonic()
        done = _risk(home, mini_inputs, **env)
        elapsed = time.monotonic() - started
        assert done.returncode == 1, done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, done.stderr
        for word in [f"the store {path} is out of space", "No space left on device", "nothing of it was committed"]:
            assert word in errors[0], f"{word!r} not in {errors[0]!r}"
        assert "Free space on that disk" in errors[0] and "run `risk build` again" in errors[0]
        assert "Traceback" not in done.stderr, done.stderr
        failed = int(re.search(r"failed (\d+);", done.stdout).group(1))  # type: ignore[union-attr]
        assert 1 <= failed <= 6, f"no region launched after the first full-disk failure but those queued: {done.stdout}"
        print(errors[0])
        assert _tip_snapshots(home, store) <= before, "no commit on any branch (a new branch at the template is fine)"
        assert _runs_left_started(home) == [], "no run left STARTED"
        assert elapsed < TIMEOUT_S, f"stopped at once, not after retries: {elapsed:.0f} s"

        filler.unlink()  # what the message says: free space, build again
        # With the local default of regions per run: the bound above is the first build's.
        again = _risk(home, mini_inputs, **_local_store_env(path))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "released release-" in again.stdout, again.stdout
        records = list(iter_region_commits(store.repository(), "main", use_ledger=False))
        assert sorted(r.region for r in records) == sorted(load_registry("mini").ids), "every region once"
    finally:
        _umount(mount)


@pytest.mark.slow
def test_sigint_stops_the_build_and_a_rerun_completes_with_nothing_lost_or_doubled(
    tmp_path: Path, mini_inputs: InputSet
) -> None:
    """Ctrl-C (SIGINT to the build's process group, as a terminal sends it) once a region is done."""
    home = _project(tmp_path)
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "DAGSTER_HOME": str(home),
        "RISK_HOME": str(home),
        "RISK_GRID": "mini",
        "RISK_INPUTS": mini_inputs.model_dump_json(),
        # Small groups, so that region runs end one after another and Ctrl-C lands mid-build
        # (with the local default of 16 the mini grid's 20 regions are two long runs).
        "RISK_REGIONS_PER_RUN": "2",
    }
    build = subprocess.Popen(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(home), "--grid", "mini", "build", "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and build.poll() is None:
            time.sleep(0.5)
            if region_runs(home, DagsterRunStatus.SUCCESS) >= 1:
                break
        assert build.poll() is None, f"the build ended before the interrupt: {build.communicate()}"
        os.killpg(build.pid, signal.SIGINT)
        interrupted_at = time.monotonic()
        out, err = build.communicate(timeout=TIMEOUT_S)
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
    stopped_after = time.monotonic() - interrupted_at
    assert build.returncode == 130, out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "interrupted (Ctrl-C)" in errors[0], err
    assert "every region committed so far is kept" in errors[0] and "run `risk build` again" in errors[0]
    assert "Traceback" not in err, err
    assert _runs_left_started(home) == [], "Dagster recorded the end of every run"
    store = _store(home)
    assert "released" not in out, "an interrupted build releases nothing"

    again = _risk(home, mini_inputs)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "released release-" in again.stdout, again.stdout
    records = list(iter_region_commits(store.repository(), "main", use_ledger=False))
    assert sorted(r.region for r in records) == sorted(load_registry("mini").ids), (
        "every region once: none lost or doubled"
    )
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(load_registry("mini").ids)
    print(f"stopped {stopped_after:.1f} s after SIGINT")

"""A project folder with a real `dagster dev` (webserver + daemon), for the end-to-end tests."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from _targets import inputs_resource, params_resource

from resources.ledger import committed_regions
from resources.local_store import LocalIcechunkStore
from risk_assets.settings import Settings
from risk_model.grid import load_registry
from risk_model.input_set import InputSet, local_input_set
from risk_model.synthetic import generate_inputs
from risk_model.versions import Target

if TYPE_CHECKING:
    import pytest
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if condition():
            print(f"waited {time.monotonic() - started:.1f} s for {what}")
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Project:
    """A project folder with its instance, store and a running `dagster dev`."""

    home: Path
    settings: Settings
    env: dict[str, str]
    url: str

    @property
    def store(self) -> LocalIcechunkStore:
        return LocalIcechunkStore(path=str(self.settings.store_path))

    @property
    def branch(self) -> str:
        """The branch of the current raster version (default parameters, the project's inputs)."""
        return self.target().version.branch

    def target(self) -> Target:
        """What the project's raster is built from now."""
        from resources.target import current_target
        from risk_model.synthetic import local_input_set

        params = params_resource(overrides=str(self.settings.overrides_path))
        inputs = inputs_resource(local_input_set(self.settings.inputs_dir))
        return current_target(params, inputs, load_registry(self.settings.grid).ids)

    def committed(self) -> set[str]:
        """Regions committed on the current version's branch."""
        return set(committed_regions(self.store.repository(), self.branch))


def server_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, TimeoutError, ConnectionError):
        return False


def make_project(tmp_path: Path, inputs: InputSet, grid: str = "demo") -> Project:
    """A fresh project folder: the repository's dagster.yaml, ``inputs`` of ``grid``, a free port.

    Its parameters are the checked-in defaults; its overrides file (empty) is in the folder,
    so a test may change it. Its inputs are the copied rasters with their ready-made wind shares,
    named in ``RISK_INPUTS`` (the local default would compute the shares from an hourly wind
    cube, which these tests do not generate: ``test_wind_asset.py`` covers that path).
    """
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (home / "overrides.yaml").write_text("{}\n")
    shutil.copytree(Path(inputs.burn_probability).parent, Settings(home=home, grid=grid).inputs_dir)
    return _project_at(home, grid)


def _project_at(home: Path, grid: str) -> Project:
    """The project in ``home`` (its overrides file in it, its inputs in ``settings.inputs_dir``), a free port."""
    overrides = home / "overrides.yaml"
    settings = Settings(home=home, grid=grid, sensor_interval_s=5, overrides_path=overrides)
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "RISK_HOME": str(home),
        "RISK_GRID": grid,
        "RISK_SENSOR_INTERVAL": "5",
        "RISK_OVERRIDES": str(overrides),
        "RISK_INPUTS": local_input_set(settings.inputs_dir).model_dump_json(),
    }
    return Project(home, settings, env, f"http://127.0.0.1:{free_port()}")


def built_mini_project(tmp_path: Path, shared: Path) -> Project:
    """A project on the ``mini`` grid that ``risk build`` built and released, as a copy of its own.

    The end-to-end tests start from the same built project; one build per test session serves
    them all (about a minute of a loaded CI machine each): the first test to ask builds it in
    ``shared`` under a lock, the others wait for it, and each gets a copy of the folder (the
    repository, Dagster's SQLite instance and the inputs; nothing in them names the folder that
    matters to a build: inputs are versioned by checksum).
    """
    import fcntl

    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / "build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        built = shared / "project"
        if not (shared / "built").exists():
            shutil.rmtree(built, ignore_errors=True)  # a build that failed before
            inputs = generate_inputs(load_registry("mini").grid, shared / "inputs", seed=0)
            project = make_project(shared, inputs, grid="mini")
            done = risk_build(project)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "released release-" in done.stdout, done.stdout
            (shared / "built").write_text(done.stdout)
    home = tmp_path / "project"
    shutil.copytree(built, home, symlinks=True)
    return _project_at(home, "mini")


def shared_folder(tmp_path_factory: "pytest.TempPathFactory", name: str) -> Path:
    """A folder every xdist worker of this test session shares (the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


def risk_build(project: Project, grid: str = "mini") -> subprocess.CompletedProcess[str]:
    """``risk build`` of ``grid`` in the project, as a user runs it (its own process), with the output kept."""
    return subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(project.home), "--grid", grid, "build"],
        env=project.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@contextmanager
def dagster_dev(project: Project) -> Iterator[subprocess.Popen[bytes]]:
    """`dagster dev` on the project, up and answering, stopped (whole process group) on exit."""
    process = start_dagster_dev(project)
    try:
        wait_for(lambda: server_up(project.url), 90, "the webserver")
        yield process
    finally:
        stop(process)


def start_dagster_dev(project: Project) -> subprocess.Popen[bytes]:
    port = project.url.rsplit(":", 1)[1]
    log = open(project.home / "dagster-dev.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-p", port],
        cwd=project.home,
        env=project.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so teardown stops every child
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    # `dagster dev` may not exit on SIGTERM without a terminal: stop its whole group.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


CHROMIUM = "/usr/bin/chromium"
# The flags Chromium needs here: no sandbox as root, and no background calls to a network it cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def ui_page(url: str, page_path: str, first_visit: bool = True) -> Iterator["Page"]:
    """``page_path`` of the Dagster UI open in headless chromium, its first-visit pop-up dismissed.

    The instance remembers the pop-up was dismissed: on later visits (``first_visit=False``) it
    does not show.
    """
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required: `make browser` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}{page_path}", wait_until="networkidle")
        if first_visit:
            # The first visit shows a "Join the Dagster community" pop-up.
            skip = page.get_by_role("button", name="Skip")
            skip.wait_for(timeout=15_000)
            skip.click()
        yield page
        browser.close()


def markdown_image_in_the_ui(
    url: str, page_path: str, row_label: str, screenshot: Path, first_visit: bool = True
) -> tuple[str, list[int]]:
    """Open ``page_path`` of the UI in headless chromium, show the markdown metadata ``row_label``
    and return its image's ``src`` and decoded size (what the browser really drew)."""
    with ui_page(url, page_path, first_visit) as page:
        row = page.get_by_role("row").filter(has=page.get_by_text(row_label, exact=True))
        row.wait_for(timeout=30_000)
        # Long markdown shows as a "[Show Markdown]" link that opens a dialog; short markdown (a
        # small region's picture) is drawn in the row itself.
        link = row.get_by_text("[Show Markdown]")
        if link.count():
            link.click()
            image = page.get_by_role("dialog").locator("img")
        else:
            image = row.locator("img")
        image.wait_for(timeout=15_000)
        page.wait_for_function("img => img.complete", arg=image.element_handle(), timeout=15_000)
        page.screenshot(path=str(screenshot))
        src = image.get_attribute("src") or ""
        size: list[int] = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    return src, size

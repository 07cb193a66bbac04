"""End to end: `risk build` through a real Dagster instance on SQLite, run twice."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from resources.ledger import iter_region_commits
from resources.store import LocalIcechunkStore
from risk_assets.settings import Settings
from risk_model.grid import load_registry

ROOT = Path(__file__).resolve().parents[1]


def _risk_build(home: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DAGSTER_HOME": str(home), "RISK_HOME": str(home), "RISK_GRID": "mini"}
    return subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(home), "--grid", "mini", "build", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.slow
def test_build_every_region_once_then_nothing(tmp_path: Path) -> None:
    """The same command as `make demo`, on the small `mini` grid to keep the suite fast."""
    registry = load_registry("mini")
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")

    first = _risk_build(home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"built {len(registry)} regions" in first.stdout
    # one commit per region, plus the pyramid commit of the release
    assert f"commits made: {len(registry) + 1}" in first.stdout
    assert "released release-" in first.stdout

    store = LocalIcechunkStore(path=str(Settings(home=home, grid="mini").store_path))
    records = list(iter_region_commits(store.repository(), "main", use_ledger=False))
    assert sorted(r.region for r in records) == sorted(registry.ids), "main holds every region, once"
    assert all(r.run_id and r.params_version and r.inputs_version and r.metadata["bounds"] for r in records)

    second = _risk_build(home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 to run" in second.stdout
    assert "commits made: 0" in second.stdout

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(registry.ids)

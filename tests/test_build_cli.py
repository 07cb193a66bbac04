"""End to end: `risk build` on the demo grid through a real Dagster instance on SQLite."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from resources.ledger import iter_region_commits
from resources.store import LocalIcechunkStore
from risk_assets.grid import RegionRegistry
from risk_assets.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _risk_build(home: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DAGSTER_HOME": str(home), "RISK_HOME": str(home), "RISK_GRID": "demo"}
    return subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(home), "build", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.slow
def test_build_every_region_once_then_nothing(tmp_path: Path, demo_registry: RegionRegistry) -> None:
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")

    first = _risk_build(home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"built {len(demo_registry)} regions" in first.stdout
    assert f"commits made: {len(demo_registry)}" in first.stdout

    store = LocalIcechunkStore(path=str(Settings(home=home).store_path))
    records = list(iter_region_commits(store.repository(), "main"))
    assert sorted(r.region for r in records) == sorted(demo_registry.ids), "one commit per region"
    assert all(r.run_id and r.params_version and r.metadata["bounds"] for r in records)

    second = _risk_build(home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 to run" in second.stdout
    assert "commits made: 0" in second.stdout

    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(AssetKey("risk_raster")) == set(demo_registry.ids)

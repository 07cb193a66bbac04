"""What must load without Dagster (and the rerun decision without Icechunk): storage, region writers, the decision.

A region writer process, ``risk build``'s decision that nothing is missing, and ``risk status``,
``lineage`` and ``compare`` use these modules; importing Dagster costs each of them about a
second (``docs/benchmarks.md``). The import is checked in a fresh interpreter, where nothing
else has loaded Dagster first.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Modules on those paths; each of them must import neither Dagster nor a module that does.
LIGHT = (
    "resources.store",
    "resources.local_store",
    "resources.cloud_stores",
    "resources.target",
    "resources.region_write",
    "resources.batch_handoff",
    "risk_assets.deployment",
    "risk_assets.resource_wiring",
    "risk_assets.build_command",
    "risk_assets.cli",
)


#: What ``risk build`` needs to decide from the record stamp that nothing is to run: not even
#: Icechunk, Zarr or NumPy (half a second together, most of such a rerun; ``docs/benchmarks.md``).
DECISION = (
    "resources.store",
    "resources.local_store",
    "resources.cloud_stores",
    "resources.target",
    "risk_assets.deployment",
    "risk_assets.resource_wiring",
    "risk_assets.build_noop",
    "risk_assets.build_command",
    "risk_assets.cli",
)


def _loaded_modules(modules: tuple[str, ...], packages: tuple[str, ...] = ("dagster",)) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {list(packages)!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_storage_writers_and_the_rerun_decision_load_without_dagster() -> None:
    assert _loaded_modules(LIGHT) == []


def test_the_rerun_decision_loads_no_array_library_and_not_icechunk() -> None:
    assert _loaded_modules(DECISION, ("icechunk", "zarr", "numpy")) == []


def test_the_check_sees_dagster_when_it_is_imported() -> None:
    """The check can fail: a module that does import Dagster is reported."""
    assert "dagster" in _loaded_modules(("risk_assets.definitions",))
    assert "icechunk" in _loaded_modules(("resources.ledger",), ("icechunk",))

"""Benchmark: a global parameter change over 10,000 regions, as the automation sensor sees it.

Builds the real assets over a synthetic 100 x 100-region grid, observes the sources, records
every region as built, and then times automation ticks (``evaluate_automation_conditions``,
what the sensor evaluates):

- baseline: an idle tick (nothing changed);
- a tick after the parameters changed: how long, how many partitions requested, and how many
  run requests the sensor would emit with its ``emit_backfills`` setting (Dagster's own
  ``build_run_requests``): one backfill, not 10,000 runs in the queue;
- a tick after re-observing the unchanged file: nothing requested.

Usage::

    .venv/bin/python benchmarks/bench_automation.py [--regions 10000]
"""

import argparse
import tempfile
import time
from pathlib import Path

from _fixtures import square_registry, stand_in_inputs
from dagster import (
    AssetKey,
    AssetMaterialization,
    AutomationConditionSensorDefinition,
    DagsterInstance,
    Definitions,
    define_asset_job,
    evaluate_automation_conditions,
)
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

from resources.io_manager import IcechunkRegionIOManager
from resources.local_store import LocalIcechunkStore
from resources.target import ModelParamsResource
from risk_assets.assets import IO_MANAGER_KEY, build_assets
from risk_assets.definitions import REGION_RUN_TAG, SOURCE_KEYS
from risk_model.params import DEFAULT_PARAMS_PATH

KEY = AssetKey("risk_raster")


def main() -> None:
    """Build the fixture, time the ticks and print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--regions", type=int, default=10_000)
    args = parser.parse_args()
    registry = square_registry(args.regions)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        params_file = home / "params.yaml"
        params_file.write_text(DEFAULT_PARAMS_PATH.read_text())
        overrides = home / "overrides.yaml"
        overrides.write_text("{}\n")
        observe = define_asset_job("observe", selection=SOURCE_KEYS)
        store = LocalIcechunkStore(path=str(home / "repo.icechunk"))
        automation = AutomationConditionSensorDefinition(
            "risk_automation", target="*", emit_backfills=True, run_tags=REGION_RUN_TAG
        )
        defs = Definitions(
            assets=build_assets(registry),
            jobs=[observe],
            sensors=[automation],
            resources={
                "params": ModelParamsResource(path=str(params_file), overrides_path=str(overrides)),
                "inputs": stand_in_inputs(home),
                # never used: no region runs here, only the automation's decisions
                "store": store,
                IO_MANAGER_KEY: IcechunkRegionIOManager(store=store, grid="demo"),
            },
        )
        with DagsterInstance.ephemeral(tempdir=tmp) as instance:
            started = time.perf_counter()
            assert defs.resolve_job_def("observe").execute_in_process(instance=instance).success
            for region in registry.ids:
                instance.report_runless_asset_event(AssetMaterialization(KEY, partition=region))
            fixture = time.perf_counter() - started
            cursor = evaluate_automation_conditions(defs=defs, instance=instance).cursor

            def tick() -> tuple[float, int, int]:
                nonlocal cursor
                started = time.perf_counter()
                result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
                seconds = time.perf_counter() - started
                cursor = result.cursor
                requests = build_run_requests(
                    list(result._requested_subsets), defs.resolve_asset_graph(), REGION_RUN_TAG, emit_backfills=True
                )
                return seconds, len(result.get_requested_partitions(KEY)), len(requests)

            idle = tick()
            params_file.write_text(params_file.read_text().replace("blur_sigma_m: 120.0", "blur_sigma_m: 100.0"))
            assert defs.resolve_job_def("observe").execute_in_process(instance=instance).success
            changed = tick()
            after = tick()
            assert defs.resolve_job_def("observe").execute_in_process(instance=instance).success
            unchanged = tick()

    print(f"{len(registry)} regions; fixture (observation + {len(registry)} records) {fixture:.0f} s")
    print()
    print("| automation tick | seconds | ratio to idle | partitions requested | run requests emitted |")
    print("|---|---|---|---|---|")
    for label, (seconds, partitions, requests) in (
        ("idle (baseline)", idle),
        ("after a global parameter change", changed),
        ("the next tick", after),
        ("after re-observing the unchanged file", unchanged),
    ):
        print(f"| {label} | {seconds:.2f} | {seconds / idle[0]:.2f} | {partitions} | {requests} |")


if __name__ == "__main__":
    main()

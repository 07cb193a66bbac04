"""The rerun with nothing to do: decided from the commit log, answered without a run or a commit.

``risk build`` asks :func:`nothing_to_run` first. With every region committed for its current build
key and the version released, it says so and records any region Dagster lacks, without a run, the
inputs check, Dagster's definitions or a commit; Dagster is imported only when the record stamp
(:mod:`risk_assets.record_stamp`) does not already say that it holds every region at this tip.
After a build, :func:`stamp_if_recorded` writes that stamp.
"""

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from risk_assets.build_plan import BuildPlan, plan_build, record_committed
from risk_assets.record_stamp import STAMP_NAME, stamp_matches, write_stamp

if TYPE_CHECKING:
    from resources.store import IcechunkStore
    from risk_assets.settings import Settings
    from risk_model.grid import RegionRegistry
    from risk_model.versions import Target


def describe_plan(registry: "RegionRegistry", plan: BuildPlan, todo: int) -> str:
    """One line: the grid, how many regions are done and to run, and the version's parts."""
    version = plan.version
    return (
        f"grid {registry.grid.name}: {len(registry)} regions, {len(registry) - todo} done, "
        f"{todo} to run for version {version.id} (params {version.params_version}, overrides "
        f"{version.overrides_version}, inputs {version.inputs_version}, code {version.code_version})"
    )


def nothing_to_run(
    settings: "Settings", registry: "RegionRegistry", store: "IcechunkStore", target: "Target", started: float
) -> bool:
    """The no-op rerun: if the commit log says every region is built and released, say so and record any
    region Dagster lacks, without a run, the inputs check, Dagster's definitions or a commit.

    Dagster itself is asked (and imported) only when the record stamp (:mod:`risk_assets.record_stamp`)
    does not already say that it recorded every region at this tip. Returns ``False`` (decide
    nothing) when that cannot be told cheaply: no repository yet, say.
    """
    from risk_model.errors import RiskError

    try:
        plan = plan_build(store, target, registry.ids)
    except RiskError:
        return False  # no repository, or one that cannot be read: the full build says why
    if not plan.nothing_to_run or plan.tip is None:
        return False
    home, stamp = Path(os.environ["DAGSTER_HOME"]), settings.var_dir / STAMP_NAME
    recorded = 0
    if not stamp_matches(stamp, home, plan.branch, plan.tip):
        from dagster import DagsterInstance

        with DagsterInstance.get() as instance:
            plan = plan_build(store, target, registry.ids, instance)
            if not plan.nothing_to_run or plan.tip is None:
                return False
            recorded = record_committed(instance, plan)
        write_stamp(stamp, home, plan.branch, plan.tip)
    print(describe_plan(registry, plan, 0))
    if recorded:
        print(f"recorded {recorded} regions committed earlier in Dagster (no run: they are in the commit log)")
    print(
        f"built 0 regions, skipped {len(registry)}, failed 0; commits made: 0; "
        f"wall time {time.perf_counter() - started:.1f} s; store: {store.location()}"
    )
    print(f"{store.branch} already holds version {plan.version.id}: nothing to release")
    return True


def stamp_if_recorded(
    settings: "Settings", registry: "RegionRegistry", store: "IcechunkStore", target: "Target"
) -> None:
    """After a build that ended released: write the record stamp if Dagster holds every region, so
    that the next rerun with nothing to do need not ask it (:mod:`risk_assets.record_stamp`)."""
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        plan = plan_build(store, target, registry.ids, instance)
    if plan.nothing_to_run and not plan.unrecorded and plan.tip is not None:
        write_stamp(settings.var_dir / STAMP_NAME, Path(os.environ["DAGSTER_HOME"]), plan.branch, plan.tip)

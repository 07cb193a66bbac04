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

from risk_assets.build_plan import plan_build, record_committed
from risk_assets.record_stamp import STAMP_NAME, stamp_answers, stamp_matches, write_stamp

if TYPE_CHECKING:
    from resources.store import IcechunkStore
    from risk_assets.settings import Settings
    from risk_model.grid import RegionRegistry
    from risk_model.versions import RasterVersion, Target


def describe_plan(registry: "RegionRegistry", version: "RasterVersion", todo: int) -> str:
    """One line: the grid, how many regions are done and to run, and the version's parts."""
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
    does not already say that it recorded every region at this tip; a stamp of this version at the
    same refs digest (a local repository) answers without opening the repository at all. Returns
    ``False`` (decide nothing) when that cannot be told cheaply: no repository yet, say.
    """
    from risk_model.errors import RiskError

    home, stamp = Path(os.environ["DAGSTER_HOME"]), settings.var_dir / STAMP_NAME
    # Read before the plan: should a commit land in between, the stamp below names refs older
    # than what the plan read, refs no later rerun finds again (the file never returns to old bytes).
    refs = store.refs_digest()
    if stamp_answers(stamp, home, _released_as(store, target.version), refs):
        # The very commit log, and Dagster's records, of a rerun that found nothing to do.
        _say_nothing_to_run(registry, store, target.version, 0, started)
        return True
    try:
        plan = plan_build(store, target, registry.ids)
    except RiskError:
        return False  # no repository, or one that cannot be read: the full build says why
    if not plan.nothing_to_run or plan.tip is None:
        return False
    recorded = 0
    if stamp_matches(stamp, home, plan.branch, plan.tip):
        # Dagster recorded every region at this tip; note the refs too, for the next rerun.
        write_stamp(stamp, home, plan.branch, plan.tip, version=_released_as(store, plan.version), refs=refs)
    else:
        from dagster import DagsterInstance

        with DagsterInstance.get() as instance:
            plan = plan_build(store, target, registry.ids, instance)
            if not plan.nothing_to_run or plan.tip is None:
                return False
            recorded = record_committed(instance, plan)
        write_stamp(stamp, home, plan.branch, plan.tip, version=_released_as(store, plan.version), refs=refs)
    _say_nothing_to_run(registry, store, plan.version, recorded, started)
    return True


def _released_as(store: "IcechunkStore", version: "RasterVersion") -> str:
    """The stamp's version: the raster version and the readers' branch it was released on (two
    scenarios of one project may share inputs, so a version, but not their readers' branches)."""
    return f"{version.id} on {store.branch}"


def _say_nothing_to_run(
    registry: "RegionRegistry", store: "IcechunkStore", version: "RasterVersion", recorded: int, started: float
) -> None:
    print(describe_plan(registry, version, 0))
    if recorded:
        print(f"recorded {recorded} regions committed earlier in Dagster (no run: they are in the commit log)")
    print(
        f"built 0 regions, skipped {len(registry)}, failed 0; commits made: 0; "
        f"wall time {time.perf_counter() - started:.1f} s; store: {store.location()}"
    )
    print(f"{store.branch} already holds version {version.id}: nothing to release")


def stamp_if_recorded(
    settings: "Settings", registry: "RegionRegistry", store: "IcechunkStore", target: "Target"
) -> None:
    """After a build that ended released: write the record stamp if Dagster holds every region, so
    that the next rerun with nothing to do need not ask it (:mod:`risk_assets.record_stamp`)."""
    from dagster import DagsterInstance

    refs = store.refs_digest()  # before the plan (see nothing_to_run)
    with DagsterInstance.get() as instance:
        plan = plan_build(store, target, registry.ids, instance)
    if plan.nothing_to_run and not plan.unrecorded and plan.tip is not None:
        write_stamp(
            settings.var_dir / STAMP_NAME,
            Path(os.environ["DAGSTER_HOME"]),
            plan.branch,
            plan.tip,
            version=_released_as(store, plan.version),
            refs=refs,
        )

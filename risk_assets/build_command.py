"""``risk build``: check, prepare, build every missing region through Dagster, release; with a progress bar.

It first decides, from the commit log and Dagster's records alone, whether anything is to be
done: with every region committed for its current parameters, inputs and code and the version
released, it launches no run, makes no commit and loads nothing heavier than Icechunk and Dagster's
instance (regions committed but unknown to Dagster are recorded as runless materializations, as
the reconciliation sensor records them). Otherwise it checks the parameters, overrides and inputs
(headers, first and last blocks, values) and the store's location (a folder that can hold the
repository, or a repository of this grid) once: anything wrong stops the build within seconds
with one message (a :class:`~risk_model.errors.BadInputError`), before the repository is written
or any run is launched. For a new version it then observes the parameters, overrides and inputs
and commits the template (one Dagster run); it runs every region missing from the version's
branch, a group of neighbouring regions per Dagster run (each region committed on its own;
``RISK_REGIONS_PER_RUN``), a few runs at a time, and finally releases the complete version
(pyramid, tag, manifest, promotion of ``main``: one Dagster run).
"""

import argparse
import fcntl
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from risk_assets.build_noop import describe_plan, nothing_to_run, stamp_if_recorded
from risk_assets.build_plan import inputs_checked_on_branch, plan_build, record_committed
from risk_assets.build_workers import (
    QUIET_RUN_CONFIG,
    RegionOutcome,
    init_worker,
    interrupted,
    note_interrupt,
    region_groups,
    run_regions,
    stderr_to,
)
from risk_model.errors import BadInputError
from risk_model.versions import Target

if TYPE_CHECKING:
    import icechunk
    from tqdm import tqdm

    from resources.store import IcechunkStore
    from risk_assets.settings import Settings
    from risk_model.grid import RegionRegistry
    from risk_model.versions import RasterVersion


class BuildRunningError(BadInputError):
    """Another build of the same project holds its build lock: nothing to retry until it ends."""


class BuildStoppedError(BadInputError):
    """A region failed in a way every other region would too (:data:`STOP_THE_BUILD`): its reason."""


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during the region runs: no region was launched after it, the running ones were stopped.

    Its message says what was kept and what to do; the ``risk`` command prints it and exits 130.
    """


def configure_environment(home: Path, grid: str) -> None:
    """Point Dagster and the code location at the project folder before they are imported."""
    os.environ["RISK_HOME"] = str(home)
    os.environ["RISK_GRID"] = grid
    # The instance is the project folder's dagster.yaml with SQLite storage beside it, the
    # same one `dagster dev` shows when started from the project folder.
    os.environ.setdefault("DAGSTER_HOME", str(home))


def cmd_build(args: argparse.Namespace) -> int:
    """Build every missing region of the grid through Dagster."""
    home = Path(args.home).resolve()
    configure_environment(home, args.grid)
    started = time.perf_counter()
    from risk_assets.instance_check import check_instance_databases

    # A damaged database would fail deep in SQLAlchemy, naming no file: name it now.
    check_instance_databases(Path(os.environ["DAGSTER_HOME"]))

    from risk_assets.settings import settings_from_env
    from risk_model.grid import load_registry

    settings = settings_from_env()
    registry = load_registry(settings.grid)
    with _one_build_at_a_time(settings.var_dir / "build.lock"):
        return _build(args, settings, registry, started)


@contextmanager
def _one_build_at_a_time(lock_path: Path) -> Iterator[None]:
    """Hold the project's build lock for the whole build, or refuse to start.

    An exclusive ``flock``: the kernel releases it when the holder dies, however it dies, so a
    killed build never leaves the lock behind.

    Raises
    ------
    BuildRunningError
        If another build of this project holds it.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise BuildRunningError(
                f"another `risk build` of this project is running ({holder}): wait for it to finish "
                f"(it builds the same regions), or stop it and run again; lock: {lock_path}"
            ) from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield


def _build(args: argparse.Namespace, settings: "Settings", registry: "RegionRegistry", started: float) -> int:
    """:func:`cmd_build` under the build lock."""
    from resources.target import current_target
    from risk_assets.deployment import deployment_from_env
    from risk_assets.resource_wiring import deployed_resources
    from risk_model.errors import RiskError

    deployment = deployment_from_env()
    store, params, inputs = deployed_resources(settings, deployment)
    # First, from the commit log alone: with every region built and released there is nothing to
    # run, and nothing heavier than the commit log and Dagster's records is loaded.
    try:
        planned: Target | None = current_target(params, inputs, registry.ids)
    except RiskError:
        # Inputs not generated yet (the first local build), or parameters, overrides or inputs
        # that cannot be read: the full path generates the inputs, or says what is wrong.
        planned = None
    if planned is not None and nothing_to_run(settings, registry, store, planned, started):
        return 0

    from resources.template import check_store
    from risk_model.preflight import preflight
    from risk_model.synthetic import ensure_inputs
    from risk_model.synthetic_wind import ensure_hourly_cube

    if deployment.inputs is None:
        # The local default: the synthetic inputs and hourly wind cube, generated once (given
        # inputs are never touched).
        ensure_inputs(registry.grid, settings.inputs_dir, scenario=settings.scenario)
        ensure_hourly_cube(registry.grid, settings.inputs_dir)
    # Once, before the repository is written or any run launched: a bad input fails here, in
    # seconds, with one message, instead of in every region run minutes later. Inputs some region
    # of the version was committed from passed these checks in its run: not read again (a repair).
    # These are the parameters and inputs the definitions' resources are built from
    # (risk_assets.resource_wiring), checked before the code location and Dagster are loaded.
    check_inputs = not (planned is not None and inputs_checked_on_branch(store, planned))
    preflight(
        params.path, params.overrides_path, inputs.input_set(), registry.grid, registry.ids, check_inputs=check_inputs
    )
    # And the store: a location that cannot hold the repository, or a repository of another
    # grid, is refused here too, not in the prepare run.
    check_store(store, registry.grid)
    # Dagster and the code location are loaded only now: neither the decision above nor the
    # checks need them (Dagster alone is about a second to import).
    from dagster import DagsterInstance, execute_job, reconstructable

    from risk_assets.definitions import prepare_job
    from risk_assets.liveness import describe, liveness_tags, reap_dead_runs
    from risk_assets.runs import run_failure

    target = current_target(params, inputs, registry.ids)

    log_path = settings.var_dir / "logs" / "risk-build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Dagster's logs: {log_path}")
    with DagsterInstance.get() as instance:
        # A build killed outright left its runs STARTED, holding pool slots no one would free.
        dead = reap_dead_runs(instance)
        if dead:
            print(describe(dead))
        plan = plan_build(store, target, registry.ids, instance) if store.exists() else None
        if plan is None or not plan.started:
            # A new version (or a new store): observe the parameters, overrides and inputs and
            # commit the template first. A version whose branch exists has had both already:
            # its build key says its sources are byte for byte the ones observed then.
            with stderr_to(log_path):
                prepared = execute_job(
                    reconstructable(prepare_job),
                    instance=instance,
                    run_config=QUIET_RUN_CONFIG,
                    raise_on_error=False,
                    tags=liveness_tags(),
                )
            if not prepared.success:
                raise run_failure(prepared.all_events, "preparing the raster failed", prepared.run_id)
            plan = plan_build(store, target, registry.ids, instance)
        snapshots_before = _snapshots(store.repository())
        recorded = record_committed(instance, plan)
    version = plan.version
    todo = plan.missing
    print(describe_plan(registry, plan.version, len(todo)))
    if recorded:
        print(f"recorded {recorded} regions committed earlier in Dagster (no run: they are in the commit log)")
    outcomes: Counter[str] = Counter()
    failures: list[tuple[str, str]] = []
    was_interrupted = False
    stopped: list[str] = []
    per_run = deployment.regions_per_run_or_default
    # Imported here: the progress bar is for builds that run something (tqdm costs ~0.1-0.3 s to load).
    from tqdm import tqdm

    def tally(results: list[RegionOutcome], bar: "tqdm[Any]") -> None:
        for region_id, success, status, stop in results:
            kind = "written" if status == "written" else "skipped" if status == "skipped" else "failed"
            outcomes[kind] += 1
            if stop:
                stopped.append(status.removeprefix("failed: "))
            elif not success:
                failures.append((region_id, status))
            bar.update()
        bar.set_postfix(outcomes)

    if todo and len(todo) <= per_run:
        # A few regions (a repair): run them here, one group per run. This process has loaded
        # Dagster's definitions already; a worker process would load them again, which costs more
        # than computing a few demo regions.
        with (
            tqdm(total=len(todo), unit="region", desc="building", dynamic_ncols=True) as bar,
            stderr_to(log_path),
        ):
            # Ctrl-C between runs is noted, as in a worker; during a run Dagster stops the run.
            previous = signal.signal(signal.SIGINT, note_interrupt)
            try:
                for group in region_groups(registry.ids, todo, per_run):
                    tally(run_regions(group), bar)
                    if stopped or interrupted():
                        break
            finally:
                signal.signal(signal.SIGINT, previous)
            was_interrupted = interrupted()
    elif todo:
        # A group of regions per run: a run's own cost (its event log, its events) is paid once
        # per group. No more groups than needed to keep every worker busy.
        size = min(per_run, max(1, -(-len(todo) // args.workers)))
        groups = region_groups(registry.ids, todo, size)
        # spawn: icechunk can hang in a child forked from a process that has used it.
        context = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(
                max_workers=args.workers,
                mp_context=context,
                initializer=init_worker,
                initargs=(str(log_path),),
            ) as pool,
            tqdm(total=len(todo), unit="region", desc="building", dynamic_ncols=True) as bar,
        ):
            futures = [pool.submit(run_regions, group) for group in groups]
            collected: set[Future[list[RegionOutcome]]] = set()

            def collect(future: "Future[list[RegionOutcome]]") -> None:
                collected.add(future)
                tally(future.result(), bar)

            try:
                for future in as_completed(futures):
                    collect(future)
                    if stopped:
                        # Every other region would fail the same way: launch no more.
                        for pending in futures:
                            pending.cancel()
                        for running in as_completed([f for f in futures if not f.cancelled() and f not in collected]):
                            collect(running)
                        break
            except KeyboardInterrupt:
                # Ctrl-C: launch nothing more; the running regions got it too and Dagster stops them.
                was_interrupted = True
                for future in futures:
                    future.cancel()
                for future in as_completed([f for f in futures if not f.cancelled() and f not in collected]):
                    collect(future)

    released = "" if failures or was_interrupted or stopped else _release(store, version, log_path)
    commits_made = len(_snapshots(store.repository()) - snapshots_before)
    elapsed = time.perf_counter() - started
    print(
        f"built {outcomes['written']} regions, skipped {outcomes['skipped'] + len(registry) - len(todo)}, "
        f"failed {outcomes['failed']}; commits made: {commits_made}; "
        f"wall time {elapsed:.1f} s; store: {store.location()}"
    )
    if stopped:
        raise BuildStoppedError(stopped[0])
    if was_interrupted:
        finished = outcomes["written"] + outcomes["skipped"]
        raise BuildInterrupted(
            f"interrupted (Ctrl-C) after {finished} of {len(todo)} regions: every region committed so far is "
            "kept, and nothing half-written (a region commits whole or not at all); run `risk build` again "
            "to build the rest"
        )
    for region_id, status in failures:
        print(f"  {region_id}: {status}", file=sys.stderr)
    if released:
        print(released)
    if released and not released.startswith("release failed"):
        stamp_if_recorded(settings, registry, store, target)
    return 1 if failures or released.startswith("release failed") else 0


def _snapshots(repo: "icechunk.Repository") -> set[str]:
    """Snapshots reachable from any branch: those new after a build are what it added, whichever
    branch it committed to (a count would go down when a reset branch drops some)."""
    seen: set[str] = set()
    for branch in repo.list_branches():
        for info in repo.ancestry(branch=branch):
            if info.id in seen:
                break
            seen.add(info.id)
    return seen


def _release(store: "IcechunkStore", version: "RasterVersion", log_path: Path) -> str:
    """Release the complete version through Dagster (unless ``main`` already holds it)."""
    from dagster import DagsterInstance, execute_job, reconstructable

    from resources.release import is_released
    from risk_assets.definitions import release_job
    from risk_assets.liveness import liveness_tags
    from risk_assets.runs import failure_reasons

    if is_released(store.repository(), store.branch, version):
        return f"{store.branch} already holds version {version.id}: nothing to release"
    with DagsterInstance.get() as instance, stderr_to(log_path):
        result = execute_job(
            reconstructable(release_job),
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
            tags={"risk/launched_by": "risk build", **liveness_tags()},
        )
    if not result.success:
        reasons = failure_reasons(result.all_events)
        return "release failed: " + (reasons[-1] if reasons else f"see run {result.run_id}")
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        if "tag" in meta:
            return f"released {meta['tag'].value}: {store.branch} now holds version {version.id}"
    return f"released version {version.id}"

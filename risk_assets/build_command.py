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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from risk_model.errors import BadInputError
from risk_model.versions import Target

if TYPE_CHECKING:
    import icechunk
    from dagster import DagsterInstance
    from tqdm import tqdm

    from resources.ledger import CommitRecord
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


QUIET_RUN_CONFIG: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def configure_environment(home: Path, grid: str) -> None:
    """Point Dagster and the code location at the project folder before they are imported."""
    os.environ["RISK_HOME"] = str(home)
    os.environ["RISK_GRID"] = grid
    # The instance is the project folder's dagster.yaml with SQLite storage beside it, the
    # same one `dagster dev` shows when started from the project folder.
    os.environ.setdefault("DAGSTER_HOME", str(home))


def _send_stderr_to(log_path: str) -> None:
    """Send this process's stderr (and its children's) to ``log_path``.

    Dagster's step processes log to stderr before any run config applies; in the log file
    those lines stay available without scrolling the progress bar away.
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


#: Set in a region worker when Ctrl-C reached it outside a region run (see :func:`_init_worker`).
_interrupted = False


def _note_interrupt(signum: int, frame: object) -> None:
    """SIGINT handler of a region worker between runs: remember it, start no further region."""
    global _interrupted
    _interrupted = True


def _init_worker(log_path: str) -> None:
    """Set up a region worker process: stderr to the log, and Ctrl-C noted rather than fatal.

    Ctrl-C reaches the build's whole process group. A worker between region runs only notes it
    (dying, it would break the pool while the build cancels what is left) and starts no region
    after it, including one already queued to it. A worker inside a region run has Dagster's
    handler meanwhile (Dagster replaces it for the run), which stops the run and records it as
    failed; a region commits whole or not at all.
    """
    _send_stderr_to(log_path)
    signal.signal(signal.SIGINT, _note_interrupt)


@contextmanager
def _stderr_to(log_path: Path) -> Iterator[None]:
    """Within the block, stderr goes to ``log_path``; restored afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        _send_stderr_to(str(log_path))
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


#: Failures after which every other region would fail the same way: the build stops launching regions.
STOP_THE_BUILD = frozenset({"StoreFullError"})


#: What one region came to in a build: its id, success, status (``written``, ``skipped``, ``not
#: started: ...`` or ``failed: <reason>``) and whether the failure is one of :data:`STOP_THE_BUILD`.
RegionOutcome = tuple[str, bool, str, bool]


def _run_regions(region_ids: list[str]) -> list[RegionOutcome]:
    """Run the region job for a group of partitions (in a worker process): one run, one commit per region.

    ``region_ids`` is a contiguous range of the registry (a Dagster partition range), or one region.

    Returns
    -------
    list
        One :data:`RegionOutcome` per region, in order. A failed run fails every region of it that
        recorded no materialization (regions it committed before failing stay committed; the next
        build records them without running them again).
    """
    global _interrupted
    from dagster import DagsterInstance, execute_job, reconstructable

    from risk_assets.definitions import region_job
    from risk_assets.liveness import liveness_tags
    from risk_assets.runs import failure_classes, failure_reasons

    if _interrupted:
        return [(rid, False, "not started: the build was interrupted (Ctrl-C)", False) for rid in region_ids]
    if len(region_ids) == 1:
        partition_tags = {"dagster/partition": region_ids[0]}
    else:
        partition_tags = {
            "dagster/asset_partition_range_start": region_ids[0],
            "dagster/asset_partition_range_end": region_ids[-1],
        }
    with DagsterInstance.get() as instance:
        result = execute_job(
            reconstructable(region_job),
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
            tags={**partition_tags, "risk/launched_by": "risk build", **liveness_tags()},
        )
        statuses: dict[str, str] = {}
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            if materialization.partition is not None and "status" in materialization.metadata:
                statuses[materialization.partition] = str(materialization.metadata["status"].value)
        if result.success:
            return [(rid, True, statuses.get(rid, "failed"), False) for rid in region_ids]
        reasons = failure_reasons(result.all_events)
        failed = "failed: " + (reasons[-1] if reasons else f"see run {result.run_id}")
        classes = failure_classes(result.all_events)
        stop = bool(classes & STOP_THE_BUILD)
        if "DagsterExecutionInterruptedError" in classes:
            # Ctrl-C reached the run (Dagster stopped it, and swallowed the signal): no further group.
            _interrupted = True
        return [
            (rid, True, statuses[rid], False) if rid in statuses else (rid, False, failed, stop) for rid in region_ids
        ]


def region_groups(ordered: list[str], todo: list[str], size: int) -> list[list[str]]:
    """``todo`` cut into runs of at most ``size`` regions, each a contiguous range of ``ordered``.

    A Dagster run of several partitions takes a range of the partitions' order, so regions that
    are not to run never sit between two of a group: a region already built is never run again
    because its neighbours were missing.
    """
    wanted = set(todo)
    groups: list[list[str]] = []
    current: list[str] = []
    for region_id in ordered:
        if region_id in wanted and len(current) < size:
            current.append(region_id)
            continue
        if current:
            groups.append(current)
        current = [region_id] if region_id in wanted else []
    if current:
        groups.append(current)
    return groups


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


@dataclass(frozen=True)
class BuildPlan:
    """What a build has to do, read from the commit log and Dagster's records before any run."""

    version: "RasterVersion"
    #: the version's branch if its first region has started it, else the readers' branch
    branch: str
    #: whether the version's branch exists (its sources were observed and its template committed)
    started: bool
    #: regions not committed on ``branch`` for their current build key, in registry order
    missing: list[str]
    #: regions committed for their current build key that Dagster has no materialization of
    unrecorded: dict[str, "CommitRecord"]
    #: whether the readers' branch holds the version, released
    released: bool

    @property
    def nothing_to_run(self) -> bool:
        """Every region committed for its key and the version released: no run, no commit."""
        return not self.missing and self.released


def plan_build(
    store: "IcechunkStore", target: "Target", region_ids: list[str], instance: "DagsterInstance"
) -> BuildPlan:
    """Decide from the commit log (and Dagster's records) what a build of ``target`` has to run.

    Reads the version branch's commit log once (down to its newest ledger table), the release
    tags and Dagster's materialized partitions of the raster; launches nothing, writes nothing.
    """
    from resources.branches import branch_exists, is_released, working_branch
    from resources.ledger import committed_regions
    from risk_assets.keys import RASTER_KEY

    version = target.version
    keys = target.keys(region_ids)
    repo = store.repository()
    branch = working_branch(repo, store, version)
    committed = committed_regions(repo, branch)
    current = {rid: committed[rid] for rid in region_ids if rid in committed and committed[rid].key == keys[rid]}
    recorded = instance.get_materialized_partitions(RASTER_KEY)
    return BuildPlan(
        version=version,
        branch=branch,
        started=branch_exists(repo, version.branch),
        missing=[rid for rid in region_ids if rid not in current],
        unrecorded={rid: record for rid, record in current.items() if rid not in recorded},
        released=is_released(repo, store.branch, version),
    )


def record_committed(instance: "DagsterInstance", plan: BuildPlan) -> int:
    """Record in Dagster, without a run, the regions committed for their key that it has no record of.

    The same runless materialization the reconciliation sensor reports: Dagster then shows every
    committed region as materialized, with the commit's snapshot id. Returns how many were recorded.
    """
    from risk_assets.keys import RASTER_KEY
    from risk_assets.reconcile import CommitEntry, reconciled_materialization

    for region, record in plan.unrecorded.items():
        instance.report_runless_asset_event(
            reconciled_materialization(RASTER_KEY, region, CommitEntry.of(record), plan.branch, by="risk build")
        )
    return len(plan.unrecorded)


def _describe(registry: "RegionRegistry", plan: BuildPlan, todo: int) -> str:
    version = plan.version
    return (
        f"grid {registry.grid.name}: {len(registry)} regions, {len(registry) - todo} done, "
        f"{todo} to run for version {version.id} (params {version.params_version}, overrides "
        f"{version.overrides_version}, inputs {version.inputs_version}, code {version.code_version})"
    )


def _nothing_to_run(registry: "RegionRegistry", store: "IcechunkStore", target: "Target", started: float) -> bool:
    """The no-op rerun: if the commit log says every region is built and released, say so and record any
    region Dagster lacks, without a run, the inputs check, Dagster's definitions or a commit.

    Returns ``False`` (decide nothing) when that cannot be told cheaply: no repository yet, say.
    """
    from dagster import DagsterInstance

    from risk_model.errors import RiskError

    with DagsterInstance.get() as instance:
        try:
            plan = plan_build(store, target, registry.ids, instance)
        except RiskError:
            return False  # no repository, or one that cannot be read: the full build says why
        if not plan.nothing_to_run:
            return False
        recorded = record_committed(instance, plan)
    print(_describe(registry, plan, 0))
    if recorded:
        print(f"recorded {recorded} regions committed earlier in Dagster (no run: they are in the commit log)")
    print(
        f"built 0 regions, skipped {len(registry)}, failed 0; commits made: 0; "
        f"wall time {time.perf_counter() - started:.1f} s; store: {store.location()}"
    )
    print(f"{store.branch} already holds version {plan.version.id}: nothing to release")
    return True


def _build(args: argparse.Namespace, settings: "Settings", registry: "RegionRegistry", started: float) -> int:
    """:func:`cmd_build` under the build lock."""
    from dagster import DagsterInstance, execute_job, reconstructable

    from resources.target import current_target
    from risk_assets.deployment import deployment_from_env
    from risk_assets.resource_wiring import model_resources, store_resource
    from risk_model.errors import RiskError

    deployment = deployment_from_env()
    store = store_resource(settings, deployment.store)
    params, inputs = model_resources(settings, deployment.inputs)
    # First, from the commit log alone: with every region built and released there is nothing to
    # run, and nothing heavier than the commit log and Dagster's records is loaded.
    try:
        planned: Target | None = current_target(params, inputs, registry.ids)
    except RiskError:
        # Inputs not generated yet (the first local build), or parameters, overrides or inputs
        # that cannot be read: the full path generates the inputs, or says what is wrong.
        planned = None
    if planned is not None and _nothing_to_run(registry, store, planned, started):
        return 0

    from resources.template import check_store
    from risk_assets.liveness import describe, liveness_tags, reap_dead_runs
    from risk_assets.runs import run_failure
    from risk_model.synthetic import ensure_inputs
    from risk_model.synthetic_wind import ensure_hourly_cube

    if deployment.inputs is None:
        # The local default: the synthetic inputs and hourly wind cube, generated once (given
        # inputs are never touched).
        ensure_inputs(registry.grid, settings.inputs_dir)
        ensure_hourly_cube(registry.grid, settings.inputs_dir)
    from risk_assets.definitions import preflight_configured, prepare_job

    # Once, before the repository is opened or any run launched: a bad input fails here, in
    # seconds, with one message, instead of in every region run minutes later.
    preflight_configured(registry)
    # And the store: a location that cannot hold the repository, or a repository of another
    # grid, is refused here too, not in the prepare run.
    check_store(store, registry.grid)
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
            with _stderr_to(log_path):
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
    print(_describe(registry, plan, len(todo)))
    if recorded:
        print(f"recorded {recorded} regions committed earlier in Dagster (no run: they are in the commit log)")
    outcomes: Counter[str] = Counter()
    failures: list[tuple[str, str]] = []
    interrupted = False
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
            _stderr_to(log_path),
        ):
            # Ctrl-C between runs is noted, as in a worker; during a run Dagster stops the run.
            previous = signal.signal(signal.SIGINT, _note_interrupt)
            try:
                for group in region_groups(registry.ids, todo, per_run):
                    tally(_run_regions(group), bar)
                    if stopped or _interrupted:
                        break
            finally:
                signal.signal(signal.SIGINT, previous)
            interrupted = _interrupted
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
                initializer=_init_worker,
                initargs=(str(log_path),),
            ) as pool,
            tqdm(total=len(todo), unit="region", desc="building", dynamic_ncols=True) as bar,
        ):
            futures = [pool.submit(_run_regions, group) for group in groups]
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
                interrupted = True
                for future in futures:
                    future.cancel()
                for future in as_completed([f for f in futures if not f.cancelled() and f not in collected]):
                    collect(future)

    released = "" if failures or interrupted or stopped else _release(store, version, log_path)
    commits_made = len(_snapshots(store.repository()) - snapshots_before)
    elapsed = time.perf_counter() - started
    print(
        f"built {outcomes['written']} regions, skipped {outcomes['skipped'] + len(registry) - len(todo)}, "
        f"failed {outcomes['failed']}; commits made: {commits_made}; "
        f"wall time {elapsed:.1f} s; store: {store.location()}"
    )
    if stopped:
        raise BuildStoppedError(stopped[0])
    if interrupted:
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
    with DagsterInstance.get() as instance, _stderr_to(log_path):
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

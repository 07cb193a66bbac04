"""The ``risk`` command: build and release the raster through Dagster, show lineage, list regions.

``risk build`` is the main job of the local default. It prepares the inputs, observes the
parameters, overrides and inputs and commits the template (one Dagster run), then runs every
region that is missing from the current version's branch — not committed for its current
parameters, inputs and code, or not recorded by Dagster — as one Dagster run per region (the
region's step in its own process), a few at a time, and finally releases the complete
version (pyramid, tag, manifest, promotion of ``main``: one Dagster run). Run again, it runs
nothing and makes no commit.
"""

import argparse
import multiprocessing
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    import icechunk

    from resources.store import IcechunkStore
    from risk_assets.grid import RegionRegistry
    from risk_assets.versions import RasterVersion, Target

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _configure_environment(home: Path, grid: str) -> None:
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


def _run_region(region_id: str) -> tuple[str, bool, str]:
    """Run the region job for one partition (in a worker process) and report its status."""
    from dagster import DagsterInstance, execute_job, reconstructable

    from risk_assets.definitions import region_job
    from risk_assets.runs import failure_reasons

    with DagsterInstance.get() as instance:
        result = execute_job(
            reconstructable(region_job),
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
            tags={"dagster/partition": region_id, "risk/launched_by": "risk build"},
        )
        status = "failed"
        for event in result.get_asset_materialization_events():
            meta = event.materialization.metadata
            if "status" in meta:
                status = str(meta["status"].value)
        if not result.success:
            reasons = failure_reasons(result.all_events)
            status = "failed: " + (reasons[-1] if reasons else f"see run {result.run_id}")
        return region_id, result.success, status


def cmd_build(args: argparse.Namespace) -> int:
    """Build every missing region of the grid through Dagster."""
    home = Path(args.home).resolve()
    _configure_environment(home, args.grid)
    started = time.perf_counter()

    from dagster import AssetKey, DagsterInstance, execute_job, reconstructable

    from resources.ledger import committed_regions
    from risk_assets.definitions import configured_store, configured_target, prepare_job
    from risk_assets.grid import load_registry
    from risk_assets.sensors import working_branch
    from risk_assets.settings import settings_from_env
    from risk_assets.synthetic import ensure_inputs

    settings = settings_from_env()
    registry = load_registry(settings.grid)
    ensure_inputs(registry.grid, settings.inputs_dir)
    store = configured_store()

    log_path = settings.var_dir / "logs" / "risk-build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Dagster's logs: {log_path}")
    with DagsterInstance.get() as instance:
        with _stderr_to(log_path):
            prepared = execute_job(
                reconstructable(prepare_job), instance=instance, run_config=QUIET_RUN_CONFIG, raise_on_error=False
            )
        if not prepared.success:
            messages = [e.message for e in prepared.all_events if e.is_failure and e.message]
            print(
                f"preparing the raster failed: {messages[-1] if messages else prepared.run_id}",
                file=sys.stderr,
            )
            return 1
        target = configured_target(registry.ids)
        version = target.version
        keys = target.keys(registry.ids)
        repo = store.repository()
        branch = working_branch(repo, store, version)
        commits_before = _commit_count(repo)
        committed = committed_regions(repo, branch)
        recorded = instance.get_materialized_partitions(AssetKey("risk_raster"))

    def is_done(region_id: str) -> bool:
        record = committed.get(region_id)
        return record is not None and record.key == keys[region_id] and region_id in recorded

    todo = [rid for rid in registry.ids if not is_done(rid)]
    print(
        f"grid {registry.grid.name}: {len(registry)} regions, {len(registry) - len(todo)} done, "
        f"{len(todo)} to run for version {version.id} (params {version.params_version}, overrides "
        f"{version.overrides_version}, inputs {version.inputs_version}, code {version.code_version})"
    )
    outcomes: Counter[str] = Counter()
    failures: list[tuple[str, str]] = []
    if todo:
        # spawn: icechunk can hang in a child forked from a process that has used it.
        context = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(
                max_workers=args.workers,
                mp_context=context,
                initializer=_send_stderr_to,
                initargs=(str(log_path),),
            ) as pool,
            tqdm(total=len(todo), unit="region", desc="building", dynamic_ncols=True) as bar,
        ):
            futures = [pool.submit(_run_region, rid) for rid in todo]
            for future in as_completed(futures):
                region_id, success, status = future.result()
                outcomes["written" if status == "written" else "skipped" if status == "skipped" else "failed"] += 1
                if not success:
                    failures.append((region_id, status))
                bar.set_postfix(outcomes)
                bar.update()

    released = "" if failures else _release(store, version, log_path)
    repo = store.repository()
    commits_after = _commit_count(repo)
    elapsed = time.perf_counter() - started
    print(
        f"built {outcomes['written']} regions, skipped {outcomes['skipped'] + len(registry) - len(todo)}, "
        f"failed {outcomes['failed']}; commits made: {commits_after - commits_before}; "
        f"wall time {elapsed:.1f} s; store: {store.location()}"
    )
    for region_id, status in failures:
        print(f"  {region_id}: {status}", file=sys.stderr)
    if released:
        print(released)
    return 1 if failures or released.startswith("release failed") else 0


def _commit_count(repo: "icechunk.Repository") -> int:
    """Snapshots reachable from any branch: what a build added, whichever branch it committed to."""
    seen: set[str] = set()
    for branch in repo.list_branches():
        for info in repo.ancestry(branch=branch):
            if info.id in seen:
                break
            seen.add(info.id)
    return len(seen)


def _release(store: "IcechunkStore", version: "RasterVersion", log_path: Path) -> str:
    """Release the complete version through Dagster (unless ``main`` already holds it)."""
    from dagster import DagsterInstance, execute_job, reconstructable

    from resources.release import is_released
    from risk_assets.definitions import release_job
    from risk_assets.runs import failure_reasons

    if is_released(store.repository(), store.branch, version):
        return f"{store.branch} already holds version {version.id}: nothing to release"
    with DagsterInstance.get() as instance, _stderr_to(log_path):
        result = execute_job(
            reconstructable(release_job),
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
            tags={"risk/launched_by": "risk build"},
        )
    if not result.success:
        reasons = failure_reasons(result.all_events)
        return "release failed: " + (reasons[-1] if reasons else f"see run {result.run_id}")
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        if "tag" in meta:
            return f"released {meta['tag'].value}: {store.branch} now holds version {version.id}"
    return f"released version {version.id}"


def cmd_inputs(args: argparse.Namespace) -> int:
    """Generate the deterministic synthetic inputs of a grid."""
    from risk_assets.grid import load_grid
    from risk_assets.settings import Settings
    from risk_assets.synthetic import ensure_inputs

    settings = Settings(home=Path(args.home).resolve(), grid=args.grid)
    inputs = ensure_inputs(load_grid(args.grid), settings.inputs_dir, force=args.force)
    print(inputs.model_dump_json(indent=2))
    return 0


def cmd_regions(args: argparse.Namespace) -> int:
    """Compute (and optionally write) the list of regions that hold data."""
    from risk_assets.grid import load_grid, load_registry
    from risk_assets.region_list import compute_region_ids, write_region_list
    from risk_assets.settings import Settings
    from risk_assets.synthetic import ensure_inputs

    if args.list:
        for region_id in load_registry(args.grid).ids:
            print(region_id)
        return 0
    grid = load_grid(args.grid)
    settings = Settings(home=Path(args.home).resolve(), grid=args.grid)
    inputs = ensure_inputs(grid, settings.inputs_dir)
    ids = compute_region_ids(grid, inputs)
    print(f"{len(ids)} of {grid.chunk_counts[0] * grid.chunk_counts[1]} regions of {grid.name} hold data")
    if args.write:
        path = write_region_list(args.grid, ids, source=f"risk regions --grid {args.grid} --write")
        print(f"wrote {path}")
    return 0


def _missing_regions(args: argparse.Namespace) -> tuple["RegionRegistry", "IcechunkStore", "Target", str, list[str]]:
    """The grid's registry, the configured store, the current target, its working branch and the
    regions missing from that branch's commit log for their current build keys."""
    _configure_environment(Path(args.home).resolve(), args.grid)
    from risk_assets.backfill import missing_from_commit_log
    from risk_assets.definitions import configured_store, configured_target
    from risk_assets.grid import load_registry
    from risk_assets.sensors import working_branch
    from risk_assets.settings import settings_from_env

    registry = load_registry(settings_from_env().grid)
    store = configured_store()
    target = configured_target(registry.ids)
    repo = store.repository()
    branch = working_branch(repo, store, target.version)
    missing = missing_from_commit_log(registry.ids, repo, branch, target.keys(registry.ids))
    return registry, store, target, branch, missing


def cmd_status(args: argparse.Namespace) -> int:
    """Show how far the current version is built, and what readers of ``main`` see."""
    registry, store, target, branch, missing = _missing_regions(args)
    from resources.release import is_released, latest_release

    version = target.version
    repo = store.repository()
    main_tip = repo.lookup_branch(store.branch)
    print(
        f"store {store.location()}\n"
        f"current version {version.id} (params {version.params_version}, overrides {version.overrides_version}, "
        f"inputs {version.inputs_version}, code {version.code_version}) on branch {branch}: "
        f"{len(registry) - len(missing)} of {len(registry)} regions committed"
    )
    held = "holds this version" if is_released(repo, store.branch, version) else "does not hold this version yet"
    print(f"{store.branch} ({main_tip}) {held}")
    print(f"latest release: {latest_release(repo) or 'none'}")
    if missing:
        print("missing: " + " ".join(missing))
    return 0


def cmd_backfill_missing(args: argparse.Namespace) -> int:
    """Launch one Dagster backfill of exactly the regions missing from the commit log."""
    registry, store, _, _, missing = _missing_regions(args)
    from risk_assets.backfill import BackfillError, launch_backfill, wait_for_backfill

    print(f"{len(missing)} of {len(registry)} regions are missing from the commit log of {store.location()}")
    if args.limit is not None and len(missing) > args.limit:
        # Large backfills can go in slices; the rest stay missing for the next call.
        missing = missing[: args.limit]
        print(f"backfilling the first {len(missing)} of them (--limit)")
    if not missing:
        return 0
    try:
        backfill_id = launch_backfill(
            args.url, missing, ["risk_raster"], title=f"{len(missing)} regions missing from the commit log"
        )
        print(f"launched backfill {backfill_id}: {args.url.rstrip('/')}/overview/backfills/{backfill_id}")
        if args.no_wait:
            return 0
        progress = wait_for_backfill(args.url, backfill_id, timeout_s=args.timeout)
    except BackfillError as err:
        print(str(err), file=sys.stderr)
        return 1
    print(
        f"backfill {backfill_id}: {progress.status}, {progress.materialized} materialized, "
        f"{progress.failed} failed of {progress.targeted}"
    )
    return 0 if progress.finished and progress.failed == 0 else 1


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print what produced a release, or one point of it."""
    import json

    _configure_environment(Path(args.home).resolve(), args.grid)
    from resources.release import lineage
    from risk_assets.definitions import configured_store
    from risk_assets.grid import UnknownRegionError, load_registry
    from risk_assets.settings import settings_from_env

    if (args.lon is None) != (args.lat is None):
        print("give both --lon and --lat, or neither", file=sys.stderr)
        return 2
    point = (args.lon, args.lat) if args.lon is not None else None
    try:
        info = lineage(configured_store(), load_registry(settings_from_env().grid), args.tag, point)
    except (LookupError, UnknownRegionError) as err:
        print(str(err).strip("'\""), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    version = info["raster_version"]
    print(f"release {info['tag']}  snapshot {info['snapshot_id']}  released {info['released_at']}")
    print(
        f"  version {version['raster_version']}: params {info['params_version']}, overrides "
        f"{info['overrides_version']}, inputs {version['inputs_version']}, code {info['code']['code_version']} "
        f"(git {info['code']['git_revision']})"
    )
    for name, entry in sorted(info["inputs"].items()):
        print(f"  input {name}: {entry['version']}  {entry['location']}")
    print("  checks: " + ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in sorted(info["checks"].items())))
    if "region" in info:
        region = info["region"]
        print(f"  point ({args.lon}, {args.lat}) is in region {region['id']} (bounds {region['bounds']})")
        if region.get("snapshot_id"):
            print(
                f"    commit {region['snapshot_id']} by run {region['run_id']} at {region['committed_at']}; "
                f"params {region['params_version']}, inputs {region['inputs_version']}, code {region['code_version']}"
            )
        if region["override"]:
            print(f"    override: {region['override']}")
    else:
        print(f"  {len(info['regions'])} regions from {len(info['runs'])} runs")
        for region_id, entry in info["regions"].items():
            print(
                f"    {region_id}: commit {entry['snapshot_id']} run {entry['run_id']} params {entry['params_version']}"
            )
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    """Run the maintenance job (ledger checkpoint, expiry, GC) through Dagster, in this process."""
    _configure_environment(Path(args.home).resolve(), args.grid)
    from dagster import DagsterInstance

    from risk_assets.definitions import defs
    from risk_assets.maintenance_job import MAINTENANCE_JOB
    from risk_assets.runs import failure_reasons

    config = {"expire_older_than_days": args.days, "garbage_collect": not args.no_gc, "dry_run": args.dry_run}
    with DagsterInstance.get() as instance:
        # Through the instance, so the job sees the region and release runs it must not race.
        result = defs.resolve_job_def(MAINTENANCE_JOB).execute_in_process(
            instance=instance,
            run_config={"ops": {"maintain_store": {"config": config}}, **QUIET_RUN_CONFIG},
            raise_on_error=False,
        )
    if not result.success:
        reasons = failure_reasons(result.all_events)
        print("maintenance refused or failed: " + (reasons[-1] if reasons else result.run_id), file=sys.stderr)
        return 1
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    print(
        f"{'dry run: ' if args.dry_run else ''}{metadata['snapshots_expired'].value} snapshots expired, "
        f"{metadata['checkpoints'].value} ledger checkpoints, {metadata['gc_bytes_deleted'].value} bytes and "
        f"{metadata['gc_chunks_deleted'].value} chunks collected; ledger regions: "
        f"{metadata['ledger_regions_after'].value}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``risk`` command."""
    parser = argparse.ArgumentParser(prog="risk", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", default=os.environ.get("RISK_HOME", "."), help="project folder (default: .)")
    parser.add_argument("--grid", default=os.environ.get("RISK_GRID", "demo"), help="grid name (default: demo)")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build every missing region through Dagster")
    build.add_argument("--workers", type=int, default=2, help="regions run at once (default: 2)")
    build.set_defaults(func=cmd_build)
    inputs = sub.add_parser("inputs", help="generate the synthetic input rasters")
    inputs.add_argument("--force", action="store_true", help="regenerate even if present")
    inputs.set_defaults(func=cmd_inputs)
    regions = sub.add_parser("regions", help="compute or list the regions that hold data")
    regions.add_argument("--write", action="store_true", help="write the list into risk_assets/data/regions")
    regions.add_argument("--list", action="store_true", help="print the checked-in list")
    regions.set_defaults(func=cmd_regions)
    backfill = sub.add_parser(
        "backfill-missing", help="backfill, through the Dagster daemon, the regions missing from the commit log"
    )
    backfill.add_argument("--url", default="http://127.0.0.1:3000", help="Dagster webserver URL")
    backfill.add_argument("--no-wait", action="store_true", help="launch and return without following progress")
    backfill.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow progress")
    backfill.add_argument("--limit", type=int, default=None, help="backfill at most this many regions (registry order)")
    backfill.set_defaults(func=cmd_backfill_missing)
    status = sub.add_parser("status", help="how far the current version is built; what main holds")
    status.set_defaults(func=cmd_status)
    lineage = sub.add_parser("lineage", help="what produced a release, or one point of it")
    lineage.add_argument("tag", nargs="?", default=None, help="release tag (default: the newest release)")
    lineage.add_argument("--lon", type=float, default=None, help="longitude of a point (degrees)")
    lineage.add_argument("--lat", type=float, default=None, help="latitude of a point (degrees)")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    lineage.set_defaults(func=cmd_lineage)
    maintain = sub.add_parser("maintain", help="expire old snapshots and collect garbage, keeping the ledger")
    maintain.add_argument("--days", type=float, default=7.0, help="expire snapshots older than this (default: 7)")
    maintain.add_argument("--no-gc", action="store_true", help="expire only; collect no garbage")
    maintain.add_argument("--dry-run", action="store_true", help="change nothing; report what would be done")
    maintain.set_defaults(func=cmd_maintain)
    args = parser.parse_args(argv)
    from dagster import BetaWarning

    # Dagster flags observable source assets as beta on every load; that is not news to a user.
    warnings.filterwarnings("ignore", category=BetaWarning)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

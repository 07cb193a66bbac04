"""The ``risk`` command: build and release the raster through Dagster, show lineage, list regions.

``risk build`` is the main job of the local default (see :mod:`risk_assets.build_command`). It
decides from the commit log first: with nothing missing it launches no run and makes no commit.
Otherwise it checks the inputs, observes them and commits the template for a new version (one
Dagster run), runs every region missing from the current version's branch — not committed for
its current parameters, inputs and code — in groups of neighbouring regions per Dagster run, a
few at a time, and finally releases the complete version (pyramid, tag, manifest, promotion of
``main``: one Dagster run).

Errors are reported as one line, ``error: <message>`` on stderr, with exit code 1 (2 for usage
errors): the project's errors (:class:`~risk_model.errors.RiskError`, failed Dagster runs
included) say what is wrong and what to do, and a traceback would bury that. ``--debug``
shows the traceback instead.
"""

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from risk_assets.build_command import cmd_build, configure_environment
from risk_assets.build_workers import QUIET_RUN_CONFIG
from risk_model.errors import RiskError

if TYPE_CHECKING:
    from resources.store import IcechunkStore
    from risk_model.grid import RegionRegistry
    from risk_model.versions import Target


def cmd_inputs(args: argparse.Namespace) -> int:
    """Generate the deterministic synthetic inputs of a grid."""
    from risk_assets.settings import Settings
    from risk_model.grid import load_grid
    from risk_model.synthetic import ensure_inputs
    from risk_model.synthetic_wind import ensure_hourly_cube, local_hourly_input_set

    settings = Settings(home=Path(args.home).resolve(), grid=args.grid, scenario=args.scenario)
    grid = load_grid(args.grid)
    ensure_inputs(grid, settings.inputs_dir, force=args.force, scenario=settings.scenario)
    ensure_hourly_cube(grid, settings.inputs_dir, force=args.force)
    print(local_hourly_input_set(settings.inputs_dir).model_dump_json(indent=2))
    return 0


def cmd_regions(args: argparse.Namespace) -> int:
    """Compute (and optionally write) the list of regions that hold data."""
    from risk_assets.settings import Settings
    from risk_model.grid import load_grid, load_registry
    from risk_model.region_list import compute_region_ids, is_reference_list, write_region_list
    from risk_model.synthetic import ensure_inputs

    if args.list:
        for region_id in load_registry(args.grid).ids:
            print(region_id)
        return 0
    if args.write and is_reference_list(args.grid):
        print(f"the region list of {args.grid} is the reference project's list: not overwriting it", file=sys.stderr)
        return 2
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
    configure_environment(Path(args.home).resolve(), args.grid)
    from resources.branches import working_branch
    from resources.target import current_target
    from risk_assets.backfill import missing_from_commit_log
    from risk_assets.resource_wiring import deployed_resources
    from risk_assets.settings import settings_from_env
    from risk_model.grid import load_registry

    settings = settings_from_env()
    registry = load_registry(settings.grid)
    store, params, inputs = deployed_resources(settings)
    target = current_target(params, inputs, registry.ids)
    repo = store.repository()
    branch = working_branch(repo, store, target.version)
    missing = missing_from_commit_log(registry.ids, repo, branch, target.keys(registry.ids))
    return registry, store, target, branch, missing


def cmd_status(args: argparse.Namespace) -> int:
    """Show how far the current version is built, and what readers of ``main`` see."""
    registry, store, target, branch, missing = _missing_regions(args)
    from resources.branches import branch_exists
    from resources.release import is_released, latest_release

    version = target.version
    repo = store.repository()
    main_tip = repo.lookup_branch(store.branch) if branch_exists(repo, store.branch) else "not started"
    print(
        f"store {store.location()}\n"
        f"current version {version.id} (params {version.params_version}, overrides {version.overrides_version}, "
        f"inputs {version.inputs_version}, code {version.code_version}) on branch {branch}: "
        f"{len(registry) - len(missing)} of {len(registry)} regions committed"
    )
    held = "holds this version" if is_released(repo, store.branch, version) else "does not hold this version yet"
    print(f"{store.branch} ({main_tip}) {held}")
    print(f"latest release: {latest_release(repo, store.branch) or 'none'}")
    if missing:
        print("missing: " + " ".join(missing))
    return 0


def cmd_backfill_missing(args: argparse.Namespace) -> int:
    """Launch one Dagster backfill of exactly the regions missing from the commit log."""
    registry, store, _, _, missing = _missing_regions(args)
    from risk_assets.backfill import BackfillError, launch_backfill, wait_for_backfill
    from risk_assets.keys import RASTER_KEY

    print(f"{len(missing)} of {len(registry)} regions are missing from the commit log of {store.location()}")
    if args.limit is not None and len(missing) > args.limit:
        # Large backfills can go in slices; the rest stay missing for the next call.
        missing = missing[: args.limit]
        print(f"backfilling the first {len(missing)} of them (--limit)")
    if not missing:
        return 0
    try:
        backfill_id = launch_backfill(
            args.url,
            missing,
            [RASTER_KEY.to_user_string()],
            title=f"{len(missing)} regions missing from the commit log",
        )
        print(f"launched backfill {backfill_id}: {args.url.rstrip('/')}/overview/backfills/{backfill_id}")
        if args.no_wait:
            return 0
        progress = wait_for_backfill(args.url, backfill_id, timeout_s=args.timeout)
    except BackfillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"backfill {backfill_id}: {progress.status}, {progress.materialized} materialized, "
        f"{progress.failed} failed of {progress.targeted}"
    )
    return 0 if progress.finished and progress.failed == 0 else 1


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print what produced a release, or one point of it."""
    import json

    configure_environment(Path(args.home).resolve(), args.grid)
    from resources.lineage import lineage
    from risk_assets.resource_wiring import deployed_resources
    from risk_assets.settings import settings_from_env
    from risk_model.grid import load_registry

    if (args.lon is None) != (args.lat is None):
        print("error: give both --lon and --lat, or neither", file=sys.stderr)
        return 2
    point = (args.lon, args.lat) if args.lon is not None else None
    if point is not None and args.region is not None:
        print("error: give --region or --lon and --lat, not both", file=sys.stderr)
        return 2
    try:
        settings = settings_from_env()
        registry = load_registry(settings.grid)
        store, _, _ = deployed_resources(settings)
        info = lineage(store, registry, args.tag, point, args.region)
    except (RiskError, LookupError) as err:
        print(f"error: {str(err).strip(chr(39) + chr(34))}", file=sys.stderr)
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
        where = f"point ({args.lon}, {args.lat}) is in region" if point is not None else "region"
        print(f"  {where} {region['id']} (bounds {region['bounds']})")
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


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two releases (two scenarios, say): the change in risk, as numbers and a picture."""
    configure_environment(Path(args.home).resolve(), args.grid)
    from resources.compare import compare_releases
    from risk_assets.resource_wiring import deployed_resources
    from risk_assets.settings import settings_from_env

    store, _, _ = deployed_resources(settings_from_env())
    comparison = compare_releases(store, args.old, args.new)
    out = Path(args.out)
    out.write_bytes(comparison.picture)
    stats = comparison.stats
    print(f"{comparison.new} against {comparison.old} (pyramid level 1:{comparison.factor}):")
    print(
        f"  risk: mean change {stats.mean_change:+.4g}, mean |change| {stats.mean_abs_change:.4g}, "
        f"largest rise {stats.max_increase:.4g}, largest fall {stats.max_decrease:.4g}"
    )
    print(
        f"  {stats.share_changed:.1%} of {stats.pixels_compared} pixels changed, "
        f"{stats.share_score_changed:.1%} changed score class"
    )
    print(f"  picture: {out.resolve()}")
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    """Run the maintenance job (ledger checkpoint, expiry, GC) through Dagster, in this process."""
    configure_environment(Path(args.home).resolve(), args.grid)
    from dagster import DagsterInstance

    from risk_assets.definitions import defs
    from risk_assets.instance_check import check_instance_databases
    from risk_assets.maintenance_job import MAINTENANCE_JOB
    from risk_assets.runs import run_failure

    check_instance_databases(Path(os.environ["DAGSTER_HOME"]))
    config = {"expire_older_than_days": args.days, "garbage_collect": not args.no_gc, "dry_run": args.dry_run}
    with DagsterInstance.get() as instance:
        # Through the instance, so the job sees the region and release runs it must not race.
        result = defs.resolve_job_def(MAINTENANCE_JOB).execute_in_process(
            instance=instance,
            run_config={"ops": {"maintain_store": {"config": config}}, **QUIET_RUN_CONFIG},
            raise_on_error=False,
        )
    if not result.success:
        raise run_failure(result.all_events, "maintenance refused or failed", result.run_id)
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
    parser.add_argument(
        "--scenario",
        default=os.environ.get("RISK_SCENARIO") or None,
        help="the scenario (input set) to build or read, released on main-<scenario> (default: none, on main)",
    )
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build every missing region through Dagster")
    build.add_argument("--workers", type=int, default=2, help="regions run at once (default: 2)")
    build.set_defaults(func=cmd_build)
    inputs = sub.add_parser("inputs", help="generate the synthetic input rasters and hourly wind cube")
    inputs.add_argument("--force", action="store_true", help="regenerate even if present")
    inputs.set_defaults(func=cmd_inputs)
    regions = sub.add_parser("regions", help="compute or list the regions that hold data")
    regions.add_argument("--write", action="store_true", help="write the list into risk_model/data/regions")
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
    lineage.add_argument("--region", default=None, help="a region id (y{row}_x{col}): report only that region")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    lineage.set_defaults(func=cmd_lineage)
    compare = sub.add_parser("compare", help="compare two releases or scenarios: the change in risk")
    compare.add_argument("old", help="a release tag, or a scenario (its newest release; 'main': the default)")
    compare.add_argument("new", help="a release tag, or a scenario")
    compare.add_argument("--out", default="compare.png", help="where to write the change picture")
    compare.set_defaults(func=cmd_compare)
    maintain = sub.add_parser("maintain", help="expire old snapshots and collect garbage, keeping the ledger")
    maintain.add_argument("--days", type=float, default=7.0, help="expire snapshots older than this (default: 7)")
    maintain.add_argument("--no-gc", action="store_true", help="expire only; collect no garbage")
    maintain.add_argument("--dry-run", action="store_true", help="change nothing; report what would be done")
    maintain.set_defaults(func=cmd_maintain)
    args = parser.parse_args(argv)
    if args.scenario is not None:
        from risk_model.versions import ScenarioNameError, check_scenario

        try:
            check_scenario(args.scenario)
        except ScenarioNameError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        # The code location, the build's runs and `dagster dev` read it from the environment.
        os.environ["RISK_SCENARIO"] = args.scenario
    # Dagster flags observable source assets as beta on every load; that is not news to a user.
    # By message, not by Dagster's BetaWarning class: a rerun with nothing to do never imports
    # Dagster (risk_assets.record_stamp), and importing it for a warning filter costs 1-3 s.
    warnings.filterwarnings("ignore", message=r".* is currently in beta")
    try:
        result: int = args.func(args)
    except KeyboardInterrupt as err:
        # Ctrl-C: what was committed stays committed (each commit is whole); say so, not where it hit.
        if args.debug:
            raise
        reason = str(err) or "interrupted (Ctrl-C): what was committed is kept; run the same command again to finish"
        print(f"error: {reason}", file=sys.stderr)
        return 130
    except Exception as err:
        message = _user_message(err)
        if args.debug or message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    return result


def _user_message(err: Exception) -> str | None:
    """What to tell the user about ``err``: its message for the project's errors and Dagster's
    ``Failure`` (without Dagster's prefix), the damaged file for a database error of the local
    Dagster instance, a sentence for an unreachable Dagster database; ``None`` for anything else
    (a bug: keep its traceback)."""
    if isinstance(err, RiskError):
        return str(err)
    # Imported only for other errors: a refused bad input is told without loading Dagster.
    from dagster import Failure
    from sqlalchemy.exc import DatabaseError

    from risk_assets.instance_check import damaged_databases, damaged_message
    from risk_assets.runs import database_error_message, user_reason

    if isinstance(err, Failure):
        return user_reason(err.description or str(err))
    if isinstance(err, DatabaseError) and os.environ.get("DAGSTER_HOME"):
        # Damaged after the check before the command, or a run's own event log: find which file.
        damaged = damaged_databases(Path(os.environ["DAGSTER_HOME"]), every_run=True)
        if damaged:
            return damaged_message(damaged)
    # Dagster's database went away outside a run (creating one, reading its events): not a bug.
    return database_error_message(err)


if __name__ == "__main__":
    sys.exit(main())

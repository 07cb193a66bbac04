"""Versions become releases: completeness, the pyramid commit, tag, manifest and promotion.

A raster version is built on its branch ``build-<version>`` (see :mod:`risk_model.versions`).
When every region's newest commit there carries the region's current build key and every
region's chunks exist, the version is complete, and:

1. :func:`commit_pyramid` writes the web map's multiscale pyramid into the branch, from the
   complete snapshot, in one commit whose metadata carries the ledger table (every region's
   newest commit): the released snapshot records its own lineage, and that record survives
   ``expire_snapshots``.
2. :func:`release` writes the manifest and pictures next to the repository, tags the
   snapshot (``release-<UTC time>-<version>``: Icechunk never lets a deleted tag name be
   reused, so names are never recycled) and only then moves ``main`` to it with one
   conditional ``reset_branch``. Readers of ``main`` see the previous version until that
   moment, and the new one entirely after it.

A crash between steps is safe to rerun: a pyramid already committed for the version is kept,
a tag already pointing at the snapshot is reused, and ``main`` is moved only if it has not
moved since it was read.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import icechunk

# Whether a version is released is read by `risk build` before it loads anything heavy: it
# lives with the branches (light to import) and is re-exported here.
from resources.branches import ensure_branch, release_tag
from resources.branches import is_released as is_released
from resources.branches import latest_release as latest_release
from resources.branches import release_tags as release_tags
from resources.completeness import IncompleteVersionError, incomplete_message, version_status
from resources.ledger import LEDGER_KEY, CommitRecord, ledger_table
from resources.pyramid_store import coarsest_level, open_level, pyramid_matches, update_pyramid, write_pyramid
from resources.store import IcechunkStore
from risk_model.errors import CommitConflictError
from risk_model.grid import Region, RegionRegistry, parse_region_id, region_of_chunk
from risk_model.pyramid import PyramidLevel, PyramidLevelNotFoundError
from risk_model.schema import VARIABLES
from risk_model.versions import RasterVersion, Target, scenario_of

if TYPE_CHECKING:
    from risk_model.diff_picture import DiffStats

PYRAMID_KIND = "pyramid"
#: Commit metadata key of a pyramid commit saying how it was made (``None``: written whole).
PYRAMID_UPDATE_KEY = "pyramid_update"
MANIFEST = "manifest.json"
OVERVIEW = "overview.png"
DIFF = "diff.png"


class PromotionConflictError(CommitConflictError):
    """``main`` moved while the release was being made: nothing was promoted."""


@dataclass(frozen=True)
class PyramidCommit:
    """The pyramid of a version, committed on its branch."""

    snapshot_id: str
    levels: list[PyramidLevel]
    created: bool


def _is_pyramid_of(info: icechunk.SnapshotInfo, version: RasterVersion) -> bool:
    meta = info.metadata or {}
    return meta.get("kind") == PYRAMID_KIND and meta.get("raster_version") == version.id


def commit_pyramid(store: IcechunkStore, registry: RegionRegistry, target: Target, run_id: str) -> PyramidCommit:
    """Write the pyramid of a complete version into its branch and commit it with the ledger table.

    Idempotent: if the branch tip is already this version's pyramid commit, nothing is written.

    Raises
    ------
    IncompleteVersionError
        If any region is missing, stale or without chunks (nothing is written).
    """
    status = version_status(store, registry, target)
    if not status.complete:
        raise IncompleteVersionError(incomplete_message(status))
    repo = store.repository()
    if status.tip is None:
        # Complete before its first region ran (it changes no region's data): start its branch
        # so it gets its own pyramid commit, tag and manifest like any version.
        ensure_branch(repo, status.branch, store.branch)
        status = version_status(store, registry, target)
    assert status.tip is not None
    tip_info = repo.lookup_snapshot(status.tip)
    if _is_pyramid_of(tip_info, status.version):
        return PyramidCommit(status.tip, _pyramid_levels(tip_info), created=False)
    base = _pyramid_base(repo, status.branch, store.branch)
    with store.writer_lease():
        session = repo.writable_session(status.branch)
        update = _pyramid_update(repo, session, registry, status.regions, base)
        if update is None:
            levels = write_pyramid(session, registry.grid)
        else:
            levels = update_pyramid(session, registry.grid, update.regions, source=update.source)
        metadata: dict[str, Any] = {
            "kind": PYRAMID_KIND,
            "run_id": run_id,
            "written_at": datetime.now(UTC).isoformat(),
            **status.version.as_metadata(),
            "levels": [level.as_metadata() for level in levels],
            # How the pyramid was made: whole, or the tiles of the regions changed since a base.
            PYRAMID_UPDATE_KEY: None if update is None else update.as_metadata(),
            LEDGER_KEY: ledger_table(status.regions),
        }
        with store.commit_guard():
            # No rebase: the branch must still be exactly the complete snapshot the pyramid was
            # made from. A region committed meanwhile makes this fail, and the release waits.
            snapshot_id = session.commit(f"pyramid of version {status.version.id}", metadata=metadata)
    return PyramidCommit(snapshot_id, levels, created=True)


@dataclass(frozen=True)
class PyramidBase:
    """A pyramid commit the next pyramid can be updated from, and the region commits it was made from."""

    snapshot_id: str
    #: snapshot id of every region's commit the pyramid was made from (its ledger table)
    regions: dict[str, str]
    #: whether the branch's tip holds this pyramid (the commit is in its history): else it is copied
    in_branch: bool


def _pyramid_base(repo: icechunk.Repository, branch: str, readers_branch: str) -> PyramidBase | None:
    """The newest pyramid commit in ``branch``'s history, else the latest release of ``readers_branch``.

    History is walked down to the first commit with a ledger table, as the ledger itself is
    (a pyramid commit carries one): below a maintenance checkpoint history may be expired.
    """

    def base_of(info: icechunk.SnapshotInfo, in_branch: bool) -> PyramidBase | None:
        meta = info.metadata or {}
        table = meta.get(LEDGER_KEY)
        if meta.get("kind") != PYRAMID_KIND or not isinstance(table, dict):
            return None
        return PyramidBase(info.id, {region: str(entry[0]) for region, entry in table.items()}, in_branch)

    for info in repo.ancestry(branch=branch):
        if LEDGER_KEY in (info.metadata or {}):
            found = base_of(info, in_branch=True)
            if found is not None:
                return found
            break
    tag = latest_release(repo, readers_branch)
    return None if tag is None else base_of(repo.lookup_snapshot(repo.lookup_tag(tag)), in_branch=False)


@dataclass(frozen=True)
class PyramidUpdate:
    """What :func:`update_pyramid` is to do: rewrite ``regions``' tiles of the pyramid of ``base``.

    ``source`` is a read-only session of ``base`` when its levels are copied first (``base``
    is not in the branch's history), ``None`` when the session holds them already.
    """

    base: str
    regions: list[Region]
    source: icechunk.Session | None

    def as_metadata(self) -> dict[str, Any]:
        return {"base": self.base, "copied": self.source is not None, "regions": [r.id for r in self.regions]}


def _pyramid_update(
    repo: icechunk.Repository,
    session: icechunk.Session,
    registry: RegionRegistry,
    regions: dict[str, CommitRecord],
    base: PyramidBase | None,
) -> PyramidUpdate | None:
    """How to make the pyramid of the session's raster from ``base``, or ``None``: write it whole.

    The regions to rewrite are those whose newest commit is not the one ``base`` was made
    from: a region's raster changes only through a commit of its own.
    """
    if base is None:
        return None
    grid = registry.grid
    ids = sorted(set(regions) | set(base.regions))
    changed = [r for r in ids if r not in regions or regions[r].snapshot_id != base.regions.get(r)]
    # Past a quarter of the regions, tile by tile costs about what the whole pyramid does (measured
    # on the demo grid: 0.2 s a region against 4 s in all; docs/benchmarks.md, issue 13).
    if len(changed) * 4 > len(registry):
        return None
    source = None if base.in_branch else repo.readonly_session(snapshot_id=base.snapshot_id)
    if not pyramid_matches(source or session, grid):
        return None  # another layout (factors, chunks) than write_pyramid's now: write it whole
    return PyramidUpdate(base.snapshot_id, [region_of_chunk(grid, *parse_region_id(r)) for r in changed], source)


@dataclass(frozen=True)
class Release:
    """What :func:`release` did."""

    tag: str
    snapshot_id: str
    version: RasterVersion
    manifest: dict[str, Any]
    files: dict[str, str]
    promoted: bool
    previous_tag: str | None
    diff: "DiffStats | None" = None
    overview: bytes = field(default=b"", repr=False)
    diff_picture: bytes | None = field(default=None, repr=False)


def _pyramid_levels(info: icechunk.SnapshotInfo) -> list[PyramidLevel]:
    return [PyramidLevel(**level) for level in (info.metadata or {}).get("levels", [])]


def release(
    store: IcechunkStore,
    registry: RegionRegistry,
    target: Target,
    *,
    run_id: str,
    git_revision: str,
    inputs: Mapping[str, str],
    extra_checks: Mapping[str, dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> Release:
    """Release the version of ``target``: manifest and pictures, tag, then promote ``main``.

    Parameters
    ----------
    store
        The repository.
    registry
        The grid's regions.
    target
        The parameters, overrides, inputs and code the version was built from.
    run_id
        The run making the release.
    git_revision
        The code's git commit.
    inputs
        Location of each input dataset, by name.
    extra_checks
        More check results to record (e.g. Dagster's records against the commit log); a
        failed one refuses the release.
    now
        Release time (for the tag name); the current time by default.

    Raises
    ------
    IncompleteVersionError
        If the version is incomplete, its pyramid is not committed, or a check failed.
    PromotionConflictError
        If ``main`` moved during the release.
    """
    # matplotlib only for releases: every region step imports this module, none draws
    from risk_model.diff_picture import diff_png
    from risk_model.pictures import overview_png

    status = version_status(store, registry, target)
    checks = {**status.checks(), **(extra_checks or {})}
    if not status.complete:
        raise IncompleteVersionError(incomplete_message(status))
    assert status.tip is not None
    repo = store.repository()
    tip_info = repo.lookup_snapshot(status.tip)
    if not _is_pyramid_of(tip_info, status.version):
        raise IncompleteVersionError(
            f"the tip of {status.branch} is not the pyramid of version {status.version.id}: materialize risk_pyramid"
        )
    main_before = repo.lookup_branch(store.branch)
    tags = release_tags(repo, store.branch)
    tag_tips = {t: repo.lookup_tag(t) for t in tags}
    existing = [t for t in tags if tag_tips[t] == status.tip]
    previous = [t for t in tags if tag_tips[t] != status.tip]
    previous_tag = previous[-1] if previous else None
    when = now or datetime.now(UTC)
    tag = existing[0] if existing else release_tag(store.branch, when, status.version)

    levels = _pyramid_levels(tip_info)
    coarsest, level = coarsest_level(repo.readonly_session(snapshot_id=status.tip))
    factor = coarsest.factor
    failing = sorted(set().union(*(set(r.get("regions_failing", [])) for r in checks.values())))
    failed = [name for name, result in checks.items() if not result.get("passed")]
    overview = overview_png(
        level,
        registry,
        factor,
        missing=status.chunks_missing,
        failed=failing,
        title=f"version {status.version.id}: checks failed" if failed else f"{tag} (version {status.version.id})",
    )
    if failed:
        # Nothing is tagged or promoted; the overview shows where the failing regions are.
        raise IncompleteVersionError(
            f"checks failed for version {status.version.id}: {', '.join(failed)} (regions: {', '.join(failing)}); "
            f"{store.branch} was not moved",
            overview=overview,
        )
    diff_stats: DiffStats | None = None
    diff_picture: bytes | None = None
    if previous_tag is not None:
        try:
            old = open_level(repo.readonly_session(snapshot_id=tag_tips[previous_tag]), factor)
        except PyramidLevelNotFoundError:
            old = None  # the previous release has no level of this factor: nothing to compare
        if old is not None and old.sizes == level.sizes:
            diff_picture, diff_stats = diff_png(level, old, title=f"risk change: {previous_tag} -> {tag}")

    manifest: dict[str, Any] = {
        "tag": tag,
        "snapshot_id": status.tip,
        "released_at": when.isoformat(),
        "released_by_run": run_id,
        "store": store.location(),
        "readers_branch": store.branch,
        "scenario": scenario_of(store.branch),
        "grid": {"name": registry.grid.name, "fingerprint": registry.grid.fingerprint},
        "raster_version": status.version.as_metadata(),
        "params": {
            "version": status.version.params_version,
            "content": target.params.model_dump(mode="json"),
            "overrides_version": status.version.overrides_version,
            "overrides": target.overrides.model_dump(mode="json"),
        },
        "inputs": {
            name: {"location": inputs.get(name, ""), "version": version}
            for name, version in sorted(target.input_versions.items())
        },
        "inputs_version": status.version.inputs_version,
        "code": {"code_version": status.version.code_version, "git_revision": git_revision},
        "variables": [v.name for v in VARIABLES],
        "pyramid": [level_.as_metadata() for level_ in levels],
        "regions": {
            region: region_lineage(record) for region, record in sorted(status.regions.items()) if region in registry
        },
        "checks": checks,
        "previous_release": previous_tag,
        "previous_main": main_before,
        "diff": diff_stats.as_metadata() if diff_stats is not None else None,
    }
    # Files first, then the tag, then main: a crash leaves at worst unreferenced files, and a
    # rerun finds the tag on the snapshot and reuses its name.
    files = {
        MANIFEST: store.write_release_file(tag, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode()),
        OVERVIEW: store.write_release_file(tag, OVERVIEW, overview),
    }
    if diff_picture is not None:
        files[DIFF] = store.write_release_file(tag, DIFF, diff_picture)
    if not existing:
        repo.create_tag(tag, status.tip)
    promoted = False
    if main_before != status.tip:
        try:
            repo.reset_branch(store.branch, status.tip, from_snapshot_id=main_before)
        except icechunk.ConflictError as err:
            raise PromotionConflictError(
                f"{store.branch} moved while version {status.version.id} was being released; it was not "
                f"promoted (tag {tag} exists). Run the release again."
            ) from err
        promoted = True
    return Release(
        tag=tag,
        snapshot_id=status.tip,
        version=status.version,
        manifest=manifest,
        files=files,
        promoted=promoted,
        previous_tag=previous_tag,
        diff=diff_stats,
        overview=overview,
        diff_picture=diff_picture,
    )


def read_manifest(store: IcechunkStore, tag: str) -> dict[str, Any]:
    """The manifest of release ``tag``."""
    payload: dict[str, Any] = json.loads(store.read_release_file(tag, MANIFEST))
    return payload


def region_lineage(record: CommitRecord) -> dict[str, Any]:
    return {
        "snapshot_id": record.snapshot_id,
        "run_id": record.run_id,
        "params_version": record.params_version,
        "inputs_version": record.inputs_version,
        "code_version": record.code_version,
        "committed_at": record.written_at.isoformat(),
    }

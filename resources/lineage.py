"""What produced a release, or one point of it: parameters, inputs, code and every region's commit."""

from typing import Any

from resources.branches import all_release_tags
from resources.ledger import committed_regions
from resources.release import read_manifest, region_lineage, release_tags
from resources.store import IcechunkStore
from risk_model.grid import RegionRegistry


def lineage(
    store: IcechunkStore,
    registry: RegionRegistry,
    tag: str | None = None,
    point: tuple[float, float] | None = None,
    region_id: str | None = None,
) -> dict[str, Any]:
    """What produced release ``tag`` (the newest by default), or one point or region of it.

    Region commits are read from the commit log of the tagged snapshot; parameter content and
    input locations from the release manifest.

    Parameters
    ----------
    store
        The repository.
    registry
        The grid's regions (to find the region of ``point``).
    tag
        A release tag; the newest release if ``None``.
    point
        ``(longitude, latitude)`` in degrees: report only the region holding it.
    region_id
        Report only this region (instead of ``point``).

    Raises
    ------
    LookupError
        If there is no such release (the message lists the releases).
    UnknownRegionError
        If ``point`` is outside the grid or in no region, or ``region_id`` is no region of the grid
        (checked before the repository is opened).
    """
    if point is not None and region_id is not None:
        raise ValueError("give a point or a region id, not both")
    wanted = registry.region_at(*point) if point is not None else None
    if region_id is not None:
        wanted = registry.get(region_id)
    repo = store.repository()
    tags = release_tags(repo, store.branch)
    if tag is None:
        if not tags:
            raise LookupError(
                f"{store.location()} has no release on {store.branch!r} yet: run `risk build` or the release_raster job"
            )
        tag = tags[-1]
    elif tag not in all_release_tags(repo):
        known = ", ".join(tags[-5:]) or "none"
        raise LookupError(f"no release {tag!r} in {store.location()}; the newest releases are: {known}")
    snapshot_id = repo.lookup_tag(tag)
    regions = committed_regions(repo, snapshot_id=snapshot_id)
    manifest = read_manifest(store, tag)
    info: dict[str, Any] = {
        "tag": tag,
        "snapshot_id": snapshot_id,
        "released_at": manifest["released_at"],
        "raster_version": manifest["raster_version"],
        "params_version": manifest["params"]["version"],
        "overrides_version": manifest["params"]["overrides_version"],
        "inputs": manifest["inputs"],
        "code": manifest["code"],
        "checks": {name: result["passed"] for name, result in manifest["checks"].items()},
    }
    if wanted is None:
        info["params"] = manifest["params"]["content"]
        info["overrides"] = manifest["params"]["overrides"]
        info["regions"] = {region: region_lineage(record) for region, record in sorted(regions.items())}
        info["runs"] = sorted({record.run_id for record in regions.values()})
        return info
    region = wanted
    record = regions.get(region.id)
    overrides = manifest["params"]["overrides"]
    override = dict(overrides.get("regions", overrides).get(region.id, {})) if isinstance(overrides, dict) else {}
    if point is not None:
        info["point"] = {"longitude": point[0], "latitude": point[1]}
    info["region"] = {
        "id": region.id,
        "bounds": list(region.bounds),
        **(region_lineage(record) if record is not None else {"commit": None}),
        "params": {**manifest["params"]["content"], **override},
        "override": override,
    }
    return info

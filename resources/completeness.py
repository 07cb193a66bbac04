"""Whether a raster version is complete: every region committed for its current key, with its chunks."""

from dataclasses import dataclass
from typing import Any

from resources.branches import branch_exists
from resources.ledger import CommitRecord, committed_regions, regions_with_chunks
from resources.store import IcechunkStore
from risk_model.errors import BadInputError
from risk_model.grid import RegionRegistry
from risk_model.versions import RasterVersion, Target


class IncompleteVersionError(BadInputError):
    """The version cannot be released: regions are missing, stale or without chunks, or a check failed.

    Attributes
    ----------
    overview
        When the pyramid exists but a check failed: the overview map with the failing regions
        marked (PNG), for the failure's metadata.
    """

    def __init__(self, message: str, overview: bytes | None = None) -> None:
        super().__init__(message)
        self.overview = overview


@dataclass(frozen=True)
class VersionStatus:
    """How far one raster version is built on its branch.

    Attributes
    ----------
    version
        The raster version.
    branch
        Its branch (it may not exist yet).
    tip
        The branch tip, or ``None`` before the first region started the branch.
    regions
        The newest commit of every region on the branch (on the readers' branch before the
        version's branch starts).
    not_built
        Regions whose newest commit is not for their current build key (or who have none).
    chunks_missing
        Regions some of whose variables have no chunk in the tip's snapshot.
    """

    version: RasterVersion
    branch: str
    tip: str | None
    regions: dict[str, CommitRecord]
    not_built: list[str]
    chunks_missing: list[str]

    @property
    def complete(self) -> bool:
        """Every region built for its key and present in the store (on the readers' branch if
        the version's branch has not started: a version that changes no region's data)."""
        return not self.not_built and not self.chunks_missing

    def checks(self) -> dict[str, dict[str, Any]]:
        """Check results for the manifest and metadata."""
        return {
            "ledger_complete": {
                "passed": not self.not_built,
                "description": "every region's newest commit on the branch carries its current build key",
                "regions_failing": self.not_built,
            },
            "chunks_in_store": {
                "passed": not self.chunks_missing,
                "description": "every region's chunks exist in the snapshot, read from the store",
                "regions_failing": self.chunks_missing,
            },
        }


def version_status(store: IcechunkStore, registry: RegionRegistry, target: Target) -> VersionStatus:
    """Read how complete ``target``'s version is on its branch (ledger and chunks)."""
    version = target.version
    repo = store.repository()
    started = branch_exists(repo, version.branch)
    # Before its first region, the version's branch would start from the readers' branch:
    # what is already built for the version is what that branch holds.
    read_from = repo.lookup_branch(version.branch if started else store.branch)
    regions = committed_regions(repo, snapshot_id=read_from)
    keys = target.keys(registry.ids)
    not_built = [r for r in registry.ids if r not in regions or regions[r].key != keys[r]]
    chunks = regions_with_chunks(repo, snapshot_id=read_from)
    missing = [r.id for r in registry if any(f"{r.iy}/{r.ix}" not in keys_ for keys_ in chunks.values())]
    return VersionStatus(version, version.branch, read_from if started else None, regions, not_built, missing)


def incomplete_message(status: VersionStatus) -> str:
    def some(ids: list[str]) -> str:
        return ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")

    parts = []
    if status.not_built:
        parts.append(f"{len(status.not_built)} regions not built for their current key ({some(status.not_built)})")
    if status.chunks_missing:
        parts.append(f"{len(status.chunks_missing)} regions without chunks ({some(status.chunks_missing)})")
    return (
        f"version {status.version.id} on {status.branch} is incomplete: {'; '.join(parts)}. "
        "Backfill the missing partitions of risk_raster (or `risk backfill-missing`), then release again."
    )

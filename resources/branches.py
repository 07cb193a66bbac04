"""Branches of the repository: each raster version is built on its own, started from ``main``."""

import contextlib

import icechunk

from resources.store import IcechunkStore
from risk_model.versions import RasterVersion

#: Release tags are named ``release-<UTC time>-<raster version>``.
RELEASE_TAG_PREFIX = "release-"


def branch_exists(repo: icechunk.Repository, branch: str) -> bool:
    """Whether ``branch`` exists."""
    return branch in repo.list_branches()


def ensure_branch(repo: icechunk.Repository, branch: str, start: str = "main") -> str:
    """Create ``branch`` at the tip of ``start`` unless it exists; return its tip.

    Safe when several workers race to create it: the losers find it created.
    """
    if not branch_exists(repo, branch):
        # Another worker may create it first: same starting point, same branch.
        with contextlib.suppress(icechunk.AlreadyExistsError):
            repo.create_branch(branch, repo.lookup_branch(start))
    return repo.lookup_branch(branch)


def working_branch(repo: icechunk.Repository, store: IcechunkStore, version: RasterVersion) -> str:
    """The branch of ``version`` if its first region has started it, else the readers' branch.

    Until then the version's branch would start from the readers' branch anyway, so its
    commit log is that branch's.
    """
    return version.branch if branch_exists(repo, version.branch) else store.branch


def is_released(repo: icechunk.Repository, readers_branch: str, version: RasterVersion) -> bool:
    """Whether ``readers_branch`` holds ``version`` as released (tagged, and at its branch's tip)."""
    if not branch_exists(repo, version.branch):
        return False
    tagged = any(t.endswith(f"-{version.id}") for t in release_tags(repo))
    return tagged and repo.lookup_branch(readers_branch) == repo.lookup_branch(version.branch)


def release_tags(repo: icechunk.Repository) -> list[str]:
    """Release tags, oldest first (names start with the UTC time of the release)."""
    return sorted(t for t in repo.list_tags() if t.startswith(RELEASE_TAG_PREFIX))


def latest_release(repo: icechunk.Repository) -> str | None:
    """The newest release tag, or ``None``."""
    tags = release_tags(repo)
    return tags[-1] if tags else None

"""Branches of the repository: each raster version is built on its own, started from ``main``."""

import contextlib
import re
from datetime import datetime

import icechunk

from resources.store import IcechunkStore
from risk_model.versions import MAIN, RasterVersion

#: Release tags are named ``release-<UTC time>-<raster version>`` (a scenario's: see :func:`release_tag_prefix`).
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
    commit log is that branch's. A scenario's readers' branch not made yet reads as ``main``
    (see :func:`resources.template.ensure_readers_branch`): main's regions are another
    scenario's, built for other inputs, so none of them counts for this version's build keys.
    """
    return version.branch if branch_exists(repo, version.branch) else made_or_main(repo, store.branch)


def made_or_main(repo: icechunk.Repository, branch: str) -> str:
    """``branch``, or ``main`` for a scenario's readers' branch not made yet (it will start there)."""
    return branch if branch == MAIN or branch_exists(repo, branch) else MAIN


def is_released(repo: icechunk.Repository, readers_branch: str, version: RasterVersion) -> bool:
    """Whether ``readers_branch`` holds ``version`` as released (tagged, and at its branch's tip)."""
    if not (branch_exists(repo, version.branch) and branch_exists(repo, readers_branch)):
        return False
    tagged = any(t.endswith(f"-{version.id}") for t in release_tags(repo, readers_branch))
    return tagged and repo.lookup_branch(readers_branch) == repo.lookup_branch(version.branch)


def release_tag_prefix(readers_branch: str = MAIN) -> str:
    """How the release tags of ``readers_branch`` begin.

    ``release-`` for ``main``; ``release-<scenario>-`` for a scenario's ``main-<scenario>``
    (any other readers' branch: ``release-<branch>-``). A scenario name cannot hold the
    upper-case ``T`` and ``Z`` of the release time, so one readers' branch's tags never read
    as another's.
    """
    if readers_branch == MAIN:
        return RELEASE_TAG_PREFIX
    scope = readers_branch.removeprefix(f"{MAIN}-")
    return f"{RELEASE_TAG_PREFIX}{scope}-"


def release_tag(readers_branch: str, when: datetime, version: RasterVersion) -> str:
    """The tag of a release of ``version`` to ``readers_branch`` made at ``when`` (UTC)."""
    return f"{release_tag_prefix(readers_branch)}{when:%Y%m%dT%H%M%SZ}-{version.id}"


def release_tags(repo: icechunk.Repository, readers_branch: str = MAIN) -> list[str]:
    """The release tags of ``readers_branch``, oldest first (after the prefix, names start with the UTC time)."""
    pattern = re.compile(rf"^{re.escape(release_tag_prefix(readers_branch))}\d{{8}}T\d{{6}}Z-[0-9a-f]+$")
    return sorted(t for t in repo.list_tags() if pattern.match(t))


def all_release_tags(repo: icechunk.Repository) -> list[str]:
    """The release tags of every readers' branch (every scenario), sorted by name."""
    pattern = re.compile(rf"^{re.escape(RELEASE_TAG_PREFIX)}([a-z0-9_]+-)?\d{{8}}T\d{{6}}Z-[0-9a-f]+$")
    return sorted(t for t in repo.list_tags() if pattern.match(t))


def latest_release(repo: icechunk.Repository, readers_branch: str = MAIN) -> str | None:
    """The newest release tag of ``readers_branch``, or ``None``."""
    tags = release_tags(repo, readers_branch)
    return tags[-1] if tags else None

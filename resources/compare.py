"""Two releases side by side: the change in risk between them, as numbers and a picture.

Typically two scenarios (the 2011 and the 2047 climate), each released on its own readers'
branch of one repository; as well any two releases of one scenario.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from resources.branches import all_release_tags, latest_release
from resources.pyramid_store import coarsest_level, open_level
from resources.store import IcechunkStore
from risk_model.errors import BadInputError
from risk_model.pyramid import PyramidLevelNotFoundError
from risk_model.versions import MAIN, readers_branch

if TYPE_CHECKING:
    from risk_model.diff_picture import DiffStats


class ReleaseNotFoundError(BadInputError, LookupError):
    """A name that is neither a release tag nor a scenario with a release."""


@dataclass(frozen=True)
class Comparison:
    """``new`` minus ``old`` on the coarsest pyramid level both releases have."""

    old: str
    new: str
    factor: int
    stats: "DiffStats"
    picture: bytes


def resolve_release(store: IcechunkStore, name: str) -> str:
    """The release tag ``name`` stands for: a release tag itself, or a scenario's newest release.

    A scenario is named as for ``RISK_SCENARIO`` (``2047``); ``main`` is the default scenario.

    Raises
    ------
    ReleaseNotFoundError
        If ``name`` is no release tag, and no scenario of that name has a release.
    """
    repo = store.repository()
    if name in all_release_tags(repo):
        return name
    try:
        branch = MAIN if name == MAIN else readers_branch(name)
    except ValueError as err:
        raise ReleaseNotFoundError(f"{name!r} is neither a release tag nor a scenario name: {err}") from err
    tag = latest_release(repo, branch)
    if tag is None:
        known = ", ".join(all_release_tags(repo)[-5:]) or "none"
        raise ReleaseNotFoundError(
            f"no release named {name!r}, and scenario {name!r} has no release yet in {store.location()}: build and "
            f"release it (RISK_SCENARIO={name} risk build); the newest releases are: {known}"
        )
    return tag


def compare_releases(store: IcechunkStore, old: str, new: str) -> Comparison:
    """Compare two releases (tags or scenario names, see :func:`resolve_release`): ``new`` minus ``old``.

    Raises
    ------
    ReleaseNotFoundError
        If either name resolves to no release.
    PyramidLevelNotFoundError
        If the two releases share no pyramid level (grids of other shapes).
    """
    # matplotlib only when comparing: every region step imports the store modules, none draws
    from risk_model.diff_picture import diff_png

    old_tag, new_tag = resolve_release(store, old), resolve_release(store, new)
    repo = store.repository()
    coarsest, new_level = coarsest_level(repo.readonly_session(tag=new_tag))
    old_level = open_level(repo.readonly_session(tag=old_tag), coarsest.factor)
    if old_level.sizes != new_level.sizes:
        raise PyramidLevelNotFoundError(
            f"{old_tag} and {new_tag} have pyramid levels of other sizes at factor {coarsest.factor}: they are "
            "rasters of different grids and cannot be compared pixel by pixel"
        )
    picture, stats = diff_png(new_level, old_level, title=f"risk change: {old_tag} -> {new_tag}")
    return Comparison(old=old_tag, new=new_tag, factor=coarsest.factor, stats=stats, picture=picture)

"""The raster template: a full-size, metadata-only dataset committed once before any region."""

import contextlib
from typing import Any

import icechunk
import zarr

from resources.branches import branch_exists, made_or_main
from resources.ledger import REGION_MARKS
from resources.store import IcechunkStore
from risk_model.errors import BadInputError
from risk_model.grid import GridSpec
from risk_model.schema import encoding, template_dataset
from risk_model.versions import MAIN

TEMPLATE_KIND = "template"


class TemplateMissingError(BadInputError):
    """The branch holds no template (or a template of another grid)."""


def template_attrs(repo: icechunk.Repository, branch: str) -> dict[str, Any] | None:
    """The root attributes of the template on ``branch``, or ``None`` if it has no template.

    Read from the branch tip (one small read), not by walking the history. A scenario's readers'
    branch that is not made yet reads as ``main``, where it will start (:func:`ensure_readers_branch`).
    """
    session = repo.readonly_session(branch=made_or_main(repo, branch))
    try:
        group = zarr.open_group(session.store, mode="r")
    except FileNotFoundError:
        return None
    attrs = dict(group.attrs)
    return attrs if attrs.get("kind") == TEMPLATE_KIND else None


def check_store(store: IcechunkStore, grid: GridSpec) -> None:
    """Refuse a store that cannot take ``grid``'s raster, before anything is written or any run launched.

    The location must be able to hold a repository (:meth:`IcechunkStore.check_location`), and a
    repository already there must hold no template or the template of ``grid``.

    Raises
    ------
    StoreLocationError
        If the location is a file, holds something else, or is not writable.
    TemplateMissingError
        If the repository holds the template of another grid.
    StoreError
        If the repository cannot be reached or opened.
    """
    store.check_location()
    if store.exists():
        _existing_template(store, store.repository(), grid)


def ensure_template(store: IcechunkStore, grid: GridSpec, attrs: dict[str, str]) -> tuple[str, bool]:
    """Create the repository if needed and commit the metadata-only template once.

    Idempotent: if the branch already holds the template of ``grid``, nothing is written.

    Returns
    -------
    tuple[str, bool]
        The snapshot id holding the template and whether this call committed it.

    Raises
    ------
    TemplateMissingError
        If the branch holds a template of another grid.
    """
    repo = store.repository(create=True)
    ensure_readers_branch(repo, store.branch)
    existing = _existing_template(store, repo, grid)
    if existing is not None:
        return existing, False
    session = repo.writable_session(store.branch)
    root_attrs = {"kind": TEMPLATE_KIND, "grid": grid.name, "grid_fingerprint": grid.fingerprint, **attrs}
    ds = template_dataset(grid, root_attrs)
    # compute=False: metadata and coordinates only; no chunk of data is written.
    ds.to_zarr(session.store, compute=False, encoding=encoding(grid), mode="w-", consolidated=False)
    # Made here, once, so that the first writers of different regions do not all create it.
    zarr.open_group(session.store, mode="r+").create_group(REGION_MARKS)
    try:
        with store.commit_guard():
            snapshot_id = session.commit(
                f"template of grid {grid.name}",
                metadata={
                    "kind": TEMPLATE_KIND,
                    "grid": grid.name,
                    "grid_fingerprint": grid.fingerprint,
                    **attrs,
                },
                rebase_with=icechunk.ConflictDetector(),
                rebase_tries=store.rebase_tries,
            )
    except icechunk.ConflictError:
        # Another build committed a template first: use it if it is of this grid.
        winner = _existing_template(store, repo, grid)
        if winner is None:
            raise
        return winner, False
    return snapshot_id, True


def ensure_readers_branch(repo: icechunk.Repository, readers_branch: str) -> None:
    """Make a scenario's readers' branch if it does not exist: at ``main``'s template commit.

    Not at ``main``'s tip: that holds another scenario's released raster, which readers of the
    new branch would see under this scenario's name until its first release. From the template
    commit the branch holds the template and no region (its first build commits every region:
    its inputs, so its build keys, differ). On a repository without a template yet, the branch
    starts at ``main``'s first snapshot and gets its own template commit.
    """
    if readers_branch == MAIN or branch_exists(repo, readers_branch):
        return
    start = None
    root = None
    for info in repo.ancestry(branch=MAIN):
        root = info.id
        if (info.metadata or {}).get("kind") == TEMPLATE_KIND:
            start = info.id
    start = start or root
    assert start is not None, "a branch has at least its first snapshot"
    # Two builds of one scenario may race here: the loser finds the branch made.
    with contextlib.suppress(icechunk.AlreadyExistsError):
        repo.create_branch(readers_branch, start)


def _existing_template(store: IcechunkStore, repo: icechunk.Repository, grid: GridSpec) -> str | None:
    """The branch tip if it holds the template of ``grid``; ``None`` if it holds no template.

    Raises
    ------
    TemplateMissingError
        If the branch holds a template of another grid.
    """
    existing = template_attrs(repo, store.branch)
    if existing is None:
        return None
    if existing.get("grid_fingerprint") != grid.fingerprint:
        raise TemplateMissingError(
            f"the store {store.location()} already holds a template of grid {existing.get('grid')!r} "
            f"(fingerprint {existing.get('grid_fingerprint')}), not of grid {grid.name!r} (fingerprint "
            f"{grid.fingerprint}): use another store path for grid {grid.name!r}, or build grid "
            f"{existing.get('grid')!r} on this one"
        )
    return repo.lookup_branch(made_or_main(repo, store.branch))

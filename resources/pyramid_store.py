"""The pyramid in the repository: written into a session beside the raster, listed and opened back.

The arithmetic (factors, shapes, reductions) is :mod:`risk_model.pyramid`; this module is where
levels meet Icechunk and Zarr.
"""

from collections.abc import Collection

import icechunk
import xarray as xr
import zarr
from icechunk.xarray import to_icechunk
from zarr.abc.store import Store

from risk_model.grid import GridSpec, Region
from risk_model.pyramid import (
    PYRAMID_GROUP,
    PyramidLevel,
    PyramidLevelNotFoundError,
    coarsen,
    level_chunks,
    level_dataset,
    level_group,
    level_shape,
    level_window,
    pyramid_factors,
)
from risk_model.schema import DIMS, VARIABLES


def write_pyramid(session: icechunk.Session, grid: GridSpec, factors: list[int] | None = None) -> list[PyramidLevel]:
    """Write the pyramid of the session's root raster into the same session, uncommitted.

    The root raster is read lazily with dask chunks equal to its Zarr chunks, so memory
    stays at a few chunks whatever the grid's size. Any earlier pyramid is removed first, so
    the session ends up with exactly the levels of ``factors``. The root arrays are not
    touched.

    Parameters
    ----------
    session
        A writable session whose root holds the raster of ``grid``; the caller commits it.
    grid
        The raster's grid.
    factors
        Coarsening factors; :func:`pyramid_factors` of ``grid`` by default.

    Returns
    -------
    list[PyramidLevel]
        The levels written, in the order of ``factors``.

    Raises
    ------
    ValueError
        If the session is read-only, the root holds the raster of another grid, or a
        factor is below 2, repeated or does not divide both chunk sizes.
    """
    factors = _checked_factors(session, grid, factors, "write_pyramid")
    root = _root(session, grid)
    _new_pyramid_group(session, grid, factors)
    levels = []
    for factor in factors:
        level, encoding = level_dataset(root, grid, factor)
        to_icechunk(level, session, group=level_group(factor), mode="w", encoding=encoding)
        levels.append(PyramidLevel(factor=factor, shape=level_shape(grid, factor), group=level_group(factor)))
    return levels


def _checked_factors(session: icechunk.Session, grid: GridSpec, factors: list[int] | None, caller: str) -> list[int]:
    """``factors`` (default: :func:`pyramid_factors` of ``grid``) after checking them and the session."""
    if session.read_only:
        raise ValueError(f"{caller} needs a writable session (repo.writable_session(branch))")
    factors = pyramid_factors(grid) if factors is None else list(factors)
    for factor in factors:
        if factor < 2 or any(chunk % factor for chunk in grid.chunks):
            raise ValueError(
                f"pyramid factor {factor} must be at least 2 and divide the chunks {grid.chunks} of grid "
                f"{grid.name!r}, so no block straddles a region boundary"
            )
    if len(set(factors)) != len(factors):
        raise ValueError(f"repeated pyramid factors: {factors}")
    return factors


def _root(session: icechunk.Session, grid: GridSpec) -> xr.Dataset:
    """The session's root raster, lazily, with dask chunks equal to its Zarr chunks (one region each)."""
    root: xr.Dataset = xr.open_zarr(session.store, consolidated=False, chunks={})
    fingerprint = root.attrs.get("grid_fingerprint")
    if fingerprint != grid.fingerprint:
        raise ValueError(
            f"the root raster is of grid {root.attrs.get('grid')!r} (fingerprint {fingerprint}), "
            f"not of grid {grid.name!r}: cannot build its pyramid"
        )
    return root


def _new_pyramid_group(session: icechunk.Session, grid: GridSpec, factors: list[int]) -> None:
    # mode="w" deletes any earlier levels, so a pyramid with fewer factors than the previous
    # one leaves no stale level behind.
    group = zarr.open_group(session.store, path=PYRAMID_GROUP, mode="w", zarr_format=3)
    group.attrs.update({"factors": factors, "grid": grid.name, "grid_fingerprint": grid.fingerprint})


def pyramid_matches(
    session_or_store: icechunk.Session | Store, grid: GridSpec, factors: list[int] | None = None
) -> bool:
    """Whether a snapshot holds a pyramid of ``grid`` laid out as :func:`write_pyramid` writes it now.

    Same factors and grid, and every level holds every variable with the shape and chunks
    :func:`write_pyramid` would give it: only such a pyramid can be updated tile by tile
    (:func:`update_pyramid`) into the one a full write would make.
    """
    factors = pyramid_factors(grid) if factors is None else list(factors)
    store = _store_of(session_or_store)
    try:
        group = zarr.open_group(store, path=PYRAMID_GROUP, mode="r", zarr_format=3)
    except FileNotFoundError:  # zarr's GroupNotFoundError is a FileNotFoundError
        return False
    if group.attrs.get("factors") != factors or group.attrs.get("grid_fingerprint") != grid.fingerprint:
        return False
    names = [v.name for v in VARIABLES]
    for factor in factors:
        member = group.get(str(factor))
        if not isinstance(member, zarr.Group) or member.attrs.get("grid_fingerprint") != grid.fingerprint:
            return False
        for name in names:
            array = member.get(name)
            if not isinstance(array, zarr.Array):
                return False
            if tuple(array.shape) != level_shape(grid, factor) or tuple(array.chunks) != level_chunks(grid, factor):
                return False
    return True


def update_pyramid(
    session: icechunk.Session,
    grid: GridSpec,
    regions: Collection[Region],
    *,
    source: icechunk.Session | None = None,
    factors: list[int] | None = None,
) -> list[PyramidLevel]:
    """Bring a pyramid up to date with the session's raster by rewriting only the tiles of ``regions``.

    The pyramid to update is ``source``'s (a read-only session of another snapshot, such as
    the previous release: its levels are copied into the session first, array by array with
    their metadata), or, without ``source``, the session's own. Then every level's pixels
    made from ``regions`` are coarsened again from the session's raster and written in
    place: Zarr rewrites only the level chunks (tiles) they fall in. Because no level block
    straddles a region (see :mod:`risk_model.pyramid`), the result is bit for bit the
    pyramid :func:`write_pyramid` would write, provided every region whose raster differs
    from the one the pyramid was made from is in ``regions``; the caller knows which from
    the commit log. Uncommitted, like :func:`write_pyramid`.

    Parameters
    ----------
    session
        A writable session whose root holds the raster of ``grid``; the caller commits it.
    grid
        The raster's grid.
    regions
        The regions whose raster changed since the pyramid being updated was written.
    source
        Where the pyramid to update is, when not in ``session`` itself.
    factors
        Coarsening factors; :func:`pyramid_factors` of ``grid`` by default.

    Returns
    -------
    list[PyramidLevel]
        The levels, in the order of ``factors``.

    Raises
    ------
    ValueError
        As :func:`write_pyramid`; and if the pyramid to update does not match
        :func:`pyramid_matches` (write the whole pyramid instead).
    """
    factors = _checked_factors(session, grid, factors, "update_pyramid")
    root = _root(session, grid)
    base = session if source is None else source
    if not pyramid_matches(base, grid, factors):
        raise ValueError(
            f"the pyramid to update is not one of grid {grid.name!r} with factors {factors} in the current "
            "layout: write the whole pyramid (write_pyramid)"
        )
    if source is not None:
        _new_pyramid_group(session, grid, factors)
        for factor in factors:
            old = zarr.open_group(source.store, path=level_group(factor), mode="r", zarr_format=3)
            zarr.create_group(session.store, path=level_group(factor), attributes=dict(old.attrs), zarr_format=3)
            for name, array in old.arrays():
                zarr.from_array(session.store, data=array, name=f"{level_group(factor)}/{name}")
    # Each region's raster is read once (its chunks) for every level, and coarsened in memory.
    windows = {r.id: root.isel({DIMS[0]: r.rows, DIMS[1]: r.cols}).load() for r in regions}
    levels = []
    for factor in factors:
        patches = [(level_window(r.rows, r.cols, factor), coarsen(windows[r.id], factor)) for r in regions]
        group = zarr.open_group(session.store, path=level_group(factor), mode="r+", zarr_format=3)
        for name in (v.name for v in VARIABLES):
            level_array = group[name]
            if not isinstance(level_array, zarr.Array):  # pyramid_matches found arrays: a writer raced us
                raise ValueError(f"{level_group(factor)}/{name} is not an array: write the whole pyramid")
            # Straight into the Zarr array: the values are what the level stores (floats filled with
            # NaN, the score with 255, no scale or offset), and an xarray region write per region
            # opened and checked the level group each time, most of the update's time (measured).
            for (rows, cols), patch in patches:
                level_array[rows, cols] = patch[name].values
        levels.append(PyramidLevel(factor=factor, shape=level_shape(grid, factor), group=level_group(factor)))
    return levels


def _store_of(session_or_store: icechunk.Session | Store) -> Store:
    if isinstance(session_or_store, icechunk.Session):
        return session_or_store.store
    return session_or_store


def list_levels(session_or_store: icechunk.Session | Store) -> list[PyramidLevel]:
    """The levels of the pyramid in a snapshot, finest first.

    Parameters
    ----------
    session_or_store
        An Icechunk session (read-only or writable) or its ``store``.

    Returns
    -------
    list[PyramidLevel]
        Possibly empty when the pyramid group exists but holds no level.

    Raises
    ------
    PyramidLevelNotFoundError
        If the snapshot holds no pyramid at all.
    """
    store = _store_of(session_or_store)
    try:
        group = zarr.open_group(store, path=PYRAMID_GROUP, mode="r", zarr_format=3)
    except FileNotFoundError as err:  # zarr's GroupNotFoundError is a FileNotFoundError
        raise PyramidLevelNotFoundError(
            f"this snapshot holds no pyramid (no group {PYRAMID_GROUP!r}): build it with write_pyramid"
        ) from err
    levels = []
    for name, member in group.groups():
        if not name.isdigit():
            continue
        score = member.get("score")
        if not isinstance(score, zarr.Array):
            continue  # not a level written by write_pyramid
        levels.append(
            PyramidLevel(
                factor=int(name), shape=(int(score.shape[0]), int(score.shape[1])), group=level_group(int(name))
            )
        )
    return sorted(levels, key=lambda level: level.factor)


def open_level(session_or_store: icechunk.Session | Store, factor: int) -> xr.Dataset:
    """Open the level of ``factor`` lazily, with dask chunks equal to its Zarr chunks.

    Parameters
    ----------
    session_or_store
        An Icechunk session (read-only or writable) or its ``store``.
    factor
        The level's coarsening factor.

    Returns
    -------
    xarray.Dataset
        The level, with attributes ``factor``, ``pixel_size_deg`` and ``grid``.

    Raises
    ------
    PyramidLevelNotFoundError
        If the snapshot holds no level of ``factor``.
    """
    store = _store_of(session_or_store)
    try:
        level: xr.Dataset = xr.open_zarr(store, group=level_group(factor), consolidated=False, chunks={})
    except FileNotFoundError as err:
        raise PyramidLevelNotFoundError(
            f"this snapshot holds no pyramid level of factor {factor} (group {level_group(factor)!r})"
        ) from err
    return level


def coarsest_level(session_or_store: icechunk.Session | Store) -> tuple[PyramidLevel, xr.Dataset]:
    """The coarsest level of the pyramid in a snapshot: its description and its dataset.

    Parameters
    ----------
    session_or_store
        An Icechunk session (read-only or writable) or its ``store``.

    Returns
    -------
    tuple[PyramidLevel, xarray.Dataset]
        The level of the largest factor, opened lazily.

    Raises
    ------
    PyramidLevelNotFoundError
        If the snapshot holds no pyramid level.
    """
    levels = list_levels(session_or_store)
    if not levels:
        raise PyramidLevelNotFoundError(f"the group {PYRAMID_GROUP!r} of this snapshot holds no level")
    coarsest = levels[-1]
    return coarsest, open_level(session_or_store, coarsest.factor)

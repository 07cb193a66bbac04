"""Release pictures: the overview map of the whole grid, and what every release picture shares.

Both are pure: a pyramid level (:mod:`risk_model.pyramid`) in, PNG bytes out; nothing is
read from or written to a store here. Both are drawn with matplotlib's Agg renderer on a
private :class:`~matplotlib.figure.Figure` (never pyplot's global state, so concurrent
runs in one process cannot draw into each other's figures), and the canvas's pixels are
encoded with :func:`risk_model.quicklook.encode_png`, which writes no timestamp or
software version: the same inputs give the same bytes.

Overview (:func:`overview_png`)
-------------------------------
The ``score`` of a level in the fixed colour scale of :mod:`risk_model.quicklook`
(:data:`~risk_model.quicklook.SCORE_COLOURS`), north up, with a colour bar labelled with
the score classes 0-10. No data (255) is transparent, so the white axes background shows.
On top:

- every region of the registry outlined thinly in :data:`OUTLINE_COLOUR`;
- regions that are *missing* from the release filled with :data:`MISSING_COLOUR`, a blue
  that is in neither the score scale nor the no-data white, so a missing region cannot
  pass for a low-risk or empty one;
- regions that *failed a check* outlined with a thick :data:`FAILED_COLOUR` (magenta: far
  from every score colour and from the missing blue, so a failed region that is also
  missing still shows both marks).

The map is in plate carrée (longitude, latitude) with the vertical scale stretched by
``1 / cos(mid latitude)``, so shapes look as on the ground at the grid's latitude.

Testing the marks
-----------------
:func:`render_overview` and :func:`risk_model.diff_picture.render_diff` return a :class:`Picture` whose
:meth:`Picture.pixel_of` maps a (longitude, latitude) to image pixel coordinates, measured
from the axes' transform at render time; tests read the PNG back and check colours there.
"""

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PatchCollection
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from risk_model.grid import RegionRegistry
from risk_model.quicklook import SCORE_COLOURS, SCORES, encode_png
from risk_model.schema import SCORE_NODATA

#: Fill of regions missing from the release.
MISSING_COLOUR = "#3a6ea5"
#: Outline of regions that failed a check.
FAILED_COLOUR = "#ff00ff"
#: Thin outline of every region.
OUTLINE_COLOUR = "#555555"

DPI = 100
_MAP_WIDTH_IN = 8.0
_MAP_MAX_HEIGHT_IN = 9.0
_LEFT_IN, _GAP_IN, _CBAR_IN, _RIGHT_IN = 0.9, 0.25, 0.25, 1.1
_TOP_IN, _BOTTOM_IN, LEGEND_IN = 0.6, 0.6, 0.55
_OUTLINE_WIDTH_PT = 0.4
_FAILED_WIDTH_PT = 2.0


@dataclass(frozen=True)
class Picture:
    """A rendered map: the PNG and where the map's coordinates fall in it.

    Attributes
    ----------
    png
        The PNG file (8-bit RGBA).
    width, height
        Image size in pixels.
    lon_to_col, lat_to_row
        ``(offset, scale)`` of the linear maps from longitude to image column and from
        latitude to image row (row 0 at the top), read from the map axes at render time.
    """

    png: bytes
    width: int
    height: int
    lon_to_col: tuple[float, float]
    lat_to_row: tuple[float, float]

    def pixel_of(self, lon: float, lat: float) -> tuple[float, float]:
        """Image coordinates ``(column, row)`` of a point; ``(int(column), int(row))`` is its pixel."""
        return (
            self.lon_to_col[0] + self.lon_to_col[1] * lon,
            self.lat_to_row[0] + self.lat_to_row[1] * lat,
        )


def _axis(values: npt.NDArray[np.float64], fallback_step: float) -> tuple[float, float, float]:
    """``(first edge, last edge, step)`` of a regular coordinate of pixel centres."""
    step = float(values[-1] - values[0]) / (values.size - 1) if values.size > 1 else fallback_step
    return float(values[0]) - step / 2, float(values[-1]) + step / 2, step


def level_extent(level: xr.Dataset) -> tuple[float, float, float, float, bool]:
    """``(west, east, south, north, south_up)`` of a level, from its pixel-centre coordinates."""
    pixel = level.attrs.get("pixel_size_deg", [1.0, 1.0])
    lat = np.asarray(level["latitude"].values, dtype=np.float64)
    lon = np.asarray(level["longitude"].values, dtype=np.float64)
    lat0, lat1, _ = _axis(lat, float(pixel[0]))
    lon0, lon1, _ = _axis(lon, float(pixel[1]))
    return min(lon0, lon1), max(lon0, lon1), min(lat0, lat1), max(lat0, lat1), bool(lat0 <= lat1)


def new_figure(
    extent: tuple[float, float, float, float], *, legend: bool, title: str
) -> tuple[Figure, FigureCanvasAgg, Axes, Axes]:
    """A figure with a map axes of the right shape for ``extent`` and a colour-bar axes.

    The map axes' box is given the data's aspect exactly, so matplotlib never shrinks it
    and the layout is a pure function of the extent.
    """
    west, east, south, north = extent
    mid_lat = math.radians((south + north) / 2)
    stretch = 1 / max(math.cos(mid_lat), 0.1)  # one degree of latitude is longer than one of longitude
    width_in = _MAP_WIDTH_IN
    height_in = width_in * (north - south) * stretch / (east - west)
    if height_in > _MAP_MAX_HEIGHT_IN:
        width_in *= _MAP_MAX_HEIGHT_IN / height_in
        height_in = _MAP_MAX_HEIGHT_IN
    bottom_in = _BOTTOM_IN + (LEGEND_IN if legend else 0.0)
    fig_w = _LEFT_IN + width_in + _GAP_IN + _CBAR_IN + _RIGHT_IN
    fig_h = bottom_in + height_in + _TOP_IN
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((_LEFT_IN / fig_w, bottom_in / fig_h, width_in / fig_w, height_in / fig_h))
    cax = fig.add_axes(
        ((_LEFT_IN + width_in + _GAP_IN) / fig_w, bottom_in / fig_h, _CBAR_IN / fig_w, height_in / fig_h)
    )
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_facecolor("white")
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    fig.suptitle(title, y=1 - 0.15 / fig_h, va="top")
    return fig, canvas, ax, cax


def render_figure(canvas: FigureCanvasAgg, ax: Axes) -> Picture:
    """Draw the figure, encode its pixels and measure where the map axes landed."""
    # The Agg canvas's methods carry no annotations in matplotlib's stubs.
    canvas.draw()  # type: ignore[no-untyped-call]
    rgba = np.asarray(canvas.buffer_rgba(), dtype=np.uint8).copy()  # type: ignore[no-untyped-call]
    height, width = rgba.shape[:2]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    # Display coordinates have their origin at the bottom left; image rows count from the top.
    (px0, py0), (px1, py1) = ax.transData.transform([(x0, y0), (x1, y1)])
    col_scale = (px1 - px0) / (x1 - x0)
    row_scale = -(py1 - py0) / (y1 - y0)
    return Picture(
        png=encode_png(rgba),
        width=int(width),
        height=int(height),
        lon_to_col=(float(px0 - col_scale * x0), float(col_scale)),
        lat_to_row=(float(height - py0 - row_scale * y0), float(row_scale)),
    )


def _check_level_scores(score: npt.NDArray[Any]) -> None:
    valid = (score <= max(SCORES)) | (score == SCORE_NODATA)
    if not valid.all():
        bad = sorted({int(v) for v in np.unique(score[~valid])})
        raise ValueError(f"score values {bad} are not 0-10 or {SCORE_NODATA} (no data)")


def _rectangles(bounds: Sequence[tuple[float, float, float, float]], **style: Any) -> PatchCollection:
    patches = [Rectangle((west, south), east - west, north - south) for west, south, east, north in bounds]
    return PatchCollection(patches, match_original=False, **style)


def render_overview(
    level: xr.Dataset,
    registry: RegionRegistry,
    factor: int,
    *,
    missing: Collection[str],
    failed: Collection[str],
    title: str,
) -> Picture:
    """Render the overview map of a release (see :func:`overview_png`), with its pixel mapping.

    Parameters
    ----------
    level
        A pyramid level of the release with ``score`` over ``(latitude, longitude)``; it is
        read into memory, so pass a coarse one.
    registry
        The regions of the level's grid: every one is outlined.
    factor
        The level's coarsening factor, checked against the level's shape.
    missing
        Ids of regions missing from the release: filled with :data:`MISSING_COLOUR`.
    failed
        Ids of regions that failed a check: outlined with :data:`FAILED_COLOUR`.
    title
        Title above the map.

    Returns
    -------
    Picture
        The PNG and the mapping from (longitude, latitude) to its pixels.

    Raises
    ------
    ValueError
        If the level's shape is not the grid's coarsened by ``factor``, the level belongs
        to another grid, or ``score`` holds values other than 0-10 and 255.
    risk_model.grid.UnknownRegionError
        If a missing or failed id is not a region of the registry.
    """
    grid = registry.grid
    expected = (math.ceil(grid.shape[0] / factor), math.ceil(grid.shape[1] / factor))
    score = np.asarray(level["score"].transpose("latitude", "longitude").values)
    if score.shape != expected:
        raise ValueError(
            f"the level has shape {score.shape}, but grid {grid.name!r} {grid.shape} coarsened by "
            f"{factor} has shape {expected}"
        )
    fingerprint = level.attrs.get("grid_fingerprint")
    if fingerprint is not None and fingerprint != grid.fingerprint:
        raise ValueError(f"the level is of grid {level.attrs.get('grid')!r}, not of grid {grid.name!r}")
    _check_level_scores(score)
    missing_regions = [registry.get(rid) for rid in sorted(set(missing))]
    failed_regions = [registry.get(rid) for rid in sorted(set(failed))]

    west, east, south, north, south_up = level_extent(level)
    grid_west, grid_south, grid_east, grid_north = grid.bounds(slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    fig, canvas, ax, cax = new_figure((grid_west, grid_east, grid_south, grid_north), legend=True, title=title)

    cmap = ListedColormap(list(SCORE_COLOURS)).with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    norm = BoundaryNorm(np.arange(-0.5, len(SCORES) + 0.5), ncolors=len(SCORES))
    ax.imshow(
        np.ma.masked_equal(score, SCORE_NODATA),
        cmap=cmap,
        norm=norm,
        extent=(west, east, south, north),
        origin="lower" if south_up else "upper",
        interpolation="nearest",  # scores are classes: never blend neighbouring classes
        aspect="auto",  # the axes box already has the map's aspect (see _figure)
        zorder=1,
    )
    ax.add_collection(
        _rectangles(
            [r.bounds for r in registry], facecolor="none", edgecolor=OUTLINE_COLOUR, linewidth=_OUTLINE_WIDTH_PT
        )
    )
    if missing_regions:
        ax.add_collection(
            _rectangles(
                [r.bounds for r in missing_regions],
                facecolor=MISSING_COLOUR,
                edgecolor=OUTLINE_COLOUR,
                linewidth=_OUTLINE_WIDTH_PT,
                zorder=3,
            )
        )
    if failed_regions:
        ax.add_collection(
            _rectangles(
                [r.bounds for r in failed_regions],
                facecolor="none",
                edgecolor=FAILED_COLOUR,
                linewidth=_FAILED_WIDTH_PT,
                zorder=4,
                clip_on=False,  # a region on the grid's edge keeps its whole outline
            )
        )
    # add_collection does not widen the limits, but keep them on the grid explicitly.
    ax.set_xlim(grid_west, grid_east)
    ax.set_ylim(grid_south, grid_north)

    colourbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, ticks=list(SCORES))
    colourbar.set_label("risk score (0 = none, 10 = highest)")
    handles = [
        Patch(facecolor=MISSING_COLOUR, edgecolor=OUTLINE_COLOUR, label=f"missing region ({len(missing_regions)})"),
        Patch(
            facecolor="none",
            edgecolor=FAILED_COLOUR,
            linewidth=_FAILED_WIDTH_PT,
            label=f"failed checks ({len(failed_regions)})",
        ),
        Patch(facecolor="none", edgecolor=OUTLINE_COLOUR, label=f"region ({len(registry)})"),
        Patch(facecolor="white", edgecolor="#999999", label="no data"),
    ]
    fig.legend(handles=handles, loc="lower center", ncols=4, frameon=False, bbox_to_anchor=(0.5, 0.0))
    return render_figure(canvas, ax)


def overview_png(
    level: xr.Dataset,
    registry: RegionRegistry,
    factor: int,
    *,
    missing: Collection[str],
    failed: Collection[str],
    title: str,
) -> bytes:
    """One PNG of the whole grid: scores, region outlines, missing and failed regions.

    The scores are drawn in the fixed scale of :data:`~risk_model.quicklook.SCORE_COLOURS`,
    north up, with a colour bar of the classes 0-10 and a legend. Missing regions are filled
    with :data:`MISSING_COLOUR`, failed ones outlined in :data:`FAILED_COLOUR`. The same
    inputs always give the same bytes.

    Parameters
    ----------
    level
        A pyramid level with ``score``; see :func:`render_overview`.
    registry
        The regions of the grid.
    factor
        The level's coarsening factor.
    missing
        Ids of regions missing from the release.
    failed
        Ids of regions that failed a check.
    title
        Title above the map.

    Returns
    -------
    bytes
        The PNG file.

    Raises
    ------
    ValueError
        As :func:`render_overview`.
    risk_model.grid.UnknownRegionError
        If a missing or failed id is not a region of the registry.
    """
    return render_overview(level, registry, factor, missing=missing, failed=failed, title=title).png

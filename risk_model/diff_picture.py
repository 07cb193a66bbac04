"""The change in risk between two releases, as a picture and as numbers.

``risk`` of the new release minus the old, on the same pyramid level, in the diverging
``RdBu_r`` scale (increase red, decrease blue, no change white). The limits are symmetric
around 0 at the 99th percentile of ``|change|`` (see :func:`diff_stats`): a robust maximum,
so a handful of extreme pixels do not wash every other change out to white; larger changes
saturate (the colour bar's pointed ends). Pixels without data in either release are grey
(:data:`DIFF_NODATA_COLOUR`).
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import xarray as xr
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from risk_model.pictures import LEGEND_IN, Picture, level_extent, new_figure, render_figure

#: Pixels without data in either release, in the change picture.
DIFF_NODATA_COLOUR = "#bdbdbd"
#: Diverging colour map of the change picture (red = risk went up).
DIFF_CMAP = "RdBu_r"
#: Percentile of ``|change|`` at which the change picture's colour scale saturates.
DIFF_PERCENTILE = 99.0
#: A pixel's risk "changed" when it moved by more than this (float32 noise stays below).
CHANGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class DiffStats:
    """How ``risk`` changed between two releases, on one pyramid level.

    Attributes
    ----------
    pixels_compared
        Pixels with ``risk`` data in both releases; the shares and means are over these.
    pixels_only_new, pixels_only_old
        Pixels with data in only the new (newly built) or only the old release.
    mean_change, mean_abs_change
        Mean of ``new - old`` and of ``|new - old|`` (NaN when nothing is compared).
    max_increase, max_decrease
        Largest rise and largest fall, both as non-negative magnitudes (0 when nothing
        rose, or fell).
    share_changed
        Share of compared pixels whose risk moved by more than :data:`CHANGE_TOLERANCE`.
    share_score_changed
        Share of compared pixels whose ``score`` class differs.
    colour_limit
        The change at which the picture's colour scale saturates, both ways.
    """

    pixels_compared: int
    pixels_only_new: int
    pixels_only_old: int
    mean_change: float
    mean_abs_change: float
    max_increase: float
    max_decrease: float
    share_changed: float
    share_score_changed: float
    colour_limit: float

    def as_metadata(self) -> dict[str, float | int]:
        """The statistics as a plain dict of ints and floats (for Dagster or a manifest)."""
        return {name: value for name, value in asdict(self).items()}


def _risk(ds: xr.Dataset) -> npt.NDArray[np.float64]:
    return np.asarray(ds["risk"].transpose("latitude", "longitude").values, dtype=np.float64)


def _check_same_level(new: xr.Dataset, old: xr.Dataset) -> None:
    new_shape, old_shape = tuple(new["risk"].shape), tuple(old["risk"].shape)
    if new_shape != old_shape:
        raise ValueError(
            f"cannot compare levels of different shapes: new {new_shape}, old {old_shape} "
            "(use the same pyramid factor of the same grid)"
        )
    for dim in ("latitude", "longitude"):
        if not np.allclose(new[dim].values, old[dim].values, rtol=0.0, atol=1e-9):
            raise ValueError(f"the levels have the same shape {new_shape} but different {dim} coordinates")


def _colour_limit(abs_change: npt.NDArray[np.float64]) -> float:
    """Symmetric colour limit: the 99th percentile of ``|change|``, or the max if that is 0."""
    if abs_change.size == 0:
        return CHANGE_TOLERANCE
    limit = float(np.percentile(abs_change, DIFF_PERCENTILE))
    if limit <= 0.0:
        # Fewer than 1% of the pixels changed: the percentile is 0, so show them at full scale.
        limit = float(abs_change.max())
    # Nothing changed at all: any positive limit draws every pixel white.
    return limit if limit > 0.0 else CHANGE_TOLERANCE


def diff_stats(new: xr.Dataset, old: xr.Dataset) -> DiffStats:
    """Statistics of the change in ``risk`` (and ``score`` class) from ``old`` to ``new``.

    Parameters
    ----------
    new, old
        The same pyramid level of two releases, each with ``risk`` and ``score``.

    Returns
    -------
    DiffStats
        Computed in float64 over the pixels with ``risk`` data in both.

    Raises
    ------
    ValueError
        If the levels differ in shape (the message names both) or in coordinates.
    """
    _check_same_level(new, old)
    new_risk, old_risk = _risk(new), _risk(old)
    has_new, has_old = np.isfinite(new_risk), np.isfinite(old_risk)
    both = has_new & has_old
    change = (new_risk - old_risk)[both]
    new_score = np.asarray(new["score"].transpose("latitude", "longitude").values)[both]
    old_score = np.asarray(old["score"].transpose("latitude", "longitude").values)[both]
    compared = int(both.sum())
    abs_change = np.abs(change)
    if compared:
        mean_change, mean_abs = float(change.mean()), float(abs_change.mean())
        max_increase, max_decrease = max(0.0, float(change.max())), max(0.0, -float(change.min()))
        share_changed = float((abs_change > CHANGE_TOLERANCE).sum()) / compared
        share_score = float((new_score != old_score).sum()) / compared
    else:
        mean_change = mean_abs = share_changed = share_score = math.nan
        max_increase = max_decrease = 0.0
    return DiffStats(
        pixels_compared=compared,
        pixels_only_new=int((has_new & ~has_old).sum()),
        pixels_only_old=int((has_old & ~has_new).sum()),
        mean_change=mean_change,
        mean_abs_change=mean_abs,
        max_increase=max_increase,
        max_decrease=max_decrease,
        share_changed=share_changed,
        share_score_changed=share_score,
        colour_limit=_colour_limit(abs_change),
    )


def render_diff(new: xr.Dataset, old: xr.Dataset, *, title: str) -> tuple[Picture, DiffStats]:
    """Render the change in ``risk`` (see :func:`diff_png`), with its pixel mapping.

    Parameters
    ----------
    new, old
        The same pyramid level of the new and the old release, each with ``risk`` and
        ``score``; they are read into memory.
    title
        Title above the map.

    Returns
    -------
    tuple[Picture, DiffStats]
        The picture and the statistics of the change.

    Raises
    ------
    ValueError
        If the levels differ in shape (the message names both) or in coordinates.
    """
    stats = diff_stats(new, old)
    change = _risk(new) - _risk(old)  # NaN wherever either release has no data
    west, east, south, north, south_up = level_extent(new)
    # The legend band below the map holds the numbers that summarise the change instead.
    fig, canvas, ax, cax = new_figure((west, east, south, north), legend=True, title=title)
    fig.text(
        0.5,
        (LEGEND_IN / 2) / fig.get_figheight(),
        f"mean change {stats.mean_change:+.3g}   mean |change| {stats.mean_abs_change:.3g}   "
        f"max increase {stats.max_increase:.3g}   max decrease {stats.max_decrease:.3g}\n"
        f"pixels changed {stats.share_changed:.1%}   score class changed {stats.share_score_changed:.1%}   "
        f"({stats.pixels_compared:,} pixels compared)",
        ha="center",
        va="center",
        fontsize=9,
    )
    cmap = colormaps[DIFF_CMAP].with_extremes(bad=DIFF_NODATA_COLOUR)
    norm = Normalize(vmin=-stats.colour_limit, vmax=stats.colour_limit)
    ax.imshow(
        np.ma.masked_invalid(change),
        cmap=cmap,
        norm=norm,
        extent=(west, east, south, north),
        origin="lower" if south_up else "upper",
        interpolation="nearest",
        aspect="auto",
    )
    units = str(new["risk"].attrs.get("units", "1"))
    colourbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, extend="both")
    colourbar.set_label(
        f"change in risk, new − old ({'dimensionless' if units in ('', '1') else units})\n"
        f"scale saturates at ±{stats.colour_limit:.3g} ({DIFF_PERCENTILE:g}th percentile of |change|)"
    )
    return render_figure(canvas, ax), stats


def diff_png(new: xr.Dataset, old: xr.Dataset, *, title: str) -> tuple[bytes, DiffStats]:
    """A PNG of the change in ``risk`` between two releases, and its statistics.

    Diverging ``RdBu_r`` scale (red = risk rose), symmetric around 0 with limits at the
    99th percentile of ``|change|`` so a few outliers do not flatten the rest; no data in
    either release is grey. The same inputs always give the same bytes.

    Parameters
    ----------
    new, old
        The same pyramid level of the new and the old release.
    title
        Title above the map.

    Returns
    -------
    tuple[bytes, DiffStats]
        The PNG file and the statistics (:meth:`DiffStats.as_metadata` for metadata).

    Raises
    ------
    ValueError
        If the levels differ in shape (the message names both) or in coordinates.
    """
    picture, stats = render_diff(new, old, title=title)
    return picture.png, stats

"""A region's quicklook and statistics as Dagster materialization metadata."""

from typing import Any

import numpy as np
import xarray as xr
from dagster import MetadataValue

from risk_model.quicklook import MAX_SIDE, SCORES, quicklook_markdown, quicklook_png, region_stats, south_up


def quicklook_metadata(ds: xr.Dataset, *, max_side: int = MAX_SIDE) -> dict[str, MetadataValue[Any]]:
    """Dagster metadata of a region: its quicklook and statistics.

    Parameters
    ----------
    ds
        The region's dataset, with ``risk`` and ``score`` over ``(latitude, longitude)``;
        lazy arrays are read here.
    max_side
        Longest side of the quicklook image.

    Returns
    -------
    dict
        ``quicklook`` (markdown embedding the PNG as a ``data:image/png;base64`` URI),
        ``risk_min``, ``risk_mean``, ``risk_max`` and ``nodata_share`` (floats),
        ``score_class_shares`` (JSON mapping ``"0"``..``"10"`` to shares) and
        ``quicklook_bytes`` (the PNG's size).

    Raises
    ------
    ValueError
        If ``score`` holds values other than 0-10 and 255.
    KeyError
        If ``ds`` lacks ``risk`` or ``score``.
    """
    score = np.asarray(ds["score"].transpose("latitude", "longitude").values)
    risk = np.asarray(ds["risk"].transpose("latitude", "longitude").values)
    stats = region_stats(risk, score)
    png = quicklook_png(score, south_up=south_up(ds), max_side=max_side)
    shares = {str(s): stats.class_shares[s] for s in SCORES}
    return {
        "quicklook": MetadataValue.md(quicklook_markdown(png, stats)),
        "quicklook_bytes": MetadataValue.int(len(png)),
        "risk_min": MetadataValue.float(stats.risk_min),
        "risk_mean": MetadataValue.float(stats.risk_mean),
        "risk_max": MetadataValue.float(stats.risk_max),
        "nodata_share": MetadataValue.float(stats.nodata_share),
        "score_class_shares": MetadataValue.json(shares),
    }

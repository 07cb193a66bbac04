"""Region builders run in spawned worker processes against an S3-compatible store (moto)."""

import os

import numpy as np
import xarray as xr
from _workers import write_regions

from resources.cloud_stores import S3IcechunkStore
from resources.region_write import write_region
from risk_model.grid import load_registry
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey


def build_regions(store_json: str, inputs_json: str, region_ids: list[str]) -> list[tuple[str, str, int, float]]:
    """Compute and commit ``region_ids`` of the demo grid.

    Returns ``(region, snapshot_id, rebase_attempts, seconds_committing)`` per region.
    """
    out = []
    for result in write_regions(S3IcechunkStore.model_validate_json(store_json), inputs_json, region_ids):
        assert result.commit is not None
        rebases = int(result.commit.metadata.get("__icechunk", {}).get("rebase_attempts", 0))
        out.append((result.region, result.snapshot_id, rebases, result.seconds_committing))
    return out


def write_constant_regions(store_json: str, region_ids: list[str], values: list[int]) -> list[tuple[str, str, str]]:
    """Commit each region of the demo grid filled with its value (every variable), one commit each.

    Constant data needs no inputs and no computation, so the commits themselves are what races.
    Returns ``(region, status, snapshot_id)`` per region.
    """
    store = S3IcechunkStore.model_validate_json(store_json)
    registry = load_registry("demo")
    out: list[tuple[str, str, str]] = []
    for region_id, value in zip(region_ids, values, strict=True):
        region = registry.get(region_id)
        ds = xr.Dataset(
            {v.name: (DIMS, np.full(region.shape, value, dtype=v.dtype)) for v in VARIABLES},
            coords=coordinates(registry.grid, region.rows, region.cols),
        )
        result = write_region(
            store, registry.grid, region, ds, key=BuildKey("p", "i", "test"), run_id=f"pid-{os.getpid()}"
        )
        out.append((result.region, result.status, result.snapshot_id))
    return out

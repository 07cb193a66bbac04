"""Functions run in spawned worker processes against fake-gcs-server (``tests/test_gcs_emulator.py``).

Each process inherits ``STORAGE_EMULATOR_HOST`` from the test, so google-cloud-storage talks to
the emulator.
"""

import os

import numpy as np
import xarray as xr

from resources.cloud_stores import GCSIcechunkStore
from resources.region_write import WriteResult, write_region
from resources.store import IcechunkStore
from risk_model.grid import RegionRegistry, load_registry
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey


def constant_region(registry: RegionRegistry, region_id: str) -> xr.Dataset:
    """Region ``region_id`` filled with one value of its own (its index + 1), so misplaced data shows."""
    region = registry.get(region_id)
    value = registry.ids.index(region_id) + 1
    data = {}
    for v in VARIABLES:
        fill = min(value, 10) if v.name == "score" else value
        data[v.name] = (DIMS, np.full(region.shape, fill, dtype=v.dtype))
    return xr.Dataset(data, coords=coordinates(registry.grid, region.rows, region.cols))


def build_constant_regions_into(store: IcechunkStore, region_ids: list[str]) -> list[WriteResult]:
    """Commit constant-valued ``region_ids`` of the demo grid into ``store``, one commit each."""
    registry = load_registry("demo")
    return [
        write_region(
            store,
            registry.grid,
            registry.get(region_id),
            constant_region(registry, region_id),
            key=BuildKey("constant", "constant", "test"),
            run_id=f"pid-{os.getpid()}",
        )
        for region_id in region_ids
    ]


def build_constant_regions(store_json: str, region_ids: list[str]) -> list[tuple[str, str, int, float]]:
    """:func:`build_constant_regions_into` a GCS store, in a worker process.

    Returns ``(region, snapshot_id, rebase_attempts, seconds_committing)`` per region.
    """
    out = []
    for result in build_constant_regions_into(GCSIcechunkStore.model_validate_json(store_json), region_ids):
        assert result.commit is not None
        rebases = int(result.commit.metadata.get("__icechunk", {}).get("rebase_attempts", 0))
        out.append((result.region, result.snapshot_id, rebases, result.seconds_committing))
    return out

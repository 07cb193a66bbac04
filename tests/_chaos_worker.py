"""A region writer for the chaos test, run as its own process group: ``python _chaos_worker.py STORE REGION...``.

Writes each region of the demo grid filled with :func:`region_value` and exits 0; a
write that loses its rebases is retried a few times (what Dagster's retry policy does for
region runs). Prints one line per region: ``<region> <status> <snapshot>``.
"""

import sys

import numpy as np
import xarray as xr

from resources.cloud_stores import S3IcechunkStore
from resources.region_write import write_region
from risk_model.errors import CommitConflictError
from risk_model.grid import RegionRegistry, load_registry
from risk_model.schema import DIMS, VARIABLES, coordinates
from risk_model.versions import BuildKey

KEY = BuildKey("chaos-params", "chaos-inputs", "test")


def region_value(registry: RegionRegistry, region_id: str) -> float:
    """The value every pixel of ``region_id`` is written with: distinct per region."""
    return 0.01 * (1 + registry.ids.index(region_id))


def region_data(registry: RegionRegistry, region_id: str) -> xr.Dataset:
    region = registry.get(region_id)
    value = region_value(registry, region_id)
    return xr.Dataset(
        {v.name: (DIMS, np.full(region.shape, value, dtype=v.dtype)) for v in VARIABLES},
        coords=coordinates(registry.grid, region.rows, region.cols),
    )


def main(store_json: str, region_ids: list[str]) -> None:
    store = S3IcechunkStore.model_validate_json(store_json)
    registry = load_registry("demo")
    for region_id in region_ids:
        for attempt in range(5):
            try:
                result = write_region(
                    store,
                    registry.grid,
                    registry.get(region_id),
                    region_data(registry, region_id),
                    key=KEY,
                    run_id="chaos",
                )
            except CommitConflictError:
                if attempt == 4:
                    raise
                continue
            print(region_id, result.status, result.snapshot_id, flush=True)
            break


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

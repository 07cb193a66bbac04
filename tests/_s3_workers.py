"""Region builders run in spawned worker processes against an S3-compatible store (moto)."""

import os

from resources.ledger import write_region
from resources.store import S3IcechunkStore
from risk_assets.compute import compute_region
from risk_assets.grid import load_registry
from risk_assets.inputs import InputSet
from risk_assets.params import load_params, params_version


def build_regions(store_json: str, inputs_json: str, region_ids: list[str]) -> list[tuple[str, str, int, float]]:
    """Compute and commit ``region_ids`` of the demo grid.

    Returns ``(region, snapshot_id, rebase_attempts, seconds_committing)`` per region.
    """
    registry = load_registry("demo")
    inputs = InputSet.model_validate_json(inputs_json)
    params = load_params()
    store = S3IcechunkStore.model_validate_json(store_json)
    out = []
    for region_id in region_ids:
        region = registry.get(region_id)
        ds = compute_region(registry.grid, region, inputs, params)
        result = write_region(
            store,
            registry.grid,
            region,
            ds,
            params_version=params_version(params),
            code_version="test",
            run_id=f"pid-{os.getpid()}",
        )
        assert result.commit is not None
        rebases = int(result.commit.metadata.get("__icechunk", {}).get("rebase_attempts", 0))
        out.append((region_id, result.snapshot_id, rebases, result.seconds_committing))
    return out

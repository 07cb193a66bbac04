"""Region builders run in spawned worker processes against an S3-compatible store (moto)."""

from _workers import write_regions

from resources.store import S3IcechunkStore


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

"""A region writer for the store-outage test: ``python _outage_worker.py STORE REGION...``.

Writes each region of the demo grid filled with its constant value (``_chaos_worker``) once,
with no retry of its own, and prints one line per region: ``<region> written|skipped <snapshot>``
or ``<region> FAILED <error class>: <message>`` for an error of the "retry later" category
(:class:`~risk_model.errors.StoreUnavailableError`). Any other error ends the process with its
traceback: that is what the test must never see.
"""

import sys

from _chaos_worker import KEY, region_data

from resources.cloud_stores import S3IcechunkStore
from resources.region_write import write_region
from risk_model.errors import StoreUnavailableError
from risk_model.grid import load_registry


def main(store_json: str, region_ids: list[str]) -> None:
    """Write ``region_ids`` into the store of ``store_json``, reporting each on stdout."""
    store = S3IcechunkStore.model_validate_json(store_json)
    registry = load_registry("demo")
    for region_id in region_ids:
        try:
            result = write_region(
                store,
                registry.grid,
                registry.get(region_id),
                region_data(registry, region_id),
                key=KEY,
                run_id="outage",
            )
        except StoreUnavailableError as err:
            one_line = " ".join(str(err).split())
            print(region_id, "FAILED", f"{type(err).__name__}: {one_line}", flush=True)
            continue
        print(region_id, result.status, result.snapshot_id, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

"""A batch-commit region writer run as its own process group: ``python _batch_workers.py MODE STORE REGION...``.

Writes each region of the demo grid filled with :func:`_chaos_worker.region_value` through the
production path (:func:`resources.batch_handoff.write_region_batched`) and prints one line per
region: ``<region> <status> <snapshot>``. ``MODE`` kills the whole process group (as a pod
eviction would) at one step of the protocol:

- ``normal``: no kill;
- ``before-handoff``: once the fork is written, as it would store its pending object;
- ``after-handoff``: once the pending object is stored, before taking part in any commit;
- ``committing``: once it holds the commit lease, before committing anything.
"""

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from _chaos_worker import KEY, region_data

from resources.batch_handoff import write_region_batched
from resources.cloud_stores import S3IcechunkStore
from resources.leases import PENDING_PREFIX
from risk_model.grid import load_registry


def _die() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


class KillBeforeHandoff(S3IcechunkStore):
    """Dies as it would store its pending fork (its chunks are written)."""

    def create_lease_object(self, name: str, data: bytes) -> str | None:
        if name.startswith(PENDING_PREFIX):
            _die()
        return super().create_lease_object(name, data)


class KillAfterHandoff(S3IcechunkStore):
    """Dies as it would try the commit lease, i.e. just after storing its pending fork."""

    @contextmanager
    def commit_lease(self) -> Iterator[bool]:
        _die()
        yield False


class KillWhileCommitting(S3IcechunkStore):
    """Dies holding the commit lease, before committing."""

    @contextmanager
    def commit_lease(self) -> Iterator[bool]:
        with super().commit_lease() as taken:
            if taken:
                _die()
            yield taken


STORES: dict[str, type[S3IcechunkStore]] = {
    "normal": S3IcechunkStore,
    "before-handoff": KillBeforeHandoff,
    "after-handoff": KillAfterHandoff,
    "committing": KillWhileCommitting,
}


def main(mode: str, store_json: str, region_ids: list[str]) -> None:
    store = STORES[mode].model_validate_json(store_json)
    registry = load_registry("demo")
    for region_id in region_ids:
        result = write_region_batched(
            store,
            registry.grid,
            registry.get(region_id),
            region_data(registry, region_id),
            key=KEY,
            run_id=f"{mode}-{os.getpid()}",
        )
        print(region_id, result.status, result.snapshot_id, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])

"""Functions run in spawned worker processes by the tests (importable by module name)."""

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from _targets import default_target

from resources.local_store import LocalIcechunkStore
from resources.region_write import WriteResult, write_region
from resources.store import IcechunkStore
from risk_model.compute import compute_region
from risk_model.grid import load_registry
from risk_model.input_set import InputSet
from risk_model.versions import BuildKey


class KillBeforeCommitStore(LocalIcechunkStore):
    """A local store whose worker dies by SIGKILL at the moment it would commit."""

    @contextmanager
    def commit_guard(self) -> Iterator[None]:
        os.kill(os.getpid(), signal.SIGKILL)
        yield


def write_regions(
    store: IcechunkStore,
    inputs_json: str,
    region_ids: list[str],
    code_version: str = "test",
    branch: str | None = None,
    grid: str = "demo",
) -> list[WriteResult]:
    """Compute and commit ``region_ids`` of ``grid`` into ``store``, one commit each.

    The build key is the default parameters' and ``inputs``' with ``code_version``; the branch
    is the store's unless given (it must exist).
    """
    registry = load_registry(grid)
    inputs = InputSet.model_validate_json(inputs_json)
    target = default_target(inputs, registry)
    results = []
    for region_id in region_ids:
        region = registry.get(region_id)
        key = target.region_key(region_id)
        ds = compute_region(registry.grid, region, inputs, target.region_params(region_id))
        results.append(
            write_region(
                store,
                registry.grid,
                region,
                ds,
                key=BuildKey(key.params_version, key.inputs_version, code_version),
                run_id=f"pid-{os.getpid()}",
                branch=branch,
            )
        )
    return results


def build_regions(
    store_path: str,
    inputs_json: str,
    region_ids: list[str],
    kill: bool = False,
    code_version: str = "test",
    branch: str | None = None,
    grid: str = "demo",
) -> list[str]:
    """Compute and commit ``region_ids`` of ``grid`` into a local repository; return the snapshot ids."""
    store_cls = KillBeforeCommitStore if kill else LocalIcechunkStore
    results = write_regions(store_cls(path=store_path), inputs_json, region_ids, code_version, branch, grid)
    return [r.snapshot_id for r in results]


def write_fork_and_exit(store_path: str, region_id: str) -> None:
    """Write ``region_id``'s fork (constant data) and end without handing it to a committer.

    What a batch writer killed before its region was committed leaves behind.
    """
    import numpy as np
    import xarray as xr

    from resources.batch_commit import write_region_fork
    from risk_model.schema import DIMS, VARIABLES, coordinates

    registry = load_registry("demo")
    region = registry.get(region_id)
    # Random values: constant chunks compress so well that Icechunk inlines them in the session.
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {v.name: (DIMS, rng.integers(1, 100, size=region.shape).astype(v.dtype)) for v in VARIABLES},
        coords=coordinates(registry.grid, region.rows, region.cols),
    )
    fork = write_region_fork(
        LocalIcechunkStore(path=store_path),
        registry.grid,
        region,
        ds,
        key=BuildKey("params", "inputs", "test"),
        run_id="killed",
    )
    assert fork is not None

"""The Icechunk IO manager: each partition of a run in, its region written and committed.

The asset returns one ``xarray.Dataset`` per region of its run (a run holds one region, or a
group of them locally), each carrying its provenance in its attrs
(build key: ``params_version``, ``inputs_version``, ``code_version``; and the ``branch`` of its
raster version). The IO manager writes it with ``region="auto"`` into that branch and commits
with structured metadata, with the store's ``commit_protocol``: ``batch`` (hands the region's
fork to whichever writer holds the commit lease and waits for its commit,
:mod:`resources.batch_handoff`) or ``direct`` (commits it itself); the commit is the last thing
a region does. Only commit conflicts
are retried (as a Dagster retry of the step); every other failure fails the step with the reason.
"""

from typing import Any, cast

import xarray as xr
from dagster import (
    ConfigurableIOManager,
    Failure,
    InputContext,
    MetadataValue,
    OutputContext,
    ResourceDependency,
    RetryRequested,
)
from pydantic import Field

from resources.batch_handoff import write_region_by_protocol
from resources.region_metadata import quicklook_metadata
from resources.store import IcechunkStore
from risk_model.errors import CommitConflictError, RiskError
from risk_model.grid import RegionRegistry, load_registry
from risk_model.versions import BuildKey

PROVENANCE_ATTRS = ("params_version", "inputs_version", "code_version", "branch", "raster_version")
#: What the raster asset returns: one dataset per region of the run, keyed by region id.
RegionDatasets = dict[str, xr.Dataset]


class IcechunkRegionIOManager(ConfigurableIOManager):
    """Writes each partition of a region-partitioned asset into one Icechunk repository.

    Attributes
    ----------
    store
        The repository (local, S3-compatible or GCS).
    grid
        Name of the grid whose region registry maps partition keys to windows.
    conflict_retries
        How many times a step is retried when its commit keeps losing to concurrent
        commits even after rebasing. Nothing else is retried here.
    """

    store: ResourceDependency[IcechunkStore]
    grid: str
    conflict_retries: int = Field(default=3, ge=0, le=20)
    conflict_backoff_seconds: float = Field(default=2.0, ge=0)

    def registry(self) -> RegionRegistry:
        """The region registry of :attr:`grid`."""
        return load_registry(self.grid)

    def handle_output(self, context: OutputContext, obj: RegionDatasets) -> None:
        """Write and commit each region of the run's partitions, or skip those already committed.

        Each region is committed once (alone, or in a batch with other writers' regions under the
        store's ``commit_protocol: "batch"``), whatever the number of regions in the run. The materialization
        of each partition carries its own region's metadata (snapshot, status, picture): what
        the reconciliation sensor compares with the commit log, region by region.
        """
        if not context.has_asset_partitions:
            raise Failure(
                description="risk raster outputs are written per region: the output has no partition",
                allow_retries=False,
            )
        partitions = list(context.asset_partition_keys)
        if sorted(obj) != sorted(partitions):
            raise Failure(
                description=f"the asset returned regions {sorted(obj)} for partitions {sorted(partitions)}: "
                "it must return exactly one dataset per partition of the run",
                allow_retries=False,
            )
        registry = self.registry()
        for region_id in partitions:
            metadata = self._write_one(context, registry, region_id, obj[region_id])
            if len(partitions) == 1:
                context.add_output_metadata(metadata)
            else:
                # Dagster's public IO-manager context has no per-partition metadata; the step
                # context's is what `AssetExecutionContext.add_asset_metadata(partition_key=...)`
                # writes to, and each partition's materialization reads it
                # (tests/test_dagster.py checks one snapshot id per region of a group run).
                context.step_context.add_asset_metadata(metadata, partition_key=region_id)

    def _write_one(
        self, context: OutputContext, registry: RegionRegistry, region_id: str, obj: xr.Dataset
    ) -> dict[str, Any]:
        """Write and commit one region (unless committed already); its materialization metadata."""
        missing = [key for key in PROVENANCE_ATTRS if key not in obj.attrs]
        if missing:
            raise Failure(
                description=f"the dataset lacks {', '.join(missing)} in its attrs: the asset must record "
                "which parameters and code produced it",
                allow_retries=False,
            )
        try:
            # Before the write: a score outside its classes is refused before anything is committed.
            quicklook = quicklook_metadata(obj)
        except ValueError as err:
            raise Failure(description=f"cannot draw the region: {err}", allow_retries=False) from err
        try:
            region = registry.get(region_id)
            key = BuildKey(*(str(obj.attrs[name]) for name in ("params_version", "inputs_version", "code_version")))
            branch = str(obj.attrs["branch"])
            result = write_region_by_protocol(
                self.store,
                registry.grid,
                region,
                obj,
                key=key,
                run_id=context.run_id,
                branch=branch,
                extra_metadata={"raster_version": str(obj.attrs["raster_version"])},
            )
        except CommitConflictError as err:
            # The whole run is retried; its regions committed meanwhile are then skipped.
            context.log.warning(str(err))
            raise RetryRequested(
                max_retries=self.conflict_retries, seconds_to_wait=self.conflict_backoff_seconds
            ) from err
        except RiskError as err:
            # Would fail the same way again: not for the asset's retry policy (lost pods only).
            raise Failure(description=str(err), allow_retries=False) from err

        metadata: dict[str, Any] = {
            "status": result.status,
            "region": region.id,
            "snapshot_id": result.snapshot_id,
            "store": self.store.location(),
            "branch": branch,
            "raster_version": str(obj.attrs["raster_version"]),
            "params_version": key.params_version,
            "inputs_version": key.inputs_version,
            "code_version": key.code_version,
            "bounds": MetadataValue.json(list(region.bounds)),
            # A picture and statistics of the region, for written and skipped regions alike.
            **quicklook,
        }
        if result.commit is not None:
            metadata["commit_run_id"] = result.commit.run_id
            metadata["committed_at"] = result.commit.written_at.isoformat()
            metadata["rebase_attempts"] = int(result.commit.metadata.get("__icechunk", {}).get("rebase_attempts", 0))
        if result.status == "written":
            metadata["seconds_writing"] = round(result.seconds_writing, 3)
            metadata["seconds_committing"] = round(result.seconds_committing, 3)
            metadata["bytes_written"] = result.bytes_written
            context.log.info(f"region {region.id}: committed snapshot {result.snapshot_id}")
        else:
            context.log.info(
                f"region {region.id}: already committed for these parameters, inputs and code in "
                f"{result.snapshot_id}; nothing written, no commit made"
            )
        return metadata

    def load_input(self, context: InputContext) -> xr.Dataset:
        """The region of the partition (or the whole raster), lazily, from the branch tip."""
        repo = self.store.repository()
        session = repo.readonly_session(branch=self.store.branch)
        ds = xr.open_zarr(session.store, consolidated=False)
        if context.has_asset_partitions and len(context.asset_partition_keys) == 1:
            region = self.registry().get(context.asset_partition_keys[0])
            return cast(xr.Dataset, ds.isel(latitude=region.rows, longitude=region.cols))
        return cast(xr.Dataset, ds)

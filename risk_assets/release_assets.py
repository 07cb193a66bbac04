"""The pyramid and release assets: a complete version becomes what the web map reads.

Both are thin: the work is in :mod:`resources.release`. The reconciliation sensor requests
the release job once every region of the current version is committed on its branch.
"""

from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)

from resources.completeness import IncompleteVersionError
from resources.release import commit_pyramid, release
from resources.store import IcechunkStore
from resources.target import InputsResource, ModelParamsResource, current_target
from risk_assets.keys import PYRAMID_KEY, RASTER_KEY, RELEASE_KEY, STATUS_KEY
from risk_assets.status import recorded_not_committed
from risk_model.code_version import git_revision
from risk_model.errors import RiskError
from risk_model.grid import RegionRegistry
from risk_model.quicklook import png_markdown


def build_release_assets(registry: RegionRegistry) -> list[AssetsDefinition]:
    """``risk_pyramid`` and ``raster_release`` of one grid."""

    @asset(key=PYRAMID_KEY, deps=[RASTER_KEY], group_name="release")
    def risk_pyramid(
        context: AssetExecutionContext,
        store: ResourceParam[IcechunkStore],
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> MaterializeResult:  # type: ignore[type-arg]
        """Coarsened levels of the complete version for the web map, committed on its branch.

        The commit also records every region's commit (the ledger table), so the release
        that tags it carries its own lineage.
        """
        try:
            target = current_target(params, inputs, registry.ids)
            result = commit_pyramid(store, registry, target, context.run_id)
        except RiskError as err:
            raise Failure(description=str(err), allow_retries=False) from err
        return MaterializeResult(
            metadata={
                "status": "committed" if result.created else "already committed",
                "snapshot_id": result.snapshot_id,
                "raster_version": target.version.id,
                "branch": target.version.branch,
                "levels": MetadataValue.json([level.as_metadata() for level in result.levels]),
            }
        )

    @asset(key=RELEASE_KEY, deps=[risk_pyramid, STATUS_KEY], group_name="release")
    def raster_release(
        context: AssetExecutionContext,
        store: ResourceParam[IcechunkStore],
        params: ResourceParam[ModelParamsResource],
        inputs: ResourceParam[InputsResource],
    ) -> MaterializeResult:  # type: ignore[type-arg]
        """Tag the complete version, write its manifest and pictures, and promote ``main`` to it.

        (A scenario's release promotes its own readers' branch, ``main-<scenario>``.)
        """
        try:
            target = current_target(params, inputs, registry.ids)
            # Dagster's records against the commit log, as the release's third check.
            lost = recorded_not_committed(store, registry, target, context.instance)
            made = release(
                store,
                registry,
                target,
                run_id=context.run_id,
                git_revision=git_revision(),
                inputs=inputs.locations(),
                extra_checks={
                    "records_match_commit_log": {
                        "passed": not lost,
                        "description": "every region Dagster records as materialized is in the commit log",
                        "regions_failing": lost,
                    }
                },
            )
        except IncompleteVersionError as err:
            picture = (
                {"overview": MetadataValue.md(png_markdown(err.overview, "failing regions"))} if err.overview else {}
            )
            raise Failure(description=str(err), allow_retries=False, metadata=picture) from err
        except RiskError as err:
            raise Failure(description=str(err), allow_retries=False) from err
        manifest = made.manifest
        metadata: dict[str, Any] = {
            "tag": made.tag,
            "snapshot_id": made.snapshot_id,
            "promoted": made.promoted,
            "readers_branch": store.branch,
            "scenario": manifest["scenario"] or "default",
            "previous_release": made.previous_tag or "none",
            "raster_version": MetadataValue.json(manifest["raster_version"]),
            "params": MetadataValue.json(manifest["params"]),
            "inputs": MetadataValue.json(manifest["inputs"]),
            "code": MetadataValue.json(manifest["code"]),
            "checks": MetadataValue.json(manifest["checks"]),
            "regions": len(manifest["regions"]),
            # every region's commit and run, as in the manifest
            "region_lineage": MetadataValue.json(manifest["regions"]),
            "manifest": MetadataValue.path(made.files["manifest.json"]),
            "overview": MetadataValue.md(png_markdown(made.overview, f"overview of {made.tag}")),
        }
        if made.diff is not None and made.diff_picture is not None:
            metadata["diff"] = MetadataValue.md(png_markdown(made.diff_picture, f"risk change {made.previous_tag}"))
            metadata["diff_stats"] = MetadataValue.json(made.diff.as_metadata())
        context.log.info(f"released {made.tag} ({made.snapshot_id}); {store.branch} promoted: {made.promoted}")
        return MaterializeResult(metadata=metadata)

    return [risk_pyramid, raster_release]

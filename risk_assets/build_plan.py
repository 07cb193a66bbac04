"""What a build has to do, decided from the commit log and Dagster's records before any run.

Light to import on purpose (no xarray, rasterio or asset definitions): ``risk build`` decides
here whether anything is to be done before it loads any of that.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from resources.ledger import CommitRecord
    from resources.store import IcechunkStore
    from risk_model.versions import RasterVersion, Target


@dataclass(frozen=True)
class BuildPlan:
    """What a build has to do, read from the commit log and Dagster's records before any run."""

    version: "RasterVersion"
    #: the version's branch if its first region has started it, else the readers' branch
    branch: str
    #: whether the version's branch exists (its sources were observed and its template committed)
    started: bool
    #: regions not committed on ``branch`` for their current build key, in registry order
    missing: list[str]
    #: regions committed for their current build key that Dagster has no materialization of
    #: (empty when Dagster was not asked)
    unrecorded: dict[str, "CommitRecord"]
    #: whether the readers' branch holds the version, released
    released: bool
    #: the tip of ``branch`` that was read (``None``: a scenario's readers' branch not made yet)
    tip: str | None = None

    @property
    def nothing_to_run(self) -> bool:
        """Every region committed for its key and the version released: no run, no commit."""
        return not self.missing and self.released


def plan_build(
    store: "IcechunkStore",
    target: "Target",
    region_ids: list[str],
    instance: "DagsterInstance | None" = None,
) -> BuildPlan:
    """Decide from the commit log (and Dagster's records) what a build of ``target`` has to run.

    Reads the version branch's commit log once (down to its newest ledger table), the release
    tags and, given an ``instance``, Dagster's materialized partitions of the raster (without
    one, ``unrecorded`` is empty and Dagster is not even imported); launches nothing, writes nothing.
    """
    from resources.branches import branch_exists, is_released, working_branch
    from resources.ledger import committed_regions

    version = target.version
    keys = target.keys(region_ids)
    repo = store.repository()
    branch = working_branch(repo, store, version)
    tip = repo.lookup_branch(branch) if branch_exists(repo, branch) else None
    committed = committed_regions(repo, branch) if tip is not None else {}
    current = {rid: committed[rid] for rid in region_ids if rid in committed and committed[rid].key == keys[rid]}
    unrecorded: dict[str, CommitRecord] = {}
    if instance is not None:
        from risk_assets.keys import RASTER_KEY

        recorded = instance.get_materialized_partitions(RASTER_KEY)
        unrecorded = {rid: record for rid, record in current.items() if rid not in recorded}
    return BuildPlan(
        version=version,
        branch=branch,
        started=branch_exists(repo, version.branch),
        missing=[rid for rid in region_ids if rid not in current],
        unrecorded=unrecorded,
        released=is_released(repo, store.branch, version),
        tip=tip,
    )


def record_committed(instance: "DagsterInstance", plan: BuildPlan) -> int:
    """Record in Dagster, without a run, the regions committed for their key that it has no record of.

    The same runless materialization the reconciliation sensor reports: Dagster then shows every
    committed region as materialized, with the commit's snapshot id. Returns how many were recorded.
    """
    from risk_assets.keys import RASTER_KEY
    from risk_assets.reconcile import CommitEntry, reconciled_materialization

    for region, record in plan.unrecorded.items():
        instance.report_runless_asset_event(
            reconciled_materialization(RASTER_KEY, region, CommitEntry.of(record), plan.branch, by="risk build")
        )
    return len(plan.unrecorded)


def inputs_checked_on_branch(store: "IcechunkStore", target: "Target") -> bool:
    """Whether ``target``'s version branch holds a region committed from these very inputs.

    Such inputs passed the inputs check in that region's run (see
    :func:`resources.ledger.inputs_checked`): ``risk build`` does not read them again. ``False``
    when the repository or the branch does not exist, or cannot be read (the store check says why).
    """
    from resources.branches import branch_exists
    from resources.ledger import committed_regions, inputs_checked
    from risk_model.errors import RiskError

    try:
        repo = store.repository()
        if not branch_exists(repo, target.version.branch):
            return False
        records = committed_regions(repo, target.version.branch).values()
    except RiskError:
        return False
    return inputs_checked(records, target.inputs_version, target.code_version)

"""Predicting what snapshot expiry does to every ref's history, and so to its ledger.

What ``expire_snapshots`` does in icechunk 2.3.0 (measured with real local repositories)
-----------------------------------------------------------------------------------------
- Every branch tip and every tag tip is kept, whatever its age, with its snapshot id and its
  commit metadata unchanged; so are the root snapshot and every snapshot written at or after
  ``older_than``. Branches and tags are not deleted unless ``delete_expired_branches`` /
  ``delete_expired_tags`` are passed (we never pass them).
- History is rewritten in place: walking down from a ref's tip, the kept snapshots up to the
  first expired one stay, and the last of them gets the root as its parent. Everything below
  is gone from that ref's ancestry, including other refs' tips further down (a tag tip below
  an expired snapshot is no longer in ``main``'s ancestry, although the tag still reads it).
- Snapshots that are no longer in any ref's rewritten ancestry are the expired ones (the
  returned ids). ``lookup_snapshot`` and ``ancestry`` cannot find them any more right after
  expiry, before any garbage collection: their commit metadata, and with it the per-region
  commit records, is gone for good. Ledger entries still name their snapshot ids, as lineage.
- Data stays readable from every ref after expiry and after garbage collection with any
  cutoff: GC deletes only objects that no surviving snapshot references. Chunks overwritten
  by a later commit are deleted once the snapshots that referenced them are expired.
"""

from collections.abc import Iterator, Mapping
from datetime import datetime

import icechunk

from resources.ledger import LEDGER_KEY, CommitRecord, committed_regions
from risk_model.versions import BuildKey

#: One ledger as compared before and after maintenance: region -> (snapshot id, build key, run id).
Ledger = dict[str, tuple[str, BuildKey, str]]


def ledger_of(records: Mapping[str, CommitRecord]) -> Ledger:
    return {region: (r.snapshot_id, r.key, r.run_id) for region, r in records.items()}


def differences(before: Ledger, after: Ledger) -> list[str]:
    lines = []
    for region in sorted(before.keys() | after.keys()):
        old, new = before.get(region), after.get(region)
        if old != new:
            lines.append(f"{region}: {old} -> {new}")
    return lines


class SurvivingHistory:
    """Stands in for the repository in :func:`committed_regions`: history as it will be after expiry."""

    def __init__(self, chains: Mapping[str, list[icechunk.SnapshotInfo]]) -> None:
        self._chains = chains

    def ancestry(self, *, snapshot_id: str) -> Iterator[icechunk.SnapshotInfo]:
        return iter(self._chains[snapshot_id])


def plan_expiry(
    repo: icechunk.Repository, starts: Mapping[str, bool], older_than: datetime, pinned: set[str]
) -> tuple[dict[str, list[icechunk.SnapshotInfo]], set[str]]:
    """Predict ``expire_snapshots(older_than)`` from the semantics measured in icechunk 2.3.

    Parameters
    ----------
    repo
        The repository.
    starts
        Snapshot to walk down from -> whether it is itself kept (a ref tip). A branch about to
        get a checkpoint is walked from its current tip, which is then no longer a tip.
    older_than
        The expiry cutoff.
    pinned
        Tips of the refs after the checkpoints: never expired.

    Returns
    -------
    tuple[dict[str, list[icechunk.SnapshotInfo]], set[str]]
        Each start's surviving ancestry (without the root), and the ids that will be expired.
    """
    chains: dict[str, list[icechunk.SnapshotInfo]] = {}
    seen: set[str] = set()
    kept: set[str] = set()
    for start, start_kept in starts.items():
        chain: list[icechunk.SnapshotInfo] = []
        cut = False
        for info in repo.ancestry(snapshot_id=start):
            if cut and info.id in seen:
                break  # the rest of this history was walked from another start already
            seen.add(info.id)
            if info.parent_id is None:
                kept.add(info.id)  # the root is never expired
                break
            keep = (start_kept and info.id == start) or info.id in pinned or info.written_at >= older_than
            if keep and not cut:
                chain.append(info)
                kept.add(info.id)
            else:
                cut = True
        chains[start] = chain
    return chains, seen - kept


def has_ledger(repo: icechunk.Repository, snapshot_id: str) -> bool:
    return isinstance((repo.lookup_snapshot(snapshot_id).metadata or {}).get(LEDGER_KEY), dict)


def ledgers_of(repo: icechunk.Repository, refs: Mapping[str, str]) -> dict[str, Ledger]:
    return {ref: ledger_of(committed_regions(repo, snapshot_id=tip)) for ref, tip in refs.items()}


def refs_of(repo: icechunk.Repository) -> dict[str, str]:
    """Every ref (``branch:<name>``, ``tag:<name>``) -> its tip."""
    refs = {f"branch:{b}": repo.lookup_branch(b) for b in sorted(repo.list_branches())}
    refs.update({f"tag:{t}": repo.lookup_tag(t) for t in sorted(repo.list_tags())})
    return refs

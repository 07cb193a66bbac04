"""How much history has piled up since snapshot expiry last ran, read without walking history.

Icechunk 2.x keeps one repository file that lists every snapshot not yet expired and the
latest updates (up to ``num_updates_per_repo_info_file``, 1,000 by default; older updates are
in earlier repository files, each named by the one after it). Every commit rewrites that file,
so a commit costs more the more snapshots it lists (measured: ``docs/scale.md`` section 4).
Expiry removes the expired snapshots from the list; garbage collection does not shrink it.

:func:`history_since_expiry` reads the operations log (``Repository.ops_log``), newest first,
and counts the updates that added a snapshot until it meets the last expiry or ``limit``. It
never opens a snapshot: with ``limit`` under 1,000 it reads the one repository file every
session opens anyway, and at most ``limit // 1000 + 1`` files in all, however long history is.
"""

from dataclasses import dataclass
from datetime import datetime

import icechunk

#: Updates that add a snapshot to the repository file's list.
_SNAPSHOT_UPDATES = (
    icechunk.UpdateType.NewCommit,
    icechunk.UpdateType.CommitAmended,
    icechunk.UpdateType.NewDetachedSnapshot,
)


@dataclass(frozen=True)
class HistorySinceExpiry:
    """Snapshots added since the last snapshot expiry, as counted by :func:`history_since_expiry`.

    Attributes
    ----------
    snapshots
        Snapshots added (commits, amends, detached snapshots) since the last expiry, at most
        the ``limit`` counted.
    last_expiry
        When expiry last ran; ``None`` if it never ran or ran before the counted updates.
    complete
        Whether the count reached the last expiry (or the repository's creation); ``False``
        when it stopped at ``limit``.
    """

    snapshots: int
    last_expiry: datetime | None
    complete: bool


def history_since_expiry(repo: icechunk.Repository, *, limit: int) -> HistorySinceExpiry:
    """Count the snapshots added since snapshot expiry last ran, stopping at ``limit``.

    Parameters
    ----------
    repo
        The repository.
    limit
        Stop counting here (a positive number): the cost is bounded by it, not by history.

    Returns
    -------
    HistorySinceExpiry
        The count, when expiry last ran (if met), and whether the count is exact.

    Raises
    ------
    ValueError
        If ``limit`` is not positive.
    """
    if limit < 1:
        raise ValueError(f"limit must be a positive number of snapshots, got {limit}")
    count = 0
    for update in repo.ops_log():
        if isinstance(update.kind, icechunk.UpdateType.ExpirationRan):
            return HistorySinceExpiry(count, update.updated_at, complete=True)
        if isinstance(update.kind, _SNAPSHOT_UPDATES):
            count += 1
            if count >= limit:
                return HistorySinceExpiry(count, None, complete=False)
    return HistorySinceExpiry(count, None, complete=True)

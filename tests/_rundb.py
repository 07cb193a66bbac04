"""Read a project's Dagster run database while a build may still be creating it.

Not through a ``DagsterInstance``: opening one while the build's own instance is creating
the databases races it on their schemas ("table jobs already exists", seen in CI). A
read-only SQLite connection creates nothing and sees the tables once they exist.
"""

import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path

from dagster import DagsterRunStatus


def region_runs(home: Path, status: DagsterRunStatus) -> int:
    """How many region runs of the project have ``status``: runs with a ``dagster/partition`` tag (one
    region) or a partition range (a group of regions, as ``risk build`` and local backfills run them)."""
    runs_db = home / "history" / "runs.db"
    if not runs_db.exists():
        return 0
    with closing(sqlite3.connect(f"file:{runs_db}?mode=ro", uri=True, timeout=30)) as db:
        try:
            (count,) = db.execute(
                "SELECT count(DISTINCT runs.run_id) FROM runs JOIN run_tags ON run_tags.run_id = runs.run_id "
                "WHERE runs.status = ? AND run_tags.key IN "
                "('dagster/partition', 'dagster/asset_partition_range_start')",
                (status.value,),
            ).fetchone()
        except sqlite3.OperationalError:
            return 0  # the tables are not there yet
    return int(count)


def run_partitions(tags: Mapping[str, str], ordered: Sequence[str]) -> list[str]:
    """The partitions a run covers, from its tags: one (``dagster/partition``), or a range of
    ``ordered`` (a group of regions in one run, as local backfills and ``risk build`` launch them)."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    start = list(ordered).index(tags["dagster/asset_partition_range_start"])
    end = list(ordered).index(tags["dagster/asset_partition_range_end"])
    return list(ordered[start : end + 1])

"""A note that Dagster's records were complete at a commit-log tip: the no-op rerun then skips Dagster.

``risk build`` with nothing to do still has to record, as runless materializations, regions
that are committed but unknown to Dagster (committed by a worker that died before recording,
say). Asking Dagster costs its import (1-3 s), which is most of a rerun that does nothing. So
after every region of a released version is known to be recorded, the build writes this stamp:
the branch and tip it checked, and the state of the instance's event-log index (size and
modification time of the SQLite files, as the OS reports them). A later rerun that finds the
same tip and an index no one has written since knows the answer without asking: any new run,
materialization or wipe writes the index and voids the stamp. An instance not on SQLite under
``DAGSTER_HOME`` (Postgres) has no such files, and the rerun always asks.
"""

import json
import os
from pathlib import Path

#: The stamp, in the project's ``var/`` folder.
STAMP_NAME = "recorded.json"
#: Dagster's event-log index of a SQLite instance, relative to ``DAGSTER_HOME`` (with its WAL files).
INDEX_DB = Path("history") / "runs" / "index.db"


def index_state(dagster_home: Path) -> list[list[int]] | None:
    """Size and modification time (ns) of the instance's event-log index files; ``None`` without them."""
    index = dagster_home / INDEX_DB
    if not index.is_file():
        return None
    state = []
    for path in (index, index.with_name("index.db-wal")):
        if path.is_file():
            stat = path.stat()
            state.append([stat.st_size, stat.st_mtime_ns])
    return state


def stamp_matches(stamp_path: Path, dagster_home: Path, branch: str, tip: str) -> bool:
    """Whether Dagster recorded every region at ``tip`` of ``branch`` and its index has not changed since."""
    state = index_state(dagster_home)
    if state is None:
        return False
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return False  # none yet, or unreadable: ask Dagster
    return bool(stamp == {"branch": branch, "tip": tip, "index": state})


def write_stamp(stamp_path: Path, dagster_home: Path, branch: str, tip: str) -> None:
    """Note that Dagster recorded every region at ``tip`` of ``branch`` (call after its last write)."""
    state = index_state(dagster_home)
    if state is None:
        return
    stamp_path.parent.mkdir(parents=True, exist_ok=True)
    partial = stamp_path.with_name(f".{stamp_path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"branch": branch, "tip": tip, "index": state}))
    os.replace(partial, stamp_path)

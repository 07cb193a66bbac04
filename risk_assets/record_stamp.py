"""A note that Dagster's records were complete at a commit-log tip: the no-op rerun then skips Dagster.

``risk build`` with nothing to do still has to record, as runless materializations, regions
that are committed but unknown to Dagster (committed by a worker that died before recording,
say). Asking Dagster costs its import (1-3 s), which is most of a rerun that does nothing. So
after every region of a released version is known to be recorded, the build writes this stamp:
the version, the branch and tip it checked, and the state of the instance's event-log index
(size and modification time of the SQLite files, as the OS reports them). A later rerun that
finds the same tip and an index no one has written since knows the answer without asking: any
new run, materialization or wipe writes the index and voids the stamp. An instance not on SQLite
under ``DAGSTER_HOME`` (Postgres) has no such files, and the rerun always asks.

A local repository's stamp also holds the digest of its refs (:meth:`IcechunkStore.refs_digest`:
Icechunk's repository info file, rewritten by every commit and every branch or tag change, read
before the plan it vouches for). A rerun of the same version that finds the same digest has the
very commit log the stamp was written for, so the same answer, without opening the repository:
Icechunk is not even imported (about half a second, most of what such a rerun costs).
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


def _stamp(stamp_path: Path) -> dict[str, object] | None:
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        return None  # none yet, or unreadable: ask Dagster
    return stamp if isinstance(stamp, dict) else None


def _holds(stamp_path: Path, dagster_home: Path, **fields: str) -> bool:
    """Whether the stamp has these ``fields`` and Dagster's index has not changed since it was written."""
    state = index_state(dagster_home)
    stamp = _stamp(stamp_path)
    if state is None or stamp is None:
        return False
    return stamp.get("index") == state and all(stamp.get(name) == value for name, value in fields.items())


def stamp_matches(stamp_path: Path, dagster_home: Path, branch: str, tip: str) -> bool:
    """Whether Dagster recorded every region at ``tip`` of ``branch`` and its index has not changed since."""
    return _holds(stamp_path, dagster_home, branch=branch, tip=tip)


def stamp_answers(stamp_path: Path, dagster_home: Path, version: str, refs: str | None) -> bool:
    """Whether the stamp answers a rerun of ``version`` by itself: nothing to run, nothing to record.

    True when the stamp was written for this version at the same refs digest (so the same commit
    log: every region committed for its key and the version released) and Dagster's index has not
    changed since. ``refs`` ``None`` (an object store) never answers.
    """
    return refs is not None and _holds(stamp_path, dagster_home, version=version, refs=refs)


def write_stamp(
    stamp_path: Path, dagster_home: Path, branch: str, tip: str, *, version: str = "", refs: str | None = None
) -> None:
    """Note that Dagster recorded every region at ``tip`` of ``branch`` (call after its last write).

    ``version`` and ``refs`` (the refs digest read *before* the plan that found nothing to run)
    let a later rerun of that version answer from the stamp alone (:func:`stamp_answers`).
    """
    state = index_state(dagster_home)
    if state is None:
        return
    stamp_path.parent.mkdir(parents=True, exist_ok=True)
    partial = stamp_path.with_name(f".{stamp_path.name}.{os.getpid()}.partial")
    stamp = {"version": version, "branch": branch, "tip": tip, "refs": refs, "index": state}
    partial.write_text(json.dumps(stamp))
    os.replace(partial, stamp_path)

"""The local Dagster instance's SQLite databases: a damaged one is named, with what to do.

With the default storage (no ``storage:`` in ``dagster.yaml``), Dagster keeps its runs in
``history/runs.db``, its event log index in ``history/runs/index.db``, one event log per run in
``history/runs/<run id>.db`` and its schedules and sensors in ``schedules/schedules.db``, all
under ``DAGSTER_HOME``. A file cut short (a full disk, a copy interrupted, a crash of the file
system) makes every Dagster call fail deep inside SQLAlchemy with "database disk image is
malformed", which names no file. :func:`check_instance_databases` finds the damaged file first.
"""

import sqlite3
from contextlib import closing
from pathlib import Path

from risk_model.errors import BadInputError

#: The instance's shared databases, relative to ``DAGSTER_HOME``: checked before every build.
SHARED_DATABASES = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")


class InstanceDatabaseError(BadInputError):
    """A database of the local Dagster instance is damaged: nothing to retry until it is moved aside."""


def database_problem(path: Path) -> str | None:
    """Why SQLite cannot use ``path`` (its own words), or ``None`` if the quick check passes.

    A database locked by a writer is not damaged: ``None``.
    """
    try:
        # Not ``mode=ro``: a read-only connection cannot open a WAL database whose -shm file is gone.
        with closing(sqlite3.connect(path, timeout=5.0)) as connection:
            rows = connection.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError as err:
        return None if "locked" in str(err) else str(err)
    except sqlite3.DatabaseError as err:
        return str(err)
    answers = [str(row[0]) for row in rows]
    return None if answers == ["ok"] else "; ".join(answers[:3])


def damaged_databases(dagster_home: Path, every_run: bool = False) -> list[tuple[Path, str]]:
    """The instance's damaged SQLite databases under ``dagster_home``, with SQLite's reason.

    Parameters
    ----------
    dagster_home
        ``DAGSTER_HOME``.
    every_run
        Also check every run's event log (``history/runs/<run id>.db``), not only
        :data:`SHARED_DATABASES`.
    """
    paths = [dagster_home / name for name in SHARED_DATABASES]
    if every_run:
        paths += sorted(p for p in (dagster_home / "history" / "runs").glob("*.db") if p.name != "index.db")
    damaged = []
    for path in paths:
        if path.is_file():
            problem = database_problem(path)
            if problem is not None:
                damaged.append((path, problem))
    return damaged


def damaged_message(damaged: list[tuple[Path, str]]) -> str:
    """What to tell the user about damaged databases: which files, SQLite's reason, what to do."""
    files = "; ".join(f"{path} ({reason})" for path, reason in damaged)
    moves = " && ".join(f"mv {path} {path}.damaged" for path, _ in damaged)
    return (
        f"the Dagster instance's database is damaged: {files}. Stop every Dagster process and `risk` command "
        f"of this project, move the file aside ({moves}) and run again: Dagster starts an empty one. The "
        "raster store is not affected; the run history in that file is lost, and the next `risk build` "
        "records the committed regions again"
    )


def check_instance_databases(dagster_home: Path) -> None:
    """Refuse to start when a shared database of the instance is damaged (see :data:`SHARED_DATABASES`).

    Parameters
    ----------
    dagster_home
        ``DAGSTER_HOME``; databases that do not exist (a new project, another storage) are skipped.

    Raises
    ------
    InstanceDatabaseError
        Naming each damaged file, SQLite's reason and what to do.
    """
    damaged = damaged_databases(dagster_home)
    if damaged:
        raise InstanceDatabaseError(damaged_message(damaged))

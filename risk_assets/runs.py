"""Reading Dagster run results: why did a step fail, in words a person can act on."""

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dagster import DagsterEvent

from risk_model.errors import RiskError

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

#: ``Failure: `` and its module path, as Dagster's serialized errors and logs print it.
_FAILURE_PREFIX = re.compile(r"^\s*(?:dagster\._core\.definitions\.events\.)?Failure:\s*")
#: Errors of Dagster's instance database (PostgreSQL): the driver's, SQLAlchemy's and dagster-postgres's.
_DATABASE_ERRORS = frozenset({"OperationalError", "InterfaceError", "DagsterPostgresException"})
#: What psycopg2 and SQLAlchemy add to a connection error: a wrapper prefix, hints, a link.
_DB_NOISE = re.compile(r"^\((?:psycopg2|psycopg)\.\w+\)\s*|\s*\(Background on this error at: [^)]*\)")


class RunFailedError(RiskError):
    """A Dagster run failed; the message is the reason its last failed step gave.

    Not one of the three categories: the run's own failure already applied (or bypassed) the
    retry policy, so the caller reports the reason and stops.
    """


def user_reason(text: str) -> str:
    """``text`` without Dagster's ``dagster._core.definitions.events.Failure:`` prefix."""
    return _FAILURE_PREFIX.sub("", text.strip(), count=1)


def _database_sentence(chain: list[tuple[str, str]]) -> str | None:
    """A sentence for an error chain (``(class name, message)``, outermost first) that ends in an
    error of Dagster's database; ``None`` for any other chain.

    A run whose database went away (a PostgreSQL restart or failover longer than
    dagster-postgres's few seconds of connection retries) fails with
    ``DagsterPostgresException: too many retries for DB connection`` over SQLAlchemy's and
    psycopg2's ``OperationalError``: say that, with the driver's first line, and what to do.
    """
    database = [(name, message) for name, message in chain if name in _DATABASE_ERRORS]
    if not database:
        return None
    name, message = database[-1]
    message = re.sub(rf"^\s*(?:\w+\.)*{re.escape(name)}:\s*", "", message)
    lines = [line.strip() for line in _DB_NOISE.sub("", message.strip()).splitlines() if line.strip()]
    return (
        f"Dagster's database could not be reached ({lines[0] if lines else name}): the run stopped "
        "unfinished. Run the region again once the database is back; a region it committed already is "
        "skipped, not committed twice"
    )


def database_error_message(err: BaseException) -> str | None:
    """What to tell a person about ``err`` if it comes from Dagster's unreachable database, else ``None``.

    For exceptions raised outside any run (creating a run, reading its events) by
    dagster-postgres, SQLAlchemy or psycopg2; inside runs :func:`failure_reasons` says the same.

    Parameters
    ----------
    err
        Any exception; its ``__cause__`` / ``__context__`` chain is searched.

    Returns
    -------
    str | None
        The sentence, or ``None`` if no error of the chain is a database error.
    """
    chain: list[tuple[str, str]] = []
    current: BaseException | None = err
    while current is not None and len(chain) < 20:
        chain.append((type(current).__name__, str(current)))
        current = current.__cause__ or current.__context__
    return _database_sentence(chain)


def _serialized_chain(error: "SerializableErrorInfo") -> list[tuple[str, str]]:
    """``(class name, message)`` of ``error`` and its causes (or contexts), outermost first, at most 20."""
    chain: list[tuple[str, str]] = []
    current: SerializableErrorInfo | None = error
    while current is not None and len(chain) < 20:
        chain.append((current.cls_name or "", current.message))
        current = current.cause or current.context
    return chain


def _error_reason(error: "SerializableErrorInfo") -> str:
    """The innermost non-Dagster error of a chain: Dagster wraps user errors (``DagsterExecution...``)."""
    database = _database_sentence(_serialized_chain(error))
    if database is not None:
        return database
    while (error.cls_name or "").startswith("Dagster") and error.cause is not None:
        error = error.cause
    name = error.cls_name or "Error"
    # The serialized message repeats the class, with its module path: keep only its words.
    message = re.sub(rf"^\s*(?:\w+\.)*{re.escape(name)}:\s*", "", error.message).strip()
    if name == "Failure":
        return user_reason(message)
    return f"{name}: {message}"


def failure_reasons(events: Iterable[DagsterEvent]) -> list[str]:
    """The failure descriptions of the step and run failures among ``events``, oldest first.

    A ``dagster.Failure`` raised by our code carries its message as the description;
    any other exception is reported by its class and message (that of the user error under
    Dagster's wrappers). Dagster's ``Failure:`` prefix is dropped. A run that failed outside
    any step (its database went away, say) is reported by the run failure's own error; an
    error of Dagster's database is put in words (see :func:`database_error_message`).

    Parameters
    ----------
    events
        A run's events, e.g. ``ExecuteJobResult.all_events``.

    Returns
    -------
    list[str]
        One reason per failed step, then the run's own error when it carries one.
    """
    reasons = []
    for event in events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                reasons.append(user_reason(data.user_failure_data.description))
            elif data.error is not None:
                reasons.append(_error_reason(data.error))
        elif event.is_run_failure:
            # A run failure after failed steps carries no error of its own (the steps said why).
            run_error = event.job_failure_data.error
            if run_error is not None:
                reasons.append(_error_reason(run_error))
    return reasons


def failure_classes(events: Iterable[DagsterEvent]) -> set[str]:
    """The class names of every error in the chains of the step failures among ``events``.

    A typed error of ours raised under Dagster's wrappers or a ``Failure`` (``raise Failure(...)
    from err``) is among them: the caller can tell what kind of failure it was, not only its words.
    """
    names: set[str] = set()
    for event in events:
        if not event.is_step_failure or event.step_failure_data.error is None:
            continue
        error: SerializableErrorInfo | None = event.step_failure_data.error
        for _ in range(100):  # a cause chain is short; the bound only guards a cycle
            if error is None:
                break
            names.add(error.cls_name or "")
            error = error.cause or error.context
    return names - {""}


def run_failure(events: Iterable[DagsterEvent], what: str, run_id: str) -> RunFailedError:
    """The error to raise for a failed run: ``what`` (e.g. "preparing the raster failed") and the
    reason its last failed step gave (or the run id to look up)."""
    reasons = failure_reasons(events)
    return RunFailedError(f"{what}: {reasons[-1] if reasons else f'see run {run_id}'}")

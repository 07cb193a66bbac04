"""A run that lost Dagster's database says so in words: the message of ``risk build`` and of the tests.

The errors are real: dagster-postgres's connection retry against a port nothing listens on
raises what a run raised in ``test_postgres_restart.py`` when PostgreSQL stayed down longer
than that retry (``DagsterPostgresException: too many retries for DB connection`` over
SQLAlchemy's and psycopg2's ``OperationalError``).
"""

import pytest
import sqlalchemy
from _services import free_port
from dagster import DagsterEvent, DagsterEventType
from dagster._core.events import JobFailureData
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster_postgres.utils import DagsterPostgresException, retry_pg_connection_fn

from risk_assets.cli import _user_message
from risk_assets.runs import database_error_message, failure_reasons


def _lost_database() -> Exception:
    """The exception dagster-postgres raises when the database stays unreachable."""
    engine = sqlalchemy.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/dagster")
    with pytest.raises(DagsterPostgresException) as caught:
        retry_pg_connection_fn(engine.connect, retry_limit=1, retry_wait=0.01)
    return caught.value


def _check(reason: str) -> None:
    assert reason.startswith("Dagster's database could not be reached (connection to server at"), reason
    assert "Connection refused" in reason
    assert "Run the region again once the database is back" in reason
    for noise in ("Traceback", "psycopg2", "sqlalchemy", "sqlalche.me", "\n"):
        assert noise not in reason, f"{noise!r} in {reason!r}"


def test_a_run_failure_from_an_unreachable_database_is_put_in_words() -> None:
    err = _lost_database()
    assert type(err).__name__ == "DagsterPostgresException"
    assert err.__traceback__ is not None
    event = DagsterEvent(
        event_type_value=DagsterEventType.RUN_FAILURE.value,
        job_name="build_region",
        event_specific_data=JobFailureData(
            error=serializable_error_info_from_exc_info((type(err), err, err.__traceback__))
        ),
    )
    [reason] = failure_reasons([event])
    _check(reason)


def test_the_cli_reports_an_unreachable_database_without_a_traceback() -> None:
    err = _lost_database()
    message = _user_message(err)
    assert message is not None, "not treated as a bug"
    _check(message)
    assert database_error_message(ValueError("no database here")) is None
    assert _user_message(ValueError("a bug")) is None, "anything else keeps its traceback"


def test_a_run_failure_after_failed_steps_adds_nothing() -> None:
    event = DagsterEvent(
        event_type_value=DagsterEventType.RUN_FAILURE.value,
        job_name="build_region",
        event_specific_data=JobFailureData(error=None),
    )
    assert failure_reasons([event]) == []

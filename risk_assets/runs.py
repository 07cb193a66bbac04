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


class RunFailedError(RiskError):
    """A Dagster run failed; the message is the reason its last failed step gave.

    Not one of the three categories: the run's own failure already applied (or bypassed) the
    retry policy, so the caller reports the reason and stops.
    """


def user_reason(text: str) -> str:
    """``text`` without Dagster's ``dagster._core.definitions.events.Failure:`` prefix."""
    return _FAILURE_PREFIX.sub("", text.strip(), count=1)


def _error_reason(error: "SerializableErrorInfo") -> str:
    """The innermost non-Dagster error of a chain: Dagster wraps user errors (``DagsterExecution...``)."""
    while (error.cls_name or "").startswith("Dagster") and error.cause is not None:
        error = error.cause
    name = error.cls_name or "Error"
    # The serialized message repeats the class, with its module path: keep only its words.
    message = re.sub(rf"^\s*(?:\w+\.)*{re.escape(name)}:\s*", "", error.message).strip()
    if name == "Failure":
        return user_reason(message)
    return f"{name}: {message}"


def failure_reasons(events: Iterable[DagsterEvent]) -> list[str]:
    """The failure descriptions of the step failures among ``events``, oldest first.

    A ``dagster.Failure`` raised by our code carries its message as the description;
    any other exception is reported by its class and message (that of the user error under
    Dagster's wrappers). Dagster's ``Failure:`` prefix is dropped.
    """
    reasons = []
    for event in events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            reasons.append(user_reason(data.user_failure_data.description))
        elif data.error is not None:
            reasons.append(_error_reason(data.error))
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

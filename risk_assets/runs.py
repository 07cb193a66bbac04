"""Reading Dagster run results: why did a step fail, in words a person can act on."""

from collections.abc import Iterable

from dagster import DagsterEvent


def failure_reasons(events: Iterable[DagsterEvent]) -> list[str]:
    """The failure descriptions of the step failures among ``events``, oldest first.

    A ``dagster.Failure`` raised by our code carries its message as the description;
    any other exception is reported by its class and message.
    """
    reasons = []
    for event in events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            reasons.append(data.user_failure_data.description)
        elif data.error is not None:
            reasons.append(f"{data.error.cls_name}: {data.error.message.strip()}")
    return reasons

"""Dagster jobs for the liveness tests, run by module name in subprocesses: ``python _liveness_jobs.py JOB``.

Each job's one op claims a slot of the ``icechunk_writers`` pool, as region steps do.
"""

import sys
import time

from dagster import DagsterInstance, OpExecutionContext, execute_job, job, op, reconstructable

from risk_assets.liveness import liveness_tags


@op(pool="icechunk_writers")
def hold_a_writer_slot(context: OpExecutionContext) -> None:
    """Hold the slot long enough to be killed while holding it."""
    context.log.info("holding a writer slot")
    time.sleep(120)


@op(pool="icechunk_writers")
def take_a_writer_slot() -> None:
    """Need a slot, and finish at once."""


@job
def slow_writer() -> None:
    hold_a_writer_slot()


@job
def quick_writer() -> None:
    take_a_writer_slot()


if __name__ == "__main__":
    target = {"slow_writer": slow_writer, "quick_writer": quick_writer}[sys.argv[1]]
    with DagsterInstance.get() as instance:
        result = execute_job(reconstructable(target), instance=instance, tags=liveness_tags())
    sys.exit(0 if result.success else 1)

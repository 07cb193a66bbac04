"""The region runs of ``risk build``: worker processes, one Dagster run per group of regions.

A worker runs the region job in its own process (``execute_job``), so a group of neighbouring
regions costs one run; Ctrl-C is noted between runs and stops the run it lands in.
"""

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Dagster's console logs of the build's runs: warnings and up (the progress bar shows the rest).
QUIET_RUN_CONFIG: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def send_stderr_to(log_path: str) -> None:
    """Send this process's stderr (and its children's) to ``log_path``.

    Dagster's step processes log to stderr before any run config applies; in the log file
    those lines stay available without scrolling the progress bar away.
    """
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


#: Set in a region worker when Ctrl-C reached it outside a region run (see :func:`init_worker`).
_interrupted = False


def note_interrupt(signum: int, frame: object) -> None:
    """SIGINT handler of a region worker between runs: remember it, start no further region."""
    global _interrupted
    _interrupted = True


def init_worker(log_path: str) -> None:
    """Set up a region worker process: stderr to the log, and Ctrl-C noted rather than fatal.

    Ctrl-C reaches the build's whole process group. A worker between region runs only notes it
    (dying, it would break the pool while the build cancels what is left) and starts no region
    after it, including one already queued to it. A worker inside a region run has Dagster's
    handler meanwhile (Dagster replaces it for the run), which stops the run and records it as
    failed; a region commits whole or not at all.
    """
    send_stderr_to(log_path)
    signal.signal(signal.SIGINT, note_interrupt)


@contextmanager
def stderr_to(log_path: Path) -> Iterator[None]:
    """Within the block, stderr goes to ``log_path``; restored afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        send_stderr_to(str(log_path))
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


#: Failures after which every other region would fail the same way: the build stops launching regions.
STOP_THE_BUILD = frozenset({"StoreFullError"})


#: What one region came to in a build: its id, success, status (``written``, ``skipped``, ``not
#: started: ...`` or ``failed: <reason>``) and whether the failure is one of :data:`STOP_THE_BUILD`.
RegionOutcome = tuple[str, bool, str, bool]


def run_regions(region_ids: list[str]) -> list[RegionOutcome]:
    """Run the region job for a group of partitions (in a worker process): one run, one commit per region.

    ``region_ids`` is a contiguous range of the registry (a Dagster partition range), or one region.

    Returns
    -------
    list
        One :data:`RegionOutcome` per region, in order. A failed run fails every region of it that
        recorded no materialization (regions it committed before failing stay committed; the next
        build records them without running them again).
    """
    global _interrupted
    from dagster import DagsterInstance, execute_job, reconstructable

    from risk_assets.definitions import region_job
    from risk_assets.liveness import liveness_tags
    from risk_assets.runs import failure_classes, failure_reasons

    if _interrupted:
        return [(rid, False, "not started: the build was interrupted (Ctrl-C)", False) for rid in region_ids]
    if len(region_ids) == 1:
        partition_tags = {"dagster/partition": region_ids[0]}
    else:
        partition_tags = {
            "dagster/asset_partition_range_start": region_ids[0],
            "dagster/asset_partition_range_end": region_ids[-1],
        }
    with DagsterInstance.get() as instance:
        result = execute_job(
            reconstructable(region_job),
            instance=instance,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
            tags={**partition_tags, "risk/launched_by": "risk build", **liveness_tags()},
        )
        statuses: dict[str, str] = {}
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            if materialization.partition is not None and "status" in materialization.metadata:
                statuses[materialization.partition] = str(materialization.metadata["status"].value)
        if result.success:
            return [(rid, True, statuses.get(rid, "failed"), False) for rid in region_ids]
        reasons = failure_reasons(result.all_events)
        failed = "failed: " + (reasons[-1] if reasons else f"see run {result.run_id}")
        classes = failure_classes(result.all_events)
        stop = bool(classes & STOP_THE_BUILD)
        if "DagsterExecutionInterruptedError" in classes:
            # Ctrl-C reached the run (Dagster stopped it, and swallowed the signal): no further group.
            _interrupted = True
        return [
            (rid, True, statuses[rid], False) if rid in statuses else (rid, False, failed, stop) for rid in region_ids
        ]


def region_groups(ordered: list[str], todo: list[str], size: int) -> list[list[str]]:
    """``todo`` cut into runs of at most ``size`` regions, each a contiguous range of ``ordered``.

    A Dagster run of several partitions takes a range of the partitions' order, so regions that
    are not to run never sit between two of a group: a region already built is never run again
    because its neighbours were missing.
    """
    wanted = set(todo)
    groups: list[list[str]] = []
    current: list[str] = []
    for region_id in ordered:
        if region_id in wanted and len(current) < size:
            current.append(region_id)
            continue
        if current:
            groups.append(current)
        current = [region_id] if region_id in wanted else []
    if current:
        groups.append(current)
    return groups


def interrupted() -> bool:
    """Whether Ctrl-C reached this process's region runs (see :func:`init_worker`)."""
    return _interrupted

"""Runs whose process is gone: found, marked failed, and their pool slots freed.

``risk build`` executes its runs in its own processes, not through a run launcher, so no
daemon watches them. If the build is killed as a whole (its process group SIGKILLed, as a
pod eviction, an OOM kill or a machine restart does), its runs stay ``STARTED`` in the
instance and keep the ``icechunk_writers`` pool slots they claimed: every later build would
wait for those slots forever. So each run the build starts carries a liveness record in its
tags (host, boot, process id and the process's start time), and before anything else the
next build, and the reconciliation sensor, mark the runs whose process is gone as failed and
free their slots.

Runs launched by a run launcher (the daemon locally, dagster-k8s in production) carry no
such record: there Dagster's run monitoring does the same job (``run_monitoring`` in
``dagster.yaml`` and the Helm values, with ``free_slots_after_run_end_seconds``).
"""

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

HOST_TAG = "risk/host"
BOOT_TAG = "risk/boot"
PID_TAG = "risk/pid"
PID_START_TAG = "risk/pid_start"

#: A run in one of these states has a live process, or had one that died.
_LIVE_STATES = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def _boot_id() -> str:
    """This machine's boot id: after a restart every recorded process is gone."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""  # not Linux: fall back to the process check alone


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or ``None`` if there is no such process.

    With the pid alone, a recycled pid would make a dead run look alive.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        # no /proc (not Linux): whether the pid exists is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""  # exists, owned by someone else
        return ""
    # the command name (field 2) may hold spaces: count fields after its closing parenthesis
    return stat.rsplit(")", 1)[1].split()[19]


def liveness_tags() -> dict[str, str]:
    """Tags recording this process as the one executing a run."""
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        BOOT_TAG: _boot_id(),
        PID_TAG: str(pid),
        PID_START_TAG: _start_time(pid) or "",
    }


def _is_gone(tags: dict[str, str]) -> bool:
    """Whether the process a run's liveness tags record has ended (on this host)."""
    if tags.get(BOOT_TAG, "") != _boot_id():
        return True
    start = _start_time(int(tags[PID_TAG]))
    return start is None or (start != "" and start != tags.get(PID_START_TAG, ""))


@dataclass(frozen=True)
class DeadRun:
    """A run that was marked failed because its process is gone."""

    run_id: str
    job_name: str
    partition: str | None
    pid: str


def reap_dead_runs(instance: DagsterInstance) -> list[DeadRun]:
    """Mark the runs of this host whose process is gone as failed and free their pool slots.

    Only runs carrying :func:`liveness_tags` of this host are looked at: a run of another
    machine, or one launched by a run launcher, is left to Dagster's run monitoring.

    Returns
    -------
    list[DeadRun]
        The runs that were cleaned up (empty when there were none).
    """
    host = socket.gethostname()
    runs = instance.get_runs(filters=RunsFilter(statuses=_LIVE_STATES, tags={HOST_TAG: host}))
    dead = []
    for run in runs:
        if PID_TAG not in run.tags or not _is_gone(dict(run.tags)):
            continue
        pid = run.tags[PID_TAG]
        instance.report_run_failed(
            run,
            f"process {pid} on {host} that executed this run is gone (its build was killed or the "
            "machine restarted); marked failed so that its pool slots are freed",
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        dead.append(DeadRun(run.run_id, run.job_name, run.tags.get("dagster/partition"), pid))
    return dead


def describe(dead: list[DeadRun]) -> str:
    """One line saying what :func:`reap_dead_runs` cleaned up."""
    runs = ", ".join(f"{d.run_id[:8]} ({d.partition or d.job_name})" for d in dead)
    return (
        f"cleaned up {len(dead)} run(s) of an earlier build whose process is gone (marked failed, "
        f"pool slots freed): {runs}"
    )

"""The ``history_maintenance`` sensor: snapshot expiry by itself once history has grown.

Every commit rewrites Icechunk's repository file, which lists every snapshot not yet expired, so
commit latency grows with history until expiry shortens the list (``docs/scale.md`` section 4).
When the snapshots added since the last expiry reach a threshold (counted from the operations
log, :func:`resources.history.history_since_expiry`, without walking history), the sensor
requests the ``maintain_repository`` job (:mod:`risk_assets.maintenance_job`) with checkpoint +
expiry and no garbage collection, and with the run check limited to other maintenance runs: a
build that runs for days would otherwise never let it in. The store's leases still keep it from
running beside a live writer (it waits for a gap, new writers wait meanwhile), and the
checkpoints keep every ref's ledger (:mod:`resources.maintenance`).
"""

from datetime import UTC, datetime

from dagster import (
    DefaultSensorStatus,
    JobDefinition,
    ResourceParam,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from resources.history import HistorySinceExpiry, history_since_expiry
from resources.store import IcechunkStore
from risk_assets.maintenance_job import MAINTENANCE_JOB, MaintenanceConfig, active_writer_runs
from risk_model.errors import RiskError

#: Name of the sensor that requests maintenance when history grows (see :func:`build_history_sensor`).
HISTORY_SENSOR = "history_maintenance"

#: How many threshold multiples the sensor counts before it stops counting (the count's cost is
#: bounded by it, :func:`resources.history.history_since_expiry`).
HISTORY_COUNT_LIMIT = 20


def history_run_key(since: HistorySinceExpiry, threshold: int, now: datetime) -> str | None:
    """The run key of the maintenance run to request for this much history, or ``None`` for none yet.

    One key per expiry epoch and attempt: the first request when ``threshold`` snapshots were
    added since the last expiry, then again at 2, 4, 8 and 16 times ``threshold`` if that
    maintenance did not happen (it failed or was refused), so a failing maintenance is not
    requested on every tick. Past the counting limit (``since.complete`` false: the last
    expiry, if any, was not reached), once an hour.

    Parameters
    ----------
    since
        The snapshots added since the last expiry.
    threshold
        How many snapshots since the last expiry call for maintenance (positive).
    now
        The time of the evaluation (only used past the counting limit).

    Returns
    -------
    str | None
        A deterministic run key, or ``None`` while history is below the threshold.
    """
    if since.snapshots < threshold:
        return None
    if not since.complete:
        return f"history:over-limit:{now.astimezone(UTC):%Y-%m-%dT%H}"
    epoch = since.last_expiry.isoformat() if since.last_expiry is not None else "never-expired"
    attempt = (since.snapshots // threshold).bit_length()  # 1 at 1x, 2 from 2x, 3 from 4x, ...
    return f"history:{epoch}:{attempt}"


def history_run_config(keep_hours: float, wait_for_writers_s: float) -> dict[str, object]:
    """Run configuration of the automatic maintenance: checkpoint and expire, no garbage collection.

    Expiry is what shortens the repository file (and so every commit); garbage collection only
    frees storage, and lists every object in the store while it holds the maintenance lock,
    keeping writers waiting: that is left to the ``maintain_repository`` runs launched by hand
    (or on a schedule) when no build is running.
    """
    config = MaintenanceConfig(
        expire_older_than_days=keep_hours / 24,
        garbage_collect=False,
        refuse_while_writer_runs=False,
        wait_for_writers_s=wait_for_writers_s,
    )
    return {"ops": {"maintain_store": {"config": config.model_dump()}}}


def build_history_sensor(
    maintenance_job: JobDefinition,
    *,
    threshold: int,
    keep_hours: float,
    wait_for_writers_s: float = 600.0,
    minimum_interval_seconds: int = 60,
) -> SensorDefinition:
    """The sensor that requests ``maintain_repository`` when history since the last expiry reaches ``threshold``.

    Each tick reads the operations log of the repository (``store`` resource) newest first,
    at most ``HISTORY_COUNT_LIMIT * threshold`` updates and never a snapshot
    (:func:`resources.history.history_since_expiry`), and skips while a maintenance run is
    queued or in progress. The run it requests checkpoints the ledger and expires every
    snapshot older than ``keep_hours`` (:func:`history_run_config`), so that commits list at
    most about ``threshold`` snapshots plus those of the last ``keep_hours``.

    Parameters
    ----------
    maintenance_job
        The ``maintain_repository`` job (:func:`build_maintenance_job`).
    threshold
        Snapshots added since the last expiry that call for maintenance (positive).
    keep_hours
        Snapshots younger than this are kept (non-negative); 0 keeps only ref tips, releases
        and the ledger.
    wait_for_writers_s
        How long the maintenance run waits for live writers before refusing.
    minimum_interval_seconds
        Minimum seconds between two ticks.

    Raises
    ------
    ValueError
        If ``threshold`` is not positive or ``keep_hours`` is negative.
    """
    if threshold < 1:
        raise ValueError(f"the history threshold must be a positive number of commits, got {threshold}")
    if keep_hours < 0:
        raise ValueError(f"keep_hours must not be negative, got {keep_hours}")
    run_config = history_run_config(keep_hours, wait_for_writers_s)

    @sensor(
        name=HISTORY_SENSOR,
        job=maintenance_job,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description=(
            f"Requests maintain_repository (ledger checkpoint + expiry of snapshots older than {keep_hours:g} h, "
            f"no garbage collection) when {threshold} snapshots were added since the last expiry, so commit "
            "latency does not grow with history."
        ),
    )
    def history_maintenance(
        context: SensorEvaluationContext, store: ResourceParam[IcechunkStore]
    ) -> RunRequest | SkipReason:
        try:
            repo = store.repository()
        except RiskError as err:
            return SkipReason(f"cannot count history: {err}")
        since = history_since_expiry(repo, limit=HISTORY_COUNT_LIMIT * threshold)
        counted = f"{since.snapshots}{'' if since.complete else '+'} snapshots since the last expiry"
        run_key = history_run_key(since, threshold, datetime.now(UTC))
        if run_key is None:
            return SkipReason(f"{counted}; maintenance at {threshold}")
        running = active_writer_runs(context.instance, writer_job_names=[MAINTENANCE_JOB], writer_asset_keys=())
        if running:
            return SkipReason(f"{counted}; waiting for {running[0].describe()}")
        return RunRequest(
            run_key=run_key,
            run_config=run_config,
            tags={"risk/kind": "maintenance", "risk/trigger": "history", "risk/snapshots": str(since.snapshots)},
        )

    return history_maintenance

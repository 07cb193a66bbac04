"""Dagster runs executed in spawned worker processes, on the instance of ``DAGSTER_HOME``."""


def run_job(job: str, partition: str | None = None) -> tuple[str | None, bool, str]:
    """Execute ``prepare_job`` or ``region_job`` of ``risk_assets.definitions``; return its outcome."""
    from dagster import DagsterInstance, execute_job, reconstructable

    from risk_assets import definitions
    from risk_assets.runs import failure_reasons

    target = {"prepare": definitions.prepare_job, "region": definitions.region_job}[job]
    tags = {"dagster/partition": partition} if partition else {}
    with DagsterInstance.get() as instance:
        result = execute_job(reconstructable(target), instance=instance, tags=tags, raise_on_error=False)
        return partition, result.success, "; ".join(failure_reasons(result.all_events)) or result.run_id

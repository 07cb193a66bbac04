"""Dagster runs executed in spawned worker processes, on the instance of ``DAGSTER_HOME``."""

from urllib.parse import urlsplit


def instance_yaml(url: str) -> dict[str, object]:
    """A Dagster instance on the database of ``url``, shaped as the Helm values produce it."""
    parts = urlsplit(url)
    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "hostname": parts.hostname,
                    "port": parts.port,
                    "username": parts.username,
                    "password": parts.password or "",
                    "db_name": parts.path.lstrip("/"),
                    "scheme": "postgresql+psycopg2",
                }
            }
        },
        "concurrency": {"pools": {"default_limit": 4}},
        "run_retries": {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False},
        "telemetry": {"enabled": False},
    }


def run_job(job: str, partition: str | None = None) -> tuple[str | None, bool, str]:
    """Execute ``prepare_job`` or ``region_job`` of ``risk_assets.definitions``; return its outcome."""
    from dagster import DagsterInstance, execute_job, reconstructable

    from risk_assets import definitions
    from risk_assets.runs import database_error_message, failure_reasons

    target = {"prepare": definitions.prepare_job, "region": definitions.region_job}[job]
    tags = {"dagster/partition": partition} if partition else {}
    try:
        with DagsterInstance.get() as instance:
            result = execute_job(reconstructable(target), instance=instance, tags=tags, raise_on_error=False)
            return partition, result.success, "; ".join(failure_reasons(result.all_events)) or result.run_id
    except Exception as err:
        # Raised outside the run (creating it, reading its events): reported as `risk build` does.
        message = database_error_message(err)
        if message is None:
            raise
        return partition, False, message

"""Our instance configurations, validated by Dagster's own config schemas; deployment settings.

The rendered ``dagster.yaml`` goes through ``dagster_instance_config`` (the instance schema and its
cross-section rules, e.g. run limits under ``concurrency.runs`` exclude them on the run
coordinator), then each configurable class section (run, event log and schedule storage,
scheduler, run coordinator, run launcher, compute logs) is checked against the ``config_type()``
of the class it names, as Dagster does when it instantiates it. The run queue limits are then
computed the way the daemon does (``ConcurrencyConfig.from_concurrency_settings`` over the run
coordinator's own queue configuration).
"""

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helm import ENVIRONMENTS, chart_with_dependency, instance_config, render
from _services import ROOT, helm_binary
from dagster import AssetKey, in_process_executor
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import ConcurrencyConfig, dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes.config_class import ConfigurableClassData
from dagster_k8s import k8s_job_executor
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY

from resources.cloud_stores import GCSIcechunkStore, S3IcechunkStore
from resources.local_store import LocalIcechunkStore
from risk_assets.assets import WRITER_POOL
from risk_assets.definitions import REGION_RUN_TAG, build_definitions
from risk_assets.deployment import (
    K8S_CONFIG_TAG,
    LOCAL_REGIONS_PER_RUN,
    DeploymentConfigError,
    deployment_from_env,
    region_resources,
    store_from_config,
)
from risk_assets.settings import Settings

#: (max concurrent runs, of which region runs) per environment
RUN_LIMITS = {"staging": (8, 6), "production": (24, 20)}
#: concurrent region commits (pool icechunk_writers), every environment
WRITER_LIMIT = 10


def _check_class_data(data: ConfigurableClassData | None) -> str:
    """Validate one section against its class's schema, as ``rehydrate`` does, without instantiating.

    (Instantiating would contact a cluster, Postgres or GCS.) Returns the class name.
    """
    assert data is not None
    klass = getattr(importlib.import_module(data.module_name), data.class_name)
    result = process_config(klass.config_type(), data.config_dict)
    assert result.success, [e.message for e in result.errors or []]
    return data.class_name


def _validate(config: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], InstanceRef]:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    validated, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    # Dagster's own reading of the file: which class each section names (legacy module paths
    # such as dagster.core.* resolved), with its config.
    ref = InstanceRef.from_dir(str(tmp_path))
    for data in (ref.run_coordinator_data, ref.run_launcher_data, ref.compute_logs_data):
        _check_class_data(data)
    return dict(validated), ref


def _run_queue(ref: InstanceRef) -> ConcurrencyConfig:
    """The run queue and pool limits the daemon applies (``DagsterInstance.get_concurrency_config``)."""
    coordinator = ref.run_coordinator_data
    assert coordinator is not None
    queued = coordinator.rehydrate(QueuedRunCoordinator)  # cheap: no storage, no network
    return ConcurrencyConfig.from_concurrency_settings(
        ref.settings.get("concurrency", {}), queued.get_run_queue_config()
    )


def test_local_instance_config_is_valid_and_retries_infrastructure_only(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    validated, ref = _validate(config, tmp_path)
    assert validated["run_coordinator"]["class"] == "QueuedRunCoordinator"
    queue = _run_queue(ref).run_queue_config
    assert queue is not None and queue.max_concurrent_runs > 0
    assert validated["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert "storage" not in config, "the local default is SQLite under DAGSTER_HOME"
    # a daemon-launched run that died still gives its writer slots back
    assert ref.settings["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chart_with_dependency(tmp_path_factory.mktemp("chart"))


@pytest.fixture(autouse=True)
def _pg_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # In the pods this comes from the secret named by global.postgresqlSecretName.
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-secret")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_helm_instance_config_is_valid_for_dagster(tmp_path: Path, chart: Path, environment: str) -> None:
    config = instance_config(render(helm_binary(), chart, environment))
    validated, ref = _validate(config, tmp_path)
    classes = {
        section: _check_class_data(data)
        for section, data in {
            "run_storage": ref.run_storage_data,
            "event_log_storage": ref.event_storage_data,
            "schedule_storage": ref.schedule_storage_data,
            "scheduler": ref.scheduler_data,
            "run_coordinator": ref.run_coordinator_data,
            "run_launcher": ref.run_launcher_data,
            "compute_logs": ref.compute_logs_data,
        }.items()
    }
    assert classes == {
        "run_storage": "PostgresRunStorage",
        "event_log_storage": "PostgresEventLogStorage",
        "schedule_storage": "PostgresScheduleStorage",
        "scheduler": "DagsterDaemonScheduler",
        "run_coordinator": "QueuedRunCoordinator",
        "run_launcher": "K8sRunLauncher",
        "compute_logs": "GCSComputeLogManager",
    }
    for section in ("run_storage", "event_log_storage", "schedule_storage"):
        db = validated[section]["config"]["postgres_db"]
        assert db["scheme"] == "postgresql+psycopg2" and db["params"] == {"sslmode": "require"}
        assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    project = {"staging": "wildfire-risk-staging", "production": "wildfire-risk-prod"}[environment]
    assert validated["compute_logs"]["config"]["bucket"] == f"{project}-logs"
    assert validated["run_launcher"]["config"]["service_account_name"] == "wildfire-risk"
    assert ref.settings["run_monitoring"]["enabled"] is True
    assert ref.settings["run_monitoring"]["start_timeout_seconds"] == 600
    # a preempted pod's writer slots are given back, or the writers after it wait forever
    assert ref.settings["run_monitoring"]["free_slots_after_run_end_seconds"] == 60
    assert ref.settings["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert ref.settings["telemetry"] == {"enabled": False}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_run_and_pool_limits_as_the_daemon_sees_them(tmp_path: Path, chart: Path, environment: str) -> None:
    config = instance_config(render(helm_binary(), chart, environment))
    # the run coordinator carries no limit of its own (Dagster refuses one beside concurrency.runs)
    assert "max_concurrent_runs" not in config["run_coordinator"].get("config", {})
    _, ref = _validate(config, tmp_path)
    concurrency = _run_queue(ref)
    queue = concurrency.run_queue_config
    assert queue is not None
    max_runs, region_runs = RUN_LIMITS[environment]
    assert queue.max_concurrent_runs == max_runs
    [(key, value)] = REGION_RUN_TAG.items()
    assert queue.tag_concurrency_limits == [{"key": key, "value": value, "limit": region_runs}]
    # region runs always leave slots for release, observation and maintenance runs
    assert region_runs < max_runs
    # pool icechunk_writers has no explicit limit: the default one applies to it
    assert WRITER_POOL == "icechunk_writers"
    assert concurrency.pool_config.default_pool_limit == WRITER_LIMIT


def test_concurrency_through_additional_instance_config_is_refused(tmp_path: Path, chart: Path) -> None:
    """Negative control (dagster#31086): the previous values passed run limits through
    additionalInstanceConfig; the chart then also writes max_concurrent_runs: -1 on the run
    coordinator, and Dagster refuses the instance."""
    old = tmp_path / "old.yaml"
    old.write_text(
        yaml.safe_dump(
            {
                "dagster": {
                    "concurrency": {"enabled": False},
                    "additionalInstanceConfig": {"concurrency": {"runs": {"max_concurrent_runs": 24}}},
                }
            }
        )
    )
    config = instance_config(render(helm_binary(), chart, "production", "-f", str(old)))
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == -1
    (tmp_path / "instance").mkdir()
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        _validate(config, tmp_path / "instance")


def test_a_bad_instance_config_is_caught(tmp_path: Path) -> None:
    """Negative control: the same validation rejects a misspelled run launcher field."""
    data = ConfigurableClassData("dagster_k8s", "K8sRunLauncher", yaml.safe_dump({"run_k8s_confg": {}}))
    with pytest.raises(AssertionError, match="run_k8s_confg"):
        _check_class_data(data)


def test_tag_key_matches_dagster_k8s() -> None:
    assert K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY


def test_region_resources_follow_the_region_size() -> None:
    production = region_resources((6000, 4500))
    # the measured 1,375 MiB peak plus headroom fits in the request, and is not wildly above it
    assert 1375 * 2**20 * 1.25 < production.memory_bytes < 3 * 2**30
    assert production.cpu_millis == 1000
    demo = region_resources((256, 256))
    assert demo.memory_bytes < 1 * 2**30 and demo.cpu_millis == 250
    assert production.as_k8s()["limits"]["memory"] == production.as_k8s()["requests"]["memory"]


def test_store_kind_selects_the_subclass() -> None:
    assert isinstance(store_from_config({"kind": "local", "path": "/tmp/x"}), LocalIcechunkStore)
    s3 = store_from_config({"kind": "s3", "bucket": "b", "prefix": "p", "endpoint_url": "http://127.0.0.1:9"})
    assert isinstance(s3, S3IcechunkStore) and s3.endpoint_url == "http://127.0.0.1:9"
    gcs = store_from_config({"kind": "gcs", "bucket": "b", "prefix": "p"})
    assert isinstance(gcs, GCSIcechunkStore) and gcs.location() == "gs://b/p"
    with pytest.raises(DeploymentConfigError, match="endpont_url"):
        store_from_config({"kind": "s3", "bucket": "b", "prefix": "p", "endpont_url": "http://x"})
    with pytest.raises(DeploymentConfigError, match="azure"):
        store_from_config({"kind": "azure"})


def test_deployment_from_env() -> None:
    default = deployment_from_env({})
    assert default.store is None and default.inputs is None
    assert default.executor_def() is in_process_executor
    k8s = deployment_from_env(
        {"RISK_EXECUTOR": "k8s", "RISK_STORE": json.dumps({"kind": "gcs", "bucket": "b", "prefix": "p"})}
    )
    assert k8s.executor_def() is k8s_job_executor and isinstance(k8s.store, GCSIcechunkStore)
    with pytest.raises(DeploymentConfigError, match="RISK_EXECUTOR"):
        deployment_from_env({"RISK_EXECUTOR": "celery"})
    with pytest.raises(DeploymentConfigError, match="RISK_STORE"):
        deployment_from_env({"RISK_STORE": "gs://b/p"})


def test_regions_per_run_one_pod_per_region_on_kubernetes_a_group_locally(tmp_path: Path) -> None:
    """The raster's backfill policy: one region per run (and pod) under k8s, so the UI's "backfill
    missing" launches a pod per missing region; a group of regions per run locally."""
    assert deployment_from_env({"RISK_EXECUTOR": "k8s"}).regions_per_run_or_default == 1
    assert deployment_from_env({}).regions_per_run_or_default == LOCAL_REGIONS_PER_RUN > 1
    assert deployment_from_env({"RISK_EXECUTOR": "k8s", "RISK_REGIONS_PER_RUN": "4"}).regions_per_run_or_default == 4
    for bad in ("0", "many"):
        with pytest.raises(DeploymentConfigError, match="RISK_REGIONS_PER_RUN"):
            deployment_from_env({"RISK_REGIONS_PER_RUN": bad})
    for per_run in (1, LOCAL_REGIONS_PER_RUN):
        defs = build_definitions(Settings(home=tmp_path, grid="demo"), regions_per_run=per_run)
        policy = defs.resolve_assets_def(AssetKey("risk_raster")).backfill_policy
        assert policy is not None and policy.max_partitions_per_run == per_run

"""Our instance configurations, validated by Dagster's own config schemas; deployment settings.

Each configurable class section (storage, run coordinator, run launcher, compute logs) is checked
against the ``config_type()`` of the class it names, as Dagster does when it instantiates it.
"""

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from _helm import chart_with_stub, instance_config, render
from _services import ROOT, helm_binary
from dagster import multiprocess_executor
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._serdes.config_class import ConfigurableClassData
from dagster_k8s import k8s_job_executor
from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY

from resources.store import GCSIcechunkStore, LocalIcechunkStore, S3IcechunkStore
from risk_assets.deployment import (
    K8S_CONFIG_TAG,
    DeploymentConfigError,
    deployment_from_env,
    region_resources,
    store_from_config,
)


def _check_class_data(data: ConfigurableClassData | None) -> None:
    """Validate one section against its class's schema, as ``rehydrate`` does, without instantiating.

    (Instantiating would contact a cluster or GCS.)
    """
    assert data is not None
    klass = getattr(importlib.import_module(data.module_name), data.class_name)
    result = process_config(klass.config_type(), data.config_dict)
    assert result.success, [e.message for e in result.errors or []]


def _validate(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    validated, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    # Dagster's own reading of the file: which class each section names (legacy module paths
    # such as dagster.core.* resolved), with its config.
    ref = InstanceRef.from_dir(str(tmp_path))
    for data in (ref.storage_data, ref.run_coordinator_data, ref.run_launcher_data, ref.compute_logs_data):
        _check_class_data(data)
    return dict(validated)


def test_local_instance_config_is_valid_and_retries_infrastructure_only(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    validated = _validate(config, tmp_path)
    assert validated["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] > 0
    assert validated["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert "storage" not in config, "the local default is SQLite under DAGSTER_HOME"


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_helm_instance_config_is_valid_for_dagster(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    # In the pods this comes from the secret named by global.postgresqlSecretName.
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-secret")
    chart = chart_with_stub(tmp_path_factory.mktemp("chart"))
    config = instance_config(render(helm_binary(), chart, environment))
    validated = _validate(config, tmp_path)
    assert validated["run_launcher"]["class"] == "K8sRunLauncher"


def test_a_bad_instance_config_is_caught(tmp_path: Path) -> None:
    """Negative control: the same validation rejects a misspelled run launcher field."""
    data = ConfigurableClassData("dagster_k8s", "K8sRunLauncher", yaml.safe_dump({"run_k8s_confg": {}}))
    with pytest.raises(AssertionError, match="run_k8s_confg"):
        _check_class_data(data)


def test_tag_key_matches_dagster_k8s() -> None:
    assert K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY


def test_region_resources_follow_the_region_size() -> None:
    production = region_resources((6000, 4500))
    # the measured 6.1 GB peak plus headroom fits in the request, and is not wildly above it
    assert 6.1e9 < production.memory_bytes < 10e9
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
    assert default.executor_def() is multiprocess_executor
    k8s = deployment_from_env(
        {"RISK_EXECUTOR": "k8s", "RISK_STORE": json.dumps({"kind": "gcs", "bucket": "b", "prefix": "p"})}
    )
    assert k8s.executor_def() is k8s_job_executor and isinstance(k8s.store, GCSIcechunkStore)
    with pytest.raises(DeploymentConfigError, match="RISK_EXECUTOR"):
        deployment_from_env({"RISK_EXECUTOR": "celery"})
    with pytest.raises(DeploymentConfigError, match="RISK_STORE"):
        deployment_from_env({"RISK_STORE": "gs://b/p"})

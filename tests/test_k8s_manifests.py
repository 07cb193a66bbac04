"""Run and step Job manifests built by dagster-k8s's own code for our asset, validated offline.

The run launcher is built from the instance configuration our Helm values render (with a
kubeconfig that is never contacted, instead of in-cluster config). The step pod's configuration
goes through the same calls ``K8sStepHandler`` makes (``create_for_run`` without run tags, merged
with the ``dagster-k8s/config`` tag of the risk_raster step), then ``construct_dagster_k8s_job``;
the Jobs are serialised by the Kubernetes client as the API server would receive them and checked
with ``kubernetes-validate``. Not exercised: a real cluster scheduling them.
"""

import uuid
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
import yaml
from _helm import chart_with_stub, instance_config, render
from _services import ROOT, helm_binary
from dagster import DagsterRun
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._grpc.types import ExecuteRunArgs, ExecuteStepArgs
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config

from risk_assets.definitions import REGION_JOB, build_definitions
from risk_assets.deployment import REGION_RETRY_POLICY, SPOT_NODE_LABEL, region_resources
from risk_assets.settings import Settings
from risk_model.grid import load_grid

IMAGE = "us-central1-docker.pkg.dev/wildfire-risk-prod/wildfire-risk/user-code:abc1234"
IMAGE_PYTHON = "/opt/venv/bin/python"  # Dockerfile
K8S_VERSION = "1.33"
CORE_POOL = {"cloud.google.com/gke-nodepool": "core"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm_binary(), chart_with_stub(tmp_path_factory.mktemp("chart")), "production")


@pytest.fixture(scope="module")
def launcher(rendered: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> K8sRunLauncher:
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "unused"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    config = dict(instance_config(rendered)["run_launcher"]["config"])
    config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    return K8sRunLauncher.from_config_value(None, result.value)


@pytest.fixture(scope="module")
def run(rendered: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> DagsterRun:
    """A region run as the code server would record it: image and the deployment's environment."""
    [deployment] = [m for m in rendered if m["kind"] == "Deployment"]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    origin = JobPythonOrigin(
        REGION_JOB,
        RepositoryPythonOrigin(
            executable_path=IMAGE_PYTHON,  # the code server reports the image's interpreter
            code_pointer=ModuleCodePointer("risk_assets.definitions", "defs", None),
            container_image=IMAGE,
            # includeConfigInLaunchedRuns: the code server hands its environment to launched runs
            container_context={"k8s": {"env_vars": [f"{e['name']}={e['value']}" for e in env]}},
        ),
    )
    return DagsterRun(
        job_name=REGION_JOB, run_id=str(uuid.uuid4()), tags={"dagster/partition": "y3_x10"}, job_code_origin=origin
    )


def _step_tags(tmp: Path) -> dict[str, str]:
    defs = build_definitions(Settings(home=tmp, grid="conus-30m"), executor=k8s_job_executor)
    return dict(defs.resolve_job_def(REGION_JOB).graph.node_named("risk_raster").tags)


def _as_api_object(job: kubernetes.client.V1Job) -> dict[str, Any]:
    body: dict[str, Any] = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    return body


def _step_job(launcher: K8sRunLauncher, run: DagsterRun, step_tags: dict[str, str]) -> dict[str, Any]:
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False).merge(
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags))
    )
    assert run.job_code_origin is not None
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=ExecuteStepArgs(run.job_code_origin, run.run_id, ["risk_raster"]).get_command_args(),
        job_name=f"dagster-step-{get_k8s_job_name(run.run_id, 'risk_raster')}",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": "risk_raster", "dagster/run-id": run.run_id},
    )
    return _as_api_object(job)


def _run_job(launcher: K8sRunLauncher, run: DagsterRun) -> dict[str, Any]:
    context = launcher.get_container_context_for_run(run)
    assert run.job_code_origin is not None
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=ExecuteRunArgs(run.job_code_origin, run.run_id, None).get_command_args(),
        job_name=f"dagster-run-{run.run_id}",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
    )
    return _as_api_object(job)


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def _assert_non_root(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_step_pod_goes_to_spot_nodes_with_its_region_size(
    launcher: K8sRunLauncher, run: DagsterRun, tmp_path: Path
) -> None:
    job = _step_job(launcher, run, _step_tags(tmp_path))
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = _pod(job)
    # exactly the spot selector: the run pods' on-demand selector did not leak in
    assert pod["nodeSelector"] == {SPOT_NODE_LABEL: "true"}
    assert pod["tolerations"] == [
        {"key": SPOT_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert pod["terminationGracePeriodSeconds"] == 25
    [container] = pod["containers"]
    assert container["resources"] == region_resources(load_grid("conus-30m").chunks).as_k8s()
    assert container["image"] == IMAGE
    assert container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api", "execute_step"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert '"kind": "gcs"' in env["RISK_STORE"] and env["RISK_EXECUTOR"] == "k8s"
    assert pod["serviceAccountName"] == "wildfire-risk"  # Workload Identity
    _assert_non_root(pod)
    # a lost pod is not restarted by Kubernetes behind Dagster's back: the retry policy does it
    assert job["spec"]["backoffLimit"] == 0


def test_deep_merge_would_make_the_step_pod_unschedulable(
    launcher: K8sRunLauncher, run: DagsterRun, tmp_path: Path
) -> None:
    """Negative control for the trap in FIELD-NOTES: without SHALLOW, both selectors end up in the pod."""
    import json

    tags = _step_tags(tmp_path)
    config = json.loads(tags["dagster-k8s/config"])
    del config["merge_behavior"]
    pod = _pod(_step_job(launcher, run, {**tags, "dagster-k8s/config": json.dumps(config)}))
    assert pod["nodeSelector"] == {**CORE_POOL, SPOT_NODE_LABEL: "true"}


def test_run_pod_stays_on_demand(launcher: K8sRunLauncher, run: DagsterRun) -> None:
    job = _run_job(launcher, run)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = _pod(job)
    assert pod["nodeSelector"] == CORE_POOL
    assert "tolerations" not in pod
    [container] = pod["containers"]
    assert container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api", "execute_run"]
    assert container["resources"]["requests"]["memory"] == "1Gi"
    assert pod["serviceAccountName"] == "wildfire-risk"
    _assert_non_root(pod)


def test_dockerfile_runs_as_the_uid_the_values_expect() -> None:
    text = (ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users == ["10001:10001"], "one numeric, non-root USER (runAsNonRoot can only check a number)"
    assert "requirements.lock" in text
    values = yaml.safe_load((ROOT / "helm" / "wildfire-risk" / "values.yaml").read_text())
    assert values["dagster"]["dagsterWebserver"]["podSecurityContext"]["runAsUser"] == 10001


def test_region_asset_carries_the_retry_policy_for_lost_pods(tmp_path: Path) -> None:
    """Lost step pods are retried by the asset's policy; typed failures bypass it with
    ``Failure(allow_retries=False)`` (test_dagster's bad-parameter tests assert no retry happens)."""
    defs = build_definitions(Settings(home=tmp_path, grid="conus-30m"), executor=k8s_job_executor)
    op = defs.resolve_job_def(REGION_JOB).graph.node_named("risk_raster").definition
    assert op.retry_policy == REGION_RETRY_POLICY
    assert REGION_RETRY_POLICY.max_retries >= 1

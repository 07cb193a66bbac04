"""Run and step Job manifests built by dagster-k8s's own code from the chart's render, validated offline.

For each environment, the run launcher is built from the instance configuration the official
chart renders from our values (with a kubeconfig that is never contacted, instead of in-cluster
config). A region run is recorded as the code server would record it: the image it reports and
the container context the chart hands it (``DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT`` of the user
code Deployment, i.e. includeConfigInLaunchedRuns). The run Job goes through
``K8sRunLauncher.get_container_context_for_run``; the step Job through the calls
``K8sStepHandler`` makes (``create_for_run`` without run tags, merged with the ``dagster-k8s/config``
tag of the risk_raster step); both through ``construct_dagster_k8s_job``, serialised by the
Kubernetes client as the API server would receive them and checked with ``kubernetes-validate``.
Not exercised: a real cluster scheduling them.
"""

import json
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
import yaml
from _helm import ENVIRONMENTS, UID, chart_with_dependency, code_server, container_env, instance_config, render
from _services import ROOT, helm_binary
from dagster import DagsterRun
from dagster._config import process_config
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._grpc.types import ExecuteRunArgs, ExecuteStepArgs
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config

from risk_assets.assets import REGION_RETRY_POLICY
from risk_assets.definitions import REGION_JOB, build_definitions
from risk_assets.deployment import SPOT_NODE_LABEL, region_resources, spot_tolerations
from risk_assets.settings import Settings
from risk_model.grid import load_grid

IMAGE_PYTHON = "/opt/venv/bin/python"  # Dockerfile: the code server reports the image's interpreter
K8S_VERSION = "1.33"
CORE_POOL = {"cloud.google.com/gke-nodepool": "core"}
KEY_FILE_MARKERS = ("GOOGLE_APPLICATION_CREDENTIALS", "private_key", "BEGIN PRIVATE KEY", "service_account_file")


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chart_with_dependency(tmp_path_factory.mktemp("chart"))


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
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
    return str(path)


@pytest.fixture(scope="module")
def step_tags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The risk_raster step's tags as the production grid's definitions declare them."""
    defs = build_definitions(
        Settings(home=tmp_path_factory.mktemp("home"), grid="conus-30m"), executor=k8s_job_executor
    )
    return dict(defs.resolve_job_def(REGION_JOB).graph.node_named("risk_raster").tags)


def _launcher(rendered: list[dict[str, Any]], kubeconfig: str) -> K8sRunLauncher:
    config = dict(instance_config(rendered)["run_launcher"]["config"])
    assert config.pop("load_incluster_config") is True
    config.update(load_incluster_config=False, kubeconfig_file=kubeconfig)
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    return K8sRunLauncher.from_config_value(None, result.value)


def _run(rendered: list[dict[str, Any]]) -> DagsterRun:
    """A region run as the code server records it: its image and the chart's container context."""
    [container] = code_server(rendered)["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    origin = JobPythonOrigin(
        REGION_JOB,
        RepositoryPythonOrigin(
            executable_path=IMAGE_PYTHON,
            code_pointer=ModuleCodePointer("risk_assets.definitions", "defs", None),
            container_image=env["DAGSTER_CURRENT_IMAGE"],
            container_context=json.loads(env["DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT"]),
        ),
    )
    return DagsterRun(
        job_name=REGION_JOB, run_id=str(uuid.uuid4()), tags={"dagster/partition": "y3_x10"}, job_code_origin=origin
    )


class Deployed:
    """The render of one environment and the run launcher, run, and Jobs built from it."""

    def __init__(self, rendered: list[dict[str, Any]], kubeconfig: str) -> None:
        self.rendered = rendered
        self.launcher = _launcher(rendered, kubeconfig)
        self.run = _run(rendered)
        [self.code_server] = code_server(rendered)["spec"]["template"]["spec"]["containers"]

    def step_job(self, step_tags: dict[str, str]) -> dict[str, Any]:
        run, launcher = self.run, self.launcher
        context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False).merge(
            K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags))
        )
        assert run.job_code_origin is not None
        job = construct_dagster_k8s_job(
            job_config=context.get_k8s_job_config(job_image=None, run_launcher=launcher).with_image(
                run.job_code_origin.repository_origin.container_image
            ),
            args=ExecuteStepArgs(run.job_code_origin, run.run_id, ["risk_raster"]).get_command_args(),
            job_name=f"dagster-step-{get_k8s_job_name(run.run_id, 'risk_raster')}",
            component="step_worker",
            user_defined_k8s_config=context.run_k8s_config,
            labels={"dagster/job": run.job_name, "dagster/op": "risk_raster", "dagster/run-id": run.run_id},
            env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}],
        )
        return _as_api_object(job)

    def run_job(self) -> dict[str, Any]:
        run, launcher = self.run, self.launcher
        context = launcher.get_container_context_for_run(run)
        assert run.job_code_origin is not None
        job = construct_dagster_k8s_job(
            job_config=context.get_k8s_job_config(
                job_image=run.job_code_origin.repository_origin.container_image, run_launcher=launcher
            ),
            args=ExecuteRunArgs(run.job_code_origin, run.run_id, None).get_command_args(),
            job_name=f"dagster-run-{run.run_id}",
            component="run_worker",
            user_defined_k8s_config=context.run_k8s_config,
            labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
            env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}],
        )
        return _as_api_object(job)


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def deployed(request: pytest.FixtureRequest, chart: Path, kubeconfig: str) -> Deployed:
    return Deployed(render(helm_binary(), chart, request.param), kubeconfig)


def _as_api_object(job: kubernetes.client.V1Job) -> dict[str, Any]:
    body: dict[str, Any] = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    return body


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def _assert_non_root_without_key_files(job: dict[str, Any]) -> None:
    pod = _pod(job)
    assert pod["serviceAccountName"] == "wildfire-risk"  # Workload Identity
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert not [v for v in pod.get("volumes") or [] if "secret" in v]
    text = json.dumps(job)
    for marker in KEY_FILE_MARKERS:
        assert marker not in text


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_step_pod_goes_to_spot_nodes_with_its_region_size(deployed: Deployed, step_tags: dict[str, str]) -> None:
    job = deployed.step_job(step_tags)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = _pod(job)
    # exactly the spot selector: the run pods' on-demand selector did not leak in
    assert pod["nodeSelector"] == {SPOT_NODE_LABEL: "true"}
    assert pod["tolerations"] == spot_tolerations()
    assert pod["tolerations"] == [
        {"key": SPOT_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert pod["terminationGracePeriodSeconds"] == 25
    [container] = pod["containers"]
    # the region's size, not the code server's resources the run pod has
    assert container["resources"] == region_resources(load_grid("conus-30m").chunks).as_k8s()
    assert container["resources"] != deployed.code_server["resources"]
    assert container["image"] == _env(deployed.code_server)["DAGSTER_CURRENT_IMAGE"]
    assert container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api", "execute_step"]
    env = _env(container)
    code_env = _env(deployed.code_server)
    for name in ("RISK_STORE", "RISK_INPUTS", "RISK_GRID", "RISK_EXECUTOR"):
        assert env[name] == code_env[name], name
    _assert_non_root_without_key_files(job)
    # a lost pod is not restarted by Kubernetes behind Dagster's back: the retry policy does it
    assert job["spec"]["backoffLimit"] == 0


def test_deep_merge_would_make_the_step_pod_unschedulable(deployed: Deployed, step_tags: dict[str, str]) -> None:
    """Negative control for the trap in FIELD-NOTES: without SHALLOW, both selectors end up in the pod."""
    config = json.loads(step_tags["dagster-k8s/config"])
    del config["merge_behavior"]
    pod = _pod(deployed.step_job({**step_tags, "dagster-k8s/config": json.dumps(config)}))
    assert pod["nodeSelector"] == {**CORE_POOL, SPOT_NODE_LABEL: "true"}


def test_run_pod_stays_on_demand_with_the_code_servers_resources(deployed: Deployed) -> None:
    job = deployed.run_job()
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = _pod(job)
    assert pod["nodeSelector"] == CORE_POOL
    assert "tolerations" not in pod
    [container] = pod["containers"]
    assert container["args"][:5] == [IMAGE_PYTHON, "-m", "dagster", "api", "execute_run"]
    # includeConfigInLaunchedRuns: the code server's resources and environment
    assert container["resources"] == deployed.code_server["resources"]
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "1Gi"}
    assert container["resources"]["limits"] == {"memory": "1Gi"}
    env = _env(container)
    assert env["RISK_EXECUTOR"] == "k8s" and '"kind": "gcs"' in env["RISK_STORE"]
    _assert_non_root_without_key_files(job)


def test_run_launcher_resources_do_not_reach_run_pods(chart: Path, kubeconfig: str) -> None:
    """Why the values set run-pod resources on the code server: the code server's container
    context is merged over the run launcher's, so runK8sConfig.containerConfig.resources loses."""
    rendered = render(
        helm_binary(),
        chart,
        "production",
        "--set",
        "dagster.runLauncher.config.k8sRunLauncher.runK8sConfig.containerConfig.resources.requests.memory=4Gi",
    )
    launcher_config = instance_config(rendered)["run_launcher"]["config"]
    assert launcher_config["run_k8s_config"]["container_config"]["resources"]["requests"]["memory"] == "4Gi"
    [container] = _pod(Deployed(rendered, kubeconfig).run_job())["containers"]
    assert container["resources"]["requests"]["memory"] == "1Gi"


def test_a_misspelled_pod_spec_field_fails_when_the_job_is_built(chart: Path, kubeconfig: str) -> None:
    """The chart's schema lets runK8sConfig's contents through; dagster-k8s refuses them."""
    rendered = render(
        helm_binary(),
        chart,
        "production",
        "--set",
        "dagster.runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig.nodeSelecter.a=b",
    )
    with pytest.raises(Exception, match=r"Unexpected keys in model class V1PodSpec: \{'nodeSelecter'\}"):
        Deployed(rendered, kubeconfig).run_job()


def test_dockerfile_runs_as_the_uid_the_values_expect(deployed: Deployed) -> None:
    text = (ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users == [f"{UID}:{UID}"], "one numeric, non-root USER (runAsNonRoot can only check a number)"
    assert "requirements.lock" in text
    for deployment in (m for m in deployed.rendered if m["kind"] == "Deployment"):
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == UID


def test_region_asset_carries_the_retry_policy_for_lost_pods(tmp_path: Path) -> None:
    """Lost step pods are retried by the asset's policy; typed failures bypass it with
    ``Failure(allow_retries=False)`` (test_dagster's bad-parameter tests assert no retry happens)."""
    defs = build_definitions(Settings(home=tmp_path, grid="conus-30m"), executor=k8s_job_executor)
    op = defs.resolve_job_def(REGION_JOB).graph.node_named("risk_raster").definition
    assert op.retry_policy == REGION_RETRY_POLICY
    assert REGION_RETRY_POLICY.max_retries >= 1

"""Our Helm wrapper chart with the official Dagster chart, linted and rendered by a real helm, offline.

What is checked, for each environment: the wrapper's pin against the Python package and the
official chart's version, ``helm lint --strict``, that every rendered object is valid Kubernetes
1.33 (``kubernetes-validate --strict``), that every container runs as our non-root uid with a
container securityContext and resource requests and limits, the webserver's unprivileged port,
Workload Identity without key files, and that docs/deploy.md names what the chart renders. What
the official chart's values schema rejects, and what it lets through, is spelled out below.
Not checked: a cluster running the objects.
"""

import re
import subprocess
from pathlib import Path
from typing import Any

import dagster
import kubernetes_validate
import pytest
import yaml
from _helm import (
    CHART,
    ENVIRONMENTS,
    NAMESPACE,
    RELEASE,
    UID,
    chart_with_dependency,
    code_server,
    container_env,
    helm,
    named,
    of_kind,
    official_chart,
    render,
    template,
    values_args,
)
from _services import ROOT, helm_binary

from risk_assets.deployment import deployment_from_env

K8S_VERSION = "1.33"  # GKE regular channel
CORE_POOL = {"cloud.google.com/gke-nodepool": "core"}
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def helm_bin() -> str:
    return helm_binary()


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chart_with_dependency(tmp_path_factory.mktemp("chart"))


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def environment(request: pytest.FixtureRequest) -> str:
    environment: str = request.param
    return environment


@pytest.fixture(scope="module")
def manifests(helm_bin: str, chart: Path, environment: str) -> list[dict[str, Any]]:
    return render(helm_bin, chart, environment)


def test_chart_is_pinned_to_the_python_package_and_is_a_thin_wrapper() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    [dependency] = meta["dependencies"]
    assert dependency["name"] == "dagster"
    assert dependency["repository"] == "https://dagster-io.github.io/helm"
    assert dependency["version"] == dagster.__version__ == meta["appVersion"]
    # the tests render the chart version the wrapper pins
    official = yaml.safe_load((official_chart() / "Chart.yaml").read_text())
    assert official["name"] == "dagster" and official["version"] == dependency["version"]
    # no copied templates: the wrapper renders nothing but its notes
    assert [p.name for p in (CHART / "templates").iterdir()] == ["NOTES.txt"]


def test_the_official_chart_is_not_in_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert [f for f in tracked if f.endswith("Chart.yaml")] == ["helm/wildfire-risk/Chart.yaml"]
    assert not [f for f in tracked if f.startswith("helm/wildfire-risk/charts/")]
    # what `helm dependency build` fetches stays out of commits
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "helm/wildfire-risk/charts/dagster-1.13.27.tgz"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0


def test_helm_lint_strict(helm_bin: str, chart: Path, environment: str) -> None:
    done = helm(helm_bin, "lint", str(chart), "--strict", *values_args(environment))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rendered_objects_are_valid_kubernetes(manifests: list[dict[str, Any]]) -> None:
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        ["ServiceAccount"] + ["ConfigMap"] * 7 + ["Role", "RoleBinding"] * 2 + ["Service"] * 2 + ["Deployment"] * 3
    )
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def _pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in of_kind(manifests, "Deployment")}


def assert_hardened(manifests: list[dict[str, Any]]) -> None:
    """Every pod: non-root uid, core pool, our service account; every container (init containers
    included): no privilege escalation, no capabilities, CPU and memory requests, a memory limit."""
    pods = _pod_specs(manifests)
    assert set(pods) == {f"{RELEASE}-dagster-{c}" for c in ("webserver", "daemon", "user-deployments-wildfire-risk")}
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == UID, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["nodeSelector"] == CORE_POOL, name
        assert pod["serviceAccountName"] == "wildfire-risk", name
        containers = pod["containers"] + (pod.get("initContainers") or [])
        for container in containers:
            where = f"{name}/{container['name']}"
            context = container.get("securityContext") or {}
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            resources = container.get("resources") or {}
            assert set(resources.get("requests", {})) == {"cpu", "memory"}, where
            assert "memory" in resources.get("limits", {}), where
    # the two init containers of the webserver and of the daemon are covered too
    assert all(len(pods[f"{RELEASE}-dagster-{c}"]["initContainers"]) == 2 for c in ("webserver", "daemon"))


def test_every_container_is_non_root_and_has_resources(manifests: list[dict[str, Any]]) -> None:
    assert_hardened(manifests)


def test_webserver_listens_on_an_unprivileged_port(manifests: list[dict[str, Any]]) -> None:
    pod = _pod_specs(manifests)[f"{RELEASE}-dagster-webserver"]
    [container] = pod["containers"]
    [port] = container["ports"]
    assert port["containerPort"] > 1024
    assert f"dagster-webserver -h 0.0.0.0 -p {port['containerPort']} " in container["command"][-1]
    assert container["readinessProbe"]["httpGet"]["port"] == port["containerPort"]
    service = named(manifests, "Service", f"{RELEASE}-dagster-webserver")
    [service_port] = service["spec"]["ports"]
    assert service_port.get("targetPort", service_port["port"]) == port["containerPort"]


def test_workload_identity_and_no_key_files(manifests: list[dict[str, Any]], environment: str) -> None:
    [account] = of_kind(manifests, "ServiceAccount")
    project = {"staging": "wildfire-risk-staging", "production": "wildfire-risk-prod"}[environment]
    gsa = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert gsa == f"dagster-risk@{project}.iam.gserviceaccount.com"
    for name, pod in _pod_specs(manifests).items():
        assert pod["serviceAccountName"] == account["metadata"]["name"], name
        assert not [v for v in pod.get("volumes") or [] if "secret" in v], name
    [container] = code_server(manifests)["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    assert env["RISK_EXECUTOR"] == "k8s"
    assert yaml.safe_load(env["RISK_STORE"]) == {
        "kind": "gcs",
        "bucket": f"{project}-raster",
        "prefix": "conus-30m.icechunk",
    }
    rendered = yaml.safe_dump_all(manifests)
    for marker in ("GOOGLE_APPLICATION_CREDENTIALS", "private_key", "BEGIN PRIVATE KEY", "jsonCredentialsEnvvar"):
        assert marker not in rendered
    # the only secret is the Postgres password, as an environment variable
    assert env["DAGSTER_PG_PASSWORD"] == {
        "secretKeyRef": {"name": "dagster-postgresql-secret", "key": "postgresql-password"}
    }


def test_the_code_servers_settings_load_as_a_deployment(manifests: list[dict[str, Any]], environment: str) -> None:
    """The RISK_* variables the chart renders (which run and step pods inherit) pass the same
    parser as when the definitions load: store, executor, inputs, and where the computed wind
    shares go, an object every region pod reads."""
    project = {"staging": "wildfire-risk-staging", "production": "wildfire-risk-prod"}[environment]
    [container] = code_server(manifests)["spec"]["template"]["spec"]["containers"]
    env = {name: value for name, value in container_env(container).items() if isinstance(value, str)}
    deployment = deployment_from_env(env)
    assert deployment.executor == "k8s" and deployment.inputs is not None
    assert deployment.wind_shares == f"gs://{project}-raster/derived/conus-30m/wind_shares_4km.tif"


def test_deploy_doc_names_what_the_chart_renders(manifests: list[dict[str, Any]]) -> None:
    """The runbook's port-forward, rollouts, secret and Workload Identity member match the render."""
    doc = DEPLOY_DOC.read_text()
    [(service_name, port)] = set(re.findall(r"port-forward svc/([\w-]+) 3000:(\d+)", doc))
    [service_port] = named(manifests, "Service", service_name)["spec"]["ports"]
    assert service_port["port"] == int(port)
    rollouts = set(re.findall(r"rollout status deployment/([\w-]+)", doc))
    assert rollouts == {d["metadata"]["name"] for d in of_kind(manifests, "Deployment")}
    assert "kubectl -n $NS create secret generic dagster-postgresql-secret --from-literal=postgresql-password=" in doc
    [account] = of_kind(manifests, "ServiceAccount")
    assert f"svc.id.goog[$NS/{account['metadata']['name']}]" in doc
    assert f"NS={NAMESPACE}" in doc and f"helm upgrade --install {RELEASE} " in doc
    assert f"({len(manifests)} objects)" in doc


def test_the_documented_image_override_changes_only_the_tag(
    helm_bin: str, chart: Path, environment: str, manifests: list[dict[str, Any]]
) -> None:
    """``--set-string deployments[0].image.tag`` merges into the entry of the values file."""
    [setting] = re.findall(r'--set-string "([^"]+)=\$REV"', DEPLOY_DOC.read_text())
    overridden = render(helm_bin, chart, environment, "--set-string", f"{setting}=abc1234")
    [before] = code_server(manifests)["spec"]["template"]["spec"]["containers"]
    [after] = code_server(overridden)["spec"]["template"]["spec"]["containers"]
    repository = before["image"].rsplit(":", 1)[0]
    assert repository.endswith("/wildfire-risk/user-code")
    assert after["image"] == f"{repository}:abc1234"
    assert container_env(after)["DAGSTER_CURRENT_IMAGE"] == after["image"]
    assert {**container_env(after), "DAGSTER_CURRENT_IMAGE": None} == {
        **container_env(before),
        "DAGSTER_CURRENT_IMAGE": None,
    }
    for key in ("resources", "securityContext", "args"):
        assert after[key] == before[key], key


# What the official chart's values.schema.json rejects: the keys of the webserver, daemon, run
# launcher, runK8sConfig, run coordinator and concurrency blocks (additionalProperties false).
REJECTED_BY_THE_SCHEMA = [
    ("runLauncher.config.k8sRunLauncher.runK8sconfig.podSpecConfig.priority=1", "runK8sconfig"),
    ("concurrency.runs.maxConcurentRuns=3", "maxConcurentRuns"),
    ("concurrency.pools.defaultLimt=3", "defaultLimt"),
    ("dagsterWebserver.resource.limits.cpu=1", "resource"),
    ("dagsterDaemon.initContainerResource.limits.cpu=1", "initContainerResource"),
    ("dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurentRuns=3", "maxConcurentRuns"),
]

# What it lets through silently: top-level keys, postgresql, global, serviceAccount, the GCS
# compute log manager, runMonitoring, runRetries, the contents of runK8sConfig's blocks and of
# security contexts, and every key of a user deployment entry. Listed so that nobody relies on
# the schema there; the checks above and in test_k8s_manifests.py catch what matters.
ACCEPTED_BY_THE_SCHEMA = [
    "concurency.enabled=false",
    "postgresql.postgresqlHots=10.0.0.9",
    "global.serviceAcountName=x",
    "serviceAccount.annotation.x=y",
    "computeLogManager.config.gcsComputeLogManager.buckett=x",
    "dagsterDaemon.runMonitoring.startTimeoutSecond=5",
    "dagsterDaemon.runRetries.maxRetry=5",
    "runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig.nodeSelecter.x=y",
    "dagsterWebserver.securityContext.runAsUsr=1",
]


@pytest.mark.parametrize(("setting", "typo"), REJECTED_BY_THE_SCHEMA)
def test_misspelled_key_rejected_by_the_schema(helm_bin: str, chart: Path, setting: str, typo: str) -> None:
    done = template(helm_bin, chart, "production", "--set", f"dagster.{setting}")
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert f"additional properties '{typo}' not allowed" in done.stderr


@pytest.mark.parametrize("setting", ACCEPTED_BY_THE_SCHEMA)
def test_misspelled_key_the_schema_lets_through(helm_bin: str, chart: Path, setting: str) -> None:
    done = template(helm_bin, chart, "production", "--set", f"dagster.{setting}")
    assert done.returncode == 0, done.stderr


def test_what_catches_a_misspelled_security_context_field(helm_bin: str, chart: Path) -> None:
    """The schema lets it through, Kubernetes' own schema (strict) does not."""
    manifests = render(helm_bin, chart, "production", "--set", "dagster.dagsterWebserver.securityContext.runAsUsr=1")
    webserver = named(manifests, "Deployment", f"{RELEASE}-dagster-webserver")
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsUsr"):
        kubernetes_validate.validate(webserver, K8S_VERSION, strict=True)


def test_what_catches_a_misspelled_user_deployment_key(helm_bin: str, chart: Path, tmp_path: Path) -> None:
    """A user deployment entry is not validated: ``resource:`` for ``resources:`` renders a code
    server (and run pods) without resources, which only the hardening check notices."""
    production = (CHART / "values-production.yaml").read_text()
    assert production.count("\n        resources:\n") == 1
    typo = tmp_path / "typo.yaml"
    typo.write_text(production.replace("\n        resources:\n", "\n        resource:\n"))
    manifests = render(helm_bin, chart, "staging", "-f", str(typo))
    with pytest.raises(AssertionError, match="user-deployments-wildfire-risk"):
        assert_hardened(manifests)

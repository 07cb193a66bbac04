"""Our Helm wrapper chart, linted and rendered by a real helm binary, offline.

What is checked: the wrapper's pin against the Python package, that helm lints and renders it
with each environment's values, that the values satisfy our transcription of the official chart's
values schema (deploy/helm-stub/dagster/values.schema.json) so a misspelled key fails, and that
every rendered object is valid for Kubernetes. What is not: the official chart's own templates
(unreachable here); the stub renders the objects our values decide in the documented way.
"""

from pathlib import Path

import dagster
import kubernetes_validate
import pytest
import yaml
from _helm import CHART, ENVIRONMENTS, chart_with_stub, helm, instance_config, render, values_files
from _services import ROOT, helm_binary

K8S_VERSION = "1.33"  # GKE regular channel


@pytest.fixture(scope="module")
def helm_bin() -> str:
    return helm_binary()


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chart_with_stub(tmp_path_factory.mktemp("chart"))


def test_chart_is_pinned_to_the_python_package_and_is_a_thin_wrapper() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    [dependency] = meta["dependencies"]
    assert dependency["name"] == "dagster"
    assert dependency["repository"] == "https://dagster-io.github.io/helm"
    assert dependency["version"] == dagster.__version__ == meta["appVersion"]
    stub = yaml.safe_load((ROOT / "deploy" / "helm-stub" / "dagster" / "Chart.yaml").read_text())
    assert stub["version"] == dependency["version"]
    # no copied templates: the wrapper renders nothing but its notes
    assert [p.name for p in (CHART / "templates").iterdir()] == ["NOTES.txt"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_helm_lint_strict(helm_bin: str, chart: Path, environment: str) -> None:
    files = [arg for path in values_files(environment) for arg in ("-f", path)]
    done = helm(helm_bin, "lint", str(chart), "--strict", *files)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_rendered_manifests_are_valid_kubernetes(helm_bin: str, chart: Path, environment: str) -> None:
    manifests = render(helm_bin, chart, environment)
    assert {m["kind"] for m in manifests} == {"ServiceAccount", "ConfigMap", "Deployment"}
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_workload_identity_and_no_key_files(helm_bin: str, chart: Path, environment: str) -> None:
    manifests = render(helm_bin, chart, environment)
    [account] = [m for m in manifests if m["kind"] == "ServiceAccount"]
    gsa = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert gsa.endswith(".iam.gserviceaccount.com")
    [deployment] = [m for m in manifests if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["RISK_EXECUTOR"] == "k8s"
    assert '"kind": "gcs"' in env["RISK_STORE"]
    rendered = yaml.safe_dump_all(manifests)
    for marker in ("GOOGLE_APPLICATION_CREDENTIALS", "private_key", "BEGIN PRIVATE KEY", ".json\n"):
        assert marker not in rendered
    # the run launcher hands the same service account to run and step pods
    assert instance_config(manifests)["run_launcher"]["config"]["service_account_name"] == account["metadata"]["name"]


def test_misspelled_values_key_is_rejected(helm_bin: str, chart: Path) -> None:
    """The schema is strict: a typo does not silently fall back to a chart default."""
    done = helm(
        helm_bin,
        "template",
        "rel",
        str(chart),
        *(a for p in values_files("production") for a in ("-f", p)),
        "--set",
        "dagster.runLauncher.config.k8sRunLauncher.runK8sconfig.podSpecConfig.priority=1",
    )
    assert done.returncode != 0
    assert "runK8sconfig" in done.stderr


def test_instance_config_carries_the_production_choices(helm_bin: str, chart: Path) -> None:
    config = instance_config(render(helm_bin, chart, "production"))
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["compute_logs"]["class"] == "GCSComputeLogManager"
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert config["concurrency"]["pools"]["default_limit"] == 10
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 24

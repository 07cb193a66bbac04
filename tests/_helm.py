"""Render and lint our wrapper chart with a real helm binary and the official Dagster chart, offline.

The official chart is in no registry reachable from these machines. CI provides it next to the
project, at ``../shared/dagster-chart`` (``RISK_DAGSTER_CHART`` overrides the location); it is
upstream code and is never copied into this repository. The wrapper is copied to a temporary
folder with the official chart as ``charts/dagster``, where ``helm dependency build`` puts it.
"""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _services import ROOT

CHART = ROOT / "helm" / "wildfire-risk"
ENVIRONMENTS = ("staging", "production")
#: The release and namespace of docs/deploy.md, so that rendered names are the deployed ones.
RELEASE = "wildfire-risk"
NAMESPACE = "dagster"
#: The uid of our image (Dockerfile) and of every container in the values.
UID = 10001


def official_chart() -> Path:
    """The official Dagster chart: ``RISK_DAGSTER_CHART``, else ``../shared/dagster-chart``."""
    path = Path(os.environ.get("RISK_DAGSTER_CHART") or ROOT.parent / "shared" / "dagster-chart")
    if not (path / "Chart.yaml").is_file():
        pytest.fail(
            f"The official Dagster Helm chart is expected at {path} (a folder holding its Chart.yaml, "
            "templates/ and charts/dagster-user-deployments/; CI provides it as ../shared/dagster-chart "
            "next to the project). Set RISK_DAGSTER_CHART to use another copy; never copy it into "
            "the repository."
        )
    return path


def chart_with_dependency(tmp: Path) -> Path:
    """A copy of the wrapper chart with the official chart as its ``dagster`` dependency."""
    chart = tmp / "wildfire-risk"
    shutil.copytree(CHART, chart)
    shutil.copytree(official_chart(), chart / "charts" / "dagster")
    return chart


def values_files(environment: str) -> list[str]:
    return [str(CHART / "values.yaml"), str(CHART / f"values-{environment}.yaml")]


def values_args(environment: str) -> list[str]:
    return [arg for path in values_files(environment) for arg in ("-f", path)]


def helm(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False, timeout=120)


def template(binary: str, chart: Path, environment: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the release for ``environment``; ``extra`` after the values files."""
    return helm(binary, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *values_args(environment), *extra)


def render(binary: str, chart: Path, environment: str, *extra: str) -> list[dict[str, Any]]:
    """The manifests of ``helm template`` for ``environment``, parsed."""
    done = template(binary, chart, environment, *extra)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [manifest] = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    return manifest


def instance_config(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``dagster.yaml`` held by the rendered instance ConfigMap."""
    configmap = named(manifests, "ConfigMap", f"{RELEASE}-dagster-instance")
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["dagster.yaml"])
    return config


def code_server(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The user code Deployment (the code server of our code location)."""
    return named(manifests, "Deployment", f"{RELEASE}-dagster-user-deployments-wildfire-risk")


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    """A container's ``env`` as name -> value (or the ``valueFrom`` mapping)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}

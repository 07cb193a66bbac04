"""Render and lint our wrapper chart with a real helm binary, offline.

The official Dagster chart is in no registry reachable here, so the wrapper is copied to a
temporary folder with ``deploy/helm-stub/dagster`` (our own test double of the official chart)
where ``helm dependency build`` would have put the real chart.
"""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from _services import ROOT

CHART = ROOT / "helm" / "wildfire-risk"
STUB = ROOT / "deploy" / "helm-stub" / "dagster"
ENVIRONMENTS = ("staging", "production")


def chart_with_stub(tmp: Path) -> Path:
    """A copy of the wrapper chart with the stub as its ``dagster`` dependency."""
    chart = tmp / "wildfire-risk"
    shutil.copytree(CHART, chart)
    shutil.copytree(STUB, chart / "charts" / "dagster")
    return chart


def values_files(environment: str) -> list[str]:
    return [str(CHART / "values.yaml"), str(CHART / f"values-{environment}.yaml")]


def helm(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False, timeout=120)


def render(binary: str, chart: Path, environment: str, *extra: str) -> list[dict[str, Any]]:
    """The manifests of ``helm template`` for ``environment``, parsed."""
    files = [arg for path in values_files(environment) for arg in ("-f", path)]
    done = helm(binary, "template", "rel", str(chart), "--namespace", "dagster", *files, *extra)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def instance_config(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``dagster.yaml`` held by the rendered instance ConfigMap."""
    [configmap] = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-instance")]
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["dagster.yaml"])
    return config

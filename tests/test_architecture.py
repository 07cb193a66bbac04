"""docs/architecture.md names only paths that exist, and draws the flow of one region and one release.

A path is a backticked token that contains a ``/`` or ends with a file extension, or a
path-like token inside the Mermaid diagram. Globs must match at least one file; a trailing
``/`` names a directory.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
EXTENSIONS = (".py", ".md", ".yaml", ".yml", ".json", ".toml", ".sh", ".lock", ".cfg")
MERMAID = re.compile(r"```mermaid\n(.*?)```", re.DOTALL)
# In the diagram: a relative path with at least one folder, e.g. risk_model/data/grids/*.json
MERMAID_PATH = re.compile(r"(?<![\w/:])(?:[\w.*-]+/)+[\w.*-]*\.\w+|(?<![\w/:])(?:[\w-]+/)+(?=[\s)\"<])")


def named_paths(text: str) -> set[str]:
    """Every file or folder path the document names."""
    paths = {
        token
        for token in re.findall(r"`([^`\s]+)`", text)
        if "/" in token.strip("/") or token.endswith("/") or token.endswith(EXTENSIONS)
    }
    paths.discard("gs://")
    for block in MERMAID.findall(text):
        paths.update(MERMAID_PATH.findall(block))
    return paths


def missing_paths(text: str, root: Path = ROOT) -> list[str]:
    """The named paths that do not exist under ``root`` (a glob counts when it matches)."""
    missing = []
    for path in sorted(named_paths(text)):
        if "*" in path:
            exists = any(root.glob(path))
        elif path.endswith("/"):
            exists = (root / path).is_dir()
        else:
            exists = (root / path).exists()
        if not exists:
            missing.append(path)
    return missing


def test_every_path_named_in_the_architecture_doc_exists() -> None:
    text = DOC.read_text()
    paths = named_paths(text)
    # The map covers the whole flow; if extraction broke, this set would shrink.
    assert {
        "risk_assets/",
        "resources/",
        "risk_model/",
        "risk_assets/sensors.py",
        "resources/io_manager.py",
        "resources/region_write.py",
        "resources/ledger.py",
        "resources/release.py",
        "risk_model/errors.py",
        "risk_model/data/params/default.yaml",
    } <= paths
    assert missing_paths(text) == []


def test_a_missing_or_moved_path_is_reported(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "here.py").write_text("")
    text = (
        "| `pkg/here.py` | ok |\n| `pkg/gone.py` | moved |\n| `pkg/` | folder |\n| `docs/` | absent folder |\n"
        "| `pkg/*.py` | glob |\n| `pkg/*.json` | empty glob |\n| `model_params` | not a path |\n"
        '```mermaid\nflowchart LR\n  a["module<br/>pkg/here.py"] --> b["lost<br/>pkg/sub/old.yaml"]\n```\n'
    )
    assert missing_paths(text, tmp_path) == ["docs/", "pkg/*.json", "pkg/gone.py", "pkg/sub/old.yaml"]


def test_the_doc_draws_one_region_and_one_release_as_mermaid_flowcharts() -> None:
    text = DOC.read_text()
    region, release = MERMAID.findall(text)
    assert region.lstrip().startswith("flowchart") and release.lstrip().startswith("flowchart")
    region_stages = [
        "parameters",
        "per-region overrides",
        "input rasters",
        "observable sources",
        "raster_template",
        "risk_raster",
        "commit per region",
        "reconcile_commit_log",
    ]
    release_stages = ["raster_status", "risk_pyramid", "raster_release", "maintain_repository", "branch main"]
    assert all(s in region for s in region_stages), [s for s in region_stages if s not in region]
    assert all(s in release for s in release_stages), [s for s in release_stages if s not in release]
    assert "planned" not in text, "every part drawn is built"

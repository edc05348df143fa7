"""The package's layering: corpus readers below both training and evaluation, which never import
each other; no library module ends the process (SystemExit); every package folder is installed."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipeline"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("layer, forbidden", [("evaluate", "train"), ("train", "evaluate"),
                                              ("corpora", "train"), ("corpora", "evaluate")])
def test_layers_do_not_cross(layer, forbidden):
    for path in sorted((PIPELINE / layer).glob("*.py")):
        bad = sorted(m for m in _imports(path) if m.startswith(f"emotion_pipeline.{forbidden}"))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_no_library_code_raises_system_exit():
    for path in sorted(PIPELINE.rglob("*.py")) + sorted((ROOT / "models").rglob("*.py")):
        if path.name in ("__main__.py", "cli.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                assert getattr(target, "id", None) != "SystemExit", f"{path.relative_to(ROOT)}:{node.lineno}"


def test_every_package_folder_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"emotion_pipeline" + ("." + ".".join(p.parent.relative_to(PIPELINE).parts) if p.parent != PIPELINE else "")
             for p in PIPELINE.rglob("__init__.py")}
    assert found | {"emotion_pipeline.models"} == listed

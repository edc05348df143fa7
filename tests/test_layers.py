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


# The floors of the house, bottom first. A module may import modules of its own floor or below,
# never above, and the imports (also those inside functions) form no circle. The README's
# "How it works" draws the same table.
FLOORS = [
    ("base", ["labels", "languages", "errors", "fileio", "records", "data"]),
    ("models", ["models"]),
    ("inputs", ["config", "corpora", "vad", "faces", "landmarks", "people", "speaker", "voices", "demux", "audio_windows", "plots",
                "writers", "metrics"]),
    ("encoders", ["transcribe", "encoders", "fuse", "preflight"]),
    ("analysis", ["seconds", "cast", "analyze"]),
    ("outputs", ["annotate", "exports", "viewer"]),
    ("jobs", ["batch", "jobs", "evaluate", "predict", "train"]),
    ("front", ["live", "api"]),
    ("cli", ["cli", "__main__"]),
]


def _modules() -> dict[str, Path]:
    found = {}
    for base, prefix in ((PIPELINE, ()), (ROOT / "models", ("models",))):
        for path in base.rglob("*.py"):
            parts = (*prefix, *path.relative_to(base).with_suffix("").parts)
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            if parts:                                     # the root package's __init__ holds only the version
                found[".".join(parts)] = path
    return found


def _floor(module: str) -> int:
    for i, (_, prefixes) in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is on no floor: place it in FLOORS (tests/test_layers.py) and the README")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "emotion_pipeline":
                targets |= {a.name for a in node.names}           # from emotion_pipeline import config
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emotion_pipeline."):
                base = node.module.removeprefix("emotion_pipeline.")
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name.removeprefix("emotion_pipeline.") for a in node.names
                            if a.name.startswith("emotion_pipeline.")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_every_import_points_down_or_level():
    upward = [f"{m} ({FLOORS[_floor(m)][0]}) imports {t} ({FLOORS[_floor(t)][0]})"
              for m, targets in _graph().items() for t in sorted(targets) if _floor(t) > _floor(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph, state, path = _graph(), {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)

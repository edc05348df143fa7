"""Configs: plain YAML read into frozen dataclasses; unknown keys and wrong types fail; ``key=value`` overrides.

Nested dataclasses are addressed with dots on the command line: ``optim.lr=3e-4``.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.errors import ConfigError

T = TypeVar("T")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[]") for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "")):
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Read YAML (if given) into ``cls``, apply ``key=value`` overrides, validate everything."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k} is not a section")
        node[keys[-1]] = value
    return from_dict(cls, data, str(path) if path else "config")


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


@dataclasses.dataclass(frozen=True)
class AnalyzeConfig:
    """Options of ``analyze``; defaults are the CPU 'default' profile (configs/analyze.yaml)."""
    profile: str = "default"                 # "default" (shipped models) or "full" (hub models where reachable)
    frames_per_second: float = 4.0           # sampled frames per second of video; faces change slower than 4 Hz
    max_frame_side_px: int = 640             # frames are downscaled to this before detection
    face_detector: str = "auto"              # auto (YuNet if its file is found, else Haar), yunet, haar, or a .onnx path
    face_model: str = "face-cnn"
    primary_face: str = "dominant"           # face used for fusion: dominant (largest x longest), largest, or a face_id
    face_batch_size: int = 64
    audio_model: str = "audio-cnn"
    audio_window_s: float | None = None      # context centred on each second; None: the audio model's own window
    min_speech_fraction: float = 0.15        # VAD: below this share of speech frames a second's audio is null
    whisper_model: str = "auto"              # auto (tiny on CPU, small on GPU), a Whisper name, a .pt path, or none
    language: str | None = None              # force a Whisper language; None detects it
    text_model: str = "text-minilm"
    text_context_s: float = 2.0              # words within this many seconds around a second are scored with it
    fusion: str = "auto"                     # auto (learned head if it matches the encoders), average, or head
    fusion_head: str = "fusion-head"
    modality_weights: tuple[float, ...] = (1.0, 1.0, 1.0)   # face, audio, text weights of the average
    smoothing_window_s: int = 3              # centred moving average of fused scores; 1 or 0 = off
    device: str = "auto"                     # auto picks CUDA when present
    offline: bool = False                    # never touch the network (also EMOTION_OFFLINE=1 / HF_HUB_OFFLINE=1)
    progress: bool = True

    def __post_init__(self):
        if self.frames_per_second <= 0:
            raise ValueError("frames_per_second must be > 0")
        if len(self.modality_weights) != 3:
            raise ValueError("modality_weights needs three numbers: face, audio, text")
        if self.fusion not in ("auto", "average", "head"):
            raise ValueError(f"fusion must be auto, average or head, not {self.fusion!r}")

"""Configs: plain YAML read into frozen dataclasses; unknown keys and wrong types fail; ``key=value`` overrides.

Nested dataclasses are addressed with dots on the command line: ``optim.lr=3e-4``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emotion_pipeline.errors import ConfigError

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
        return from_dict(tp, value, "config", prefix=where + ".")
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
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from exc
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from exc
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "")):
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp}")


class SettingError(ValueError):
    """A setting out of its range, raised by a config's ``__post_init__`` with the key it concerns."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def check(cfg: Any, *rules: tuple[str, bool, str]) -> None:
    """A config's range checks (its ``__post_init__``): each rule is (key, whether it holds, what must
    hold); the first that fails raises SettingError naming the key and its value."""
    for key, ok, what in rules:
        if not ok:
            raise SettingError(key, f"{what}, got {getattr(cfg, key)!r}")


def device_rule(device: str) -> tuple[str, bool, str]:
    """The ``device`` setting's rule, the same for analysis and training."""
    return "device", re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device) is not None, "must be auto, cpu, cuda, cuda:N or mps"


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config", *,
              origins: dict[str, str] | None = None, prefix: str = "") -> T:
    """Build ``cls`` from ``data``. ``origins`` maps dotted keys to where their value came from
    (a file, or ``--set key=value``), so that an error blames the right place."""
    origins = origins or {}

    def origin(key: str) -> str:
        return origins.get(key, where)

    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = prefix + unknown[0]
        raise ConfigError(f"{origin(key)}: unknown key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"valid: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in data.items():
        key = prefix + k
        tp = hints[k]
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            kwargs[k] = from_dict(tp, v, where, origins=origins, prefix=key + ".")
            continue
        try:
            kwargs[k] = _coerce(v, tp, key)
        except ConfigError as e:
            raise ConfigError(f"{origin(key)}: {e}") from e
    try:
        return cls(**kwargs)
    except SettingError as e:
        raise ConfigError(f"{origin(prefix + e.key)}: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {prefix}{e}") from e


def _parse_override(text: str, label: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"{label} {text}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw   # not YAML: taken as the string it is, and type-checked like any value
    return key.strip().split("."), value


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
         label: str = "--set") -> T:
    """Read YAML (if given) into ``cls``, apply ``key=value`` overrides, validate everything.
    An error names the key, the bad value, and where it came from: the file, or ``<label> key=value``
    (``--set`` on the command line, ``setting`` for the API's keyword arguments)."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    origins: dict[str, str] = {}
    for item in overrides:
        keys, value = _parse_override(item, label)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{label} {item}: {k} is not a section")
        node[keys[-1]] = value
        origins[".".join(keys)] = f"{label} {item}"
        for i in range(1, len(keys)):   # a nested override: its section's errors point at it too
            origins.setdefault(".".join(keys[:i]), f"{label} {item}")
    return from_dict(cls, data, where, origins=origins)


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
    whisper_model: str = "auto"              # auto (packaged tiny.en offline; small on a GPU when cached), a
                                             # faster-whisper name, HF repo id or folder, a .pt / openai:<size>, or none
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
        check(self,
              ("profile", self.profile in ("default", "full"), "must be default or full"),
              ("frames_per_second", 0 < self.frames_per_second <= 60, "must be > 0 and at most 60"),
              ("max_frame_side_px", 64 <= self.max_frame_side_px <= 8192,
               "must be 64..8192 pixels (smaller frames leave no face to find)"),
              ("face_batch_size", 1 <= self.face_batch_size <= 4096, "must be 1..4096"),
              ("primary_face", self.primary_face in ("dominant", "largest") or self.primary_face.isdigit(),
               "must be dominant, largest, or a face_id (0, 1, ...)"),
              ("audio_window_s", self.audio_window_s is None or 0.5 <= self.audio_window_s <= 30,
               "must be null or 0.5..30 seconds"),
              ("min_speech_fraction", 0 <= self.min_speech_fraction <= 1, "must be 0..1"),
              ("text_context_s", 0 <= self.text_context_s <= 30, "must be 0..30 seconds"),
              ("modality_weights", len(self.modality_weights) == 3, "needs three numbers: face, audio, text"),
              ("modality_weights", all(w >= 0 for w in self.modality_weights) and any(w > 0 for w in self.modality_weights),
               "must be three numbers >= 0, not all 0"),
              ("smoothing_window_s", 0 <= self.smoothing_window_s <= 60, "must be 0..60 seconds (0 or 1: no smoothing)"),
              ("fusion", self.fusion in ("auto", "average", "head"), "fusion must be auto, average or head"),
              device_rule(self.device),
              ("language", self.language is None or re.fullmatch(r"[a-z]{2,3}(-[A-Za-z]+)?", self.language) is not None,
               "must be null (detect) or a language code such as en"))

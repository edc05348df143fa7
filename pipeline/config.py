"""Configs: plain YAML read into frozen dataclasses; unknown keys and wrong types fail; ``key=value`` overrides.

Nested dataclasses are addressed with dots on the command line: ``optim.lr=3e-4``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emotion_pipeline.errors import ConfigError
from emotion_pipeline.languages import normalise_language

T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20      # 1 MB; the largest config shipped is under 3 KB
MAX_YAML_NODES = 100_000        # nodes once aliases are expanded: a 10-line alias bomb is billions
_SHOW = reprlib.Repr()   # (keyword arguments only from Python 3.12)
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlevel = 80, 80, 3
_SHOW.maxlist = _SHOW.maxdict = _SHOW.maxtuple = 6


def _show(value: Any) -> str:
    """A value as an error message quotes it: bounded in length and depth whatever it is."""
    return _SHOW.repr(value)


def _expanded_nodes(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """How many nodes ``node`` is once every alias is copied out (memoised: aliases share nodes)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_:
        raise yaml.YAMLError("an alias refers to the node that holds it (a recursive structure)")
    open_.add(key)
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_nodes(c, memo, open_) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_nodes(k, memo, open_) + _expanded_nodes(v, memo, open_) for k, v in node.value)
    else:
        n = 1
    open_.discard(key)
    memo[key] = n
    if n > MAX_YAML_NODES:
        raise yaml.YAMLError(f"more than {MAX_YAML_NODES:,} values once its aliases are expanded (an alias bomb?)")
    return n


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true / false are booleans, so ``on``, ``off``, ``yes``
    and ``no`` stay the words they are (``face_expression: off``); a bool setting still accepts them
    (``_coerce``)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` (no tags that build objects) that refuses, before building anything, a
    document whose aliases expand past MAX_YAML_NODES values or refer to themselves."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


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
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {_show(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return from_dict(tp, value, "config", prefix=where + ".")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[]") for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true/false, got {_show(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"{where}: expected an integer, got {_show(value)}") from exc
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"{where}: expected a number, got {_show(value)}") from exc
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {_show(value)}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {_show(value)}")
        return str(value)
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "")):
            return None
        raise ConfigError(f"{where}: expected null, got {_show(value)}")
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
            raise SettingError(key, f"{what}, got {_show(getattr(cfg, key))}")


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
        value = safe_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        if "alias" in str(e):
            raise ConfigError(f"{label} {_show(text)}: {e}") from e
        value = raw   # not YAML: taken as the string it is, and type-checked like any value
    return key.strip().split("."), value


def read_yaml(path: str | Path, missing_hint: str = "") -> dict[str, Any]:
    """The mapping in the YAML file ``path``; ConfigError, one line naming the file, when it is not
    there (``missing_hint`` appended), too large, unreadable, not YAML or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found{missing_hint}")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is not a config (at most {MAX_CONFIG_BYTES:,})")
        data = safe_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of settings")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
         label: str = "--set") -> T:
    """Read YAML (if given) into ``cls``, apply ``key=value`` overrides, validate everything.
    An error names the key, the bad value, and where it came from: the file, or ``<label> key=value``
    (``--set`` on the command line, ``setting`` for the API's keyword arguments)."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        data, where = read_yaml(path), str(path)
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
    """Options of ``analyze``; the defaults are the CPU 'default' profile and the one source of the
    default settings (configs/analyze.yaml lists the same values; a test keeps them equal)."""
    profile: str = "default"                 # "default" (shipped models) or "full" (hub models where reachable)
    frames_per_second: float = 4.0           # sampled frames per second of video; faces change slower than 4 Hz
    max_frame_side_px: int = 640             # frames are downscaled to this before detection
    face_detector: str = "auto"              # auto (YuNet if its file is found, else Haar), yunet, haar, or a .onnx path
    detect_face_px: int = 64                 # between full-size searches (one frame a second), frames are shrunk so the
                                             # smallest face is this high before YuNet looks (pipeline/faces.py
                                             # ScaledDetection); 0: every frame at full size
    face_model: str = "face-cnn"
    face_precision: str = "auto"             # the shipped face CNN's arithmetic: auto (bfloat16 on a CPU that computes it
                                             # natively, about 2x faster; else float32), float32, bfloat16 (face_cnn.md)
    primary_face: str = "speaker"            # face fused with the voice and words: speaker (the visible person speaking;
                                             # in seconds without one, dominant), dominant (largest x longest), largest,
                                             # or a face_id
    face_batch_size: int = 64
    face_expression: str = "auto"            # MediaPipe face landmarker on the face crops (blendshapes per face and
                                             # second): auto (when mediapipe and its model are there, else said why), on, off
    face_expert: str = "none"                # blendshape-expert: combined with face_model's scores where the landmarker reads the face (no gain with face-cnn 3.0.0, measured before the 4.0.0 ensemble: blendshape_expert.md)
    face_expert_weight: float | None = None  # the expert's weight in that combination; null: the one chosen at training
    face_expression_per_second: int = 1      # frames of each face the landmarker reads per second, at most (its cost)
    identity_model: str = "sface"            # face embeddings that join face tracks into people across gaps and cuts
                                             # (pipeline/people.py); none: every face track is its own person
    voice_model: str = "campplus"            # speaker embeddings that tell the voices apart where two faces are seen at
                                             # once, so the speaker is decided per voice (pipeline/voices.py); a state
                                             # dict path; none: decided reading by reading
    speaker: str = "auto"                    # who speaks each second (pipeline/speaker.py): auto (mouths read against the
                                             # voice when two people share a second of speech; a lone face is the
                                             # speaker), lips (mouths read whenever a face and speech share a second), off
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
        if isinstance(self.language, str):   # EN, en-US, eng, English -> en (one normaliser: pipeline/languages.py)
            object.__setattr__(self, "language", normalise_language(self.language) or self.language)
        check(self,
              ("profile", self.profile in ("default", "full"), "must be default or full"),
              ("frames_per_second", 0 < self.frames_per_second <= 60, "must be > 0 and at most 60"),
              ("max_frame_side_px", 64 <= self.max_frame_side_px <= 8192,
               "must be 64..8192 pixels (smaller frames leave no face to find)"),
              ("detect_face_px", self.detect_face_px == 0 or 24 <= self.detect_face_px <= 4096,
               "must be 0 (full size) or 24..4096 pixels"),
              ("face_batch_size", 1 <= self.face_batch_size <= 4096, "must be 1..4096"),
              ("face_precision", self.face_precision in ("auto", "float32", "bfloat16"), "must be auto, float32 or bfloat16"),
              ("face_expression", self.face_expression in ("auto", "on", "off"), "must be auto, on or off"),
              ("face_expert_weight", self.face_expert_weight is None or 0 <= self.face_expert_weight <= 1,
               "must be null (the expert file's) or 0..1"),
              ("face_expression_per_second", 1 <= self.face_expression_per_second <= 60, "must be 1..60"),
              ("primary_face", self.primary_face in ("speaker", "dominant", "largest") or self.primary_face.isdigit(),
               "must be speaker, dominant, largest, or a face_id (0, 1, ...)"),
              ("speaker", self.speaker in ("auto", "lips", "off"), "must be auto, lips or off"),
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
              ("language", self.language is None or normalise_language(self.language) == self.language,
               "must be null (detect) or a language Whisper knows: a code (en, en-US, eng) or a name (English)"))

"""A model's input contract as data (as timm's pretrained config carries input size, mean/std and
label names): what goes in, what comes out, in which order.

Every row of ``models.registry.SPECS`` holds one; a weight file of ours carries its own in its
metadata (``labels``, and the architecture's config: sample rate, window, crop sizes, mean/std);
a Hugging Face checkpoint's comes from its processor config. ``models.registry.load`` checks the
file's against the project's (label order, sample rate) and the row's, and hands the file's to the
encoders with the model (``LoadedModel.contract``), so preprocessing is read from the model, never
copied into pipeline code. Imports neither torch nor anything above ``labels``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from emotion_pipeline.labels import LABELS

from emotion_pipeline.models import SAMPLE_RATE_HZ   # the demuxer's rate; every speech model here takes it


@dataclass(frozen=True)
class InputContract:
    """None: the model does not constrain it (or it does not apply to its kind)."""
    labels: tuple[str, ...] = LABELS          # output classes, in order (ours: LABELS; hub: mapped onto them)
    sample_rate_hz: int | None = None         # audio and Whisper: mono samples per second
    window_s: float | None = None             # audio: seconds per scored window (the model's training window)
    crop_px: int | None = None                # face: the crop is resized to this square first
    input_px: int | None = None               # face: ... of which the centre input_px square is seen
    grey: bool | None = None                  # face: converted to greyscale (else RGB)
    mean: tuple[float, ...] | None = None     # face: per-channel normalisation of [0, 1] pixels
    std: tuple[float, ...] | None = None
    max_tokens: int | None = None             # text: word pieces per input (longer is truncated)
    note: str = ""                            # prose for `models list`: what else goes in

    def describe(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                 if f.name not in ("labels", "note") and getattr(self, f.name) is not None]
        return "; ".join(filter(None, [", ".join(parts), self.note]))

    def differences(self, other: "InputContract") -> list[str]:
        """Fields both state and that differ (``name: mine != other``); labels always compared."""
        out = []
        for f in dataclasses.fields(self):
            if f.name == "note":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a is not None and b is not None and a != b:
                out.append(f"{f.name} {_short(a)} != {_short(b)}")
        return out


def _short(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _tuple(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    return tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


# Per architecture of ours: the config key holding its number of outputs, and how its config
# states the rest of the contract.
NUM_OUTPUTS_KEY = {"face_cnn": "num_classes", "audio_cnn": "num_labels", "text_minilm": "num_labels",
                   "fusion_head": "num_labels", "blendshape_expert": "num_classes"}


def of_weights(arch: str, config: Mapping[str, Any], labels: tuple[str, ...]) -> InputContract:
    """The contract a weight file of ours states: its ``labels`` metadata and its architecture's
    config (``config``: the file's, over the config dataclass's defaults)."""
    if arch == "face_cnn":
        return InputContract(labels, crop_px=int(config["source_size"]), input_px=int(config["input_size"]),
                             grey=int(config["in_channels"]) == 1, mean=_tuple(config["mean"]), std=_tuple(config["std"]))
    if arch == "audio_cnn":
        return InputContract(labels, sample_rate_hz=int(config["sample_rate_hz"]), window_s=float(config["window_s"]))
    if arch == "text_minilm":
        return InputContract(labels, max_tokens=int(config["max_length"]))
    if arch == "blendshape_expert":
        return InputContract(labels, note=f"{config['n_features']} features {config['features']} of the face "
                                          f"landmarker's reading (models.blendshape_expert.features)")
    return InputContract(labels)

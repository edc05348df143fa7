"""Mapping a Hugging Face checkpoint's classes (config.id2label) onto our seven LABELS.

Classes with no Ekman class (e.g. "love", "contempt") and names the project does not know
(e.g. a generic "LABEL_3", with a warning) have their probability mass removed and each row is
renormalised: a class is never guessed. Our labels the checkpoint lacks get probability 0; two
classes that map to the same label are summed. A checkpoint none of whose classes maps is an error.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from emotion_pipeline.labels import LABEL_INDEX, LABELS, UnknownLabelError, canonical
from emotion_pipeline.models.sources import ModelUnavailableError

log = logging.getLogger(__name__)


class LabelMap:
    def __init__(self, source_labels: list[str], where: str | Path):
        self.source_labels = [str(s) for s in source_labels]
        self.matrix = np.zeros((len(self.source_labels), len(LABELS)), np.float32)  # source class -> ours
        for i, name in enumerate(self.source_labels):
            try:
                ours = canonical(name)
            except UnknownLabelError:
                log.warning("%s: class %d is named %r, not an emotion we know; its probability is dropped", where, i, name)
                ours = None
            if ours is not None:
                self.matrix[i, LABEL_INDEX[ours]] = 1.0
        if not self.matrix.any():
            raise ValueError(f"{where}: none of the classes {self.source_labels} maps onto {', '.join(LABELS)}; "
                             f"fix id2label in config.json")
        self.dropped = [n for n, row in zip(self.source_labels, self.matrix) if not row.any()]
        self.missing = [label for j, label in enumerate(LABELS) if not self.matrix[:, j].any()]
        if self.dropped or self.missing:
            log.info("%s: classes dropped %s, labels missing (probability 0) %s", Path(where).name, self.dropped, self.missing)

    @classmethod
    def from_config(cls, config, where: str | Path) -> "LabelMap":
        return cls([config.id2label[i] for i in range(config.num_labels)], where)

    def __call__(self, source_probs: np.ndarray) -> np.ndarray:
        """Source-class probabilities (N, C) -> ours (N, 7)."""
        probs = np.asarray(source_probs, dtype=np.float32) @ self.matrix
        total = probs.sum(axis=1, keepdims=True)
        return np.where(total > 0, probs / np.maximum(total, 1e-12), 0.0).astype(np.float32)


def require_hf_folder(path: Path) -> None:
    """A local Hugging Face folder with safetensors weights, or ModelUnavailableError."""
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"{path}: not a Hugging Face model folder (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise ModelUnavailableError(f"{path}: no .safetensors weights (pickled .bin weights are not loaded)")

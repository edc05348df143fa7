"""The ``full`` profile's text model: any local Hugging Face sequence-classification folder.

``load_dir(path)`` reads a folder in the ``save_pretrained`` layout (config.json with id2label,
model.safetensors, tokenizer files), e.g. a DistilRoBERTa fine-tuned on Ekman emotions, strictly
offline (``local_files_only``, ``use_safetensors``). Downloading and caching such a folder is
models/hub.py's job.

The checkpoint's classes are mapped onto our LABELS with ``pipeline.labels.canonical``:
classes with no Ekman class (e.g. "love") have their probability mass removed and each row is
renormalised; our labels the checkpoint lacks get probability 0; two classes that map to the
same label are summed. A class name the project does not know (e.g. generic "LABEL_3") is an
error, since guessing would silently mislabel.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline.labels import LABEL_INDEX, LABELS, UnknownLabelError, canonical

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 128  # tokens per text; transcript windows are a sentence or two


class HFTextClassifier:
    """predict(texts) -> (probs (N, 7) float32 over LABELS, embeddings (N, hidden) float32)."""

    def __init__(self, model, tokenizer, path: Path, device: str | torch.device = "cpu",
                 max_length: int = DEFAULT_MAX_LENGTH):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.path = Path(path)
        self.device = torch.device(device)
        self.max_length = max_length
        self.source_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        # (num_source_classes, 7) 0/1 matrix: source class -> our label (all-zero row = dropped)
        self.mapping = np.zeros((len(self.source_labels), len(LABELS)), np.float32)
        for i, name in enumerate(self.source_labels):
            try:
                ours = canonical(str(name))
            except UnknownLabelError:
                raise ValueError(f"{self.path}: class {i} is named {name!r}, which maps to none of "
                                 f"{', '.join(LABELS)}; fix id2label in config.json") from None
            if ours is not None:
                self.mapping[i, LABEL_INDEX[ours]] = 1.0
        if not self.mapping.any():
            raise ValueError(f"{self.path}: none of the classes {self.source_labels} maps onto {LABELS}")
        self.dropped = [n for n, row in zip(self.source_labels, self.mapping) if not row.any()]
        self.missing = [l for j, l in enumerate(LABELS) if not self.mapping[:, j].any()]
        if self.dropped or self.missing:
            log.info("%s: classes dropped %s, labels missing (probability 0) %s", self.path.name, self.dropped, self.missing)

    def map_probs(self, source_probs: np.ndarray) -> np.ndarray:
        """Source-class probabilities (N, C) -> ours (N, 7), renormalised after dropping unmapped mass."""
        probs = source_probs.astype(np.float32) @ self.mapping
        total = probs.sum(axis=1, keepdims=True)
        return np.where(total > 0, probs / np.maximum(total, 1e-12), 0.0).astype(np.float32)

    @torch.inference_mode()
    def predict(self, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """Batched; texts are sorted by length to cut padding, results come back in input order.

        The embedding is the mean of the last hidden layer over non-padding tokens.
        """
        texts = [str(t) for t in texts]
        hidden_size = self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.dim
        probs = np.zeros((len(texts), len(LABELS)), np.float32)
        embs = np.zeros((len(texts), hidden_size), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            out = self.model(**enc, output_hidden_states=True)
            source = torch.softmax(out.logits.float(), -1).cpu().numpy()
            probs[idx] = self.map_probs(source)
            last = out.hidden_states[-1].float()
            mask = enc["attention_mask"].unsqueeze(-1).to(last.dtype)
            embs[idx] = ((last * mask).sum(1) / mask.sum(1).clamp_min(1.0)).cpu().numpy()
        return probs, embs


def load_dir(path: str | Path, device: str | torch.device = "cpu", max_length: int = DEFAULT_MAX_LENGTH) -> HFTextClassifier:
    """Load a local sequence-classification folder without touching the network."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from models.registry import ModelUnavailableError

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"{path}: not a Hugging Face model folder (no config.json)")
    if not any(path.glob("*.safetensors")):
        raise ModelUnavailableError(f"{path}: no .safetensors weights (pickled .bin weights are not loaded)")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    return HFTextClassifier(model, tokenizer, path, device=device, max_length=max_length)

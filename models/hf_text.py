"""The ``full`` profile's text model: any local Hugging Face sequence-classification folder.

``load_dir(path)`` reads a folder in the ``save_pretrained`` layout (config.json with id2label,
model.safetensors, tokenizer files), e.g. a DistilRoBERTa fine-tuned on Ekman emotions, strictly
offline (``local_files_only``, ``use_safetensors``). Downloading and caching such a folder is
models.registry's job (``load(name, kind="text")``).

The checkpoint's classes are mapped onto our LABELS by ``models.hf_labels.LabelMap``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from emotion_pipeline.models.hf_labels import LabelMap, require_hf_folder
from emotion_pipeline.labels import LABELS
from emotion_pipeline.models.contract import InputContract

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
        self.labels = LabelMap.from_config(model.config, self.path)

    def contract(self) -> InputContract:
        """Text truncated to ``max_length`` tokens; classes mapped onto LABELS."""
        return InputContract(LABELS, max_tokens=self.max_length)

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
            probs[idx] = self.labels(source)
            last = out.hidden_states[-1].float()
            mask = enc["attention_mask"].unsqueeze(-1).to(last.dtype)
            embs[idx] = ((last * mask).sum(1) / mask.sum(1).clamp_min(1.0)).cpu().numpy()
        return probs, embs


def load_dir(path: str | Path, device: str | torch.device = "cpu", max_length: int = DEFAULT_MAX_LENGTH) -> HFTextClassifier:
    """Load a local sequence-classification folder without touching the network."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    require_hf_folder(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    return HFTextClassifier(model, tokenizer, path, device=device, max_length=max_length)

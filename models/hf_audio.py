"""A Wav2Vec2 speech-emotion classifier from a local Hugging Face folder, mapped onto our LABELS.

``load_dir(path)`` reads a folder in the hub layout (config.json, model.safetensors,
preprocessor_config.json) of a ``Wav2Vec2ForSequenceClassification`` with local_files_only and
use_safetensors, so it never downloads and never unpickles. Fetching and caching the folder is
models.registry's job (``load(name, kind="audio")``).

Labels are mapped onto ours by ``models.hf_labels.LabelMap`` (unknown or non-Ekman classes dropped
and renormalised away; our labels the checkpoint lacks get 0).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emotion_pipeline.models.hf_labels import LabelMap, require_hf_folder
from emotion_pipeline.models.sources import ModelUnavailableError
from emotion_pipeline.labels import LABELS, NUM_LABELS
from emotion_pipeline.models.contract import InputContract
from emotion_pipeline.models import SAMPLE_RATE_HZ   # every Wav2Vec2 checkpoint is trained on 16 kHz audio

log = logging.getLogger(__name__)

DEFAULT_BATCH = 8        # waves per forward pass; 8 x 10 s through wav2vec2-base is ~2 GB on CPU


@dataclass
class HFAudioClassifier:
    model: torch.nn.Module
    feature_extractor: object
    labels: LabelMap
    path: str
    device: torch.device
    def contract(self) -> InputContract:
        """16 kHz mono waves of any length (load_dir refuses another rate); classes mapped onto LABELS."""
        return InputContract(LABELS, sample_rate_hz=int(getattr(self.feature_extractor, "sampling_rate",
                                                                   SAMPLE_RATE_HZ)))

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def predict(self, waves: list[np.ndarray], batch_size: int = DEFAULT_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """16 kHz mono waves -> (probs (N, 7) float32 over LABELS, embeddings (N, hidden) float32).

        The embedding is the last hidden layer mean-pooled over the wave's own frames (padding
        excluded). Waves are batched by length; checkpoints whose feature extractor does not use
        an attention mask (wav2vec2-base style, group-norm front end) see padding, so for those
        waves of different lengths are run one at a time to keep outputs independent of batching.
        """
        n = len(waves)
        probs = np.zeros((n, NUM_LABELS), dtype=np.float32)
        embs = np.zeros((n, self.embedding_dim), dtype=np.float32)
        if n == 0:
            return probs, embs
        use_mask = bool(getattr(self.feature_extractor, "return_attention_mask", False))
        order = sorted(range(n), key=lambda i: len(waves[i]))
        batches, current = [], []
        for i in order:
            if current and (len(current) == batch_size or
                            (not use_mask and len(waves[i]) != len(waves[current[0]]))):
                batches.append(current)
                current = []
            current.append(i)
        batches.append(current)
        for idx in batches:
            batch = [np.asarray(waves[i], dtype=np.float32).reshape(-1) for i in idx]
            batch = [w if len(w) >= 400 else np.pad(w, (0, 400 - len(w))) for w in batch]  # >= 25 ms
            inputs = self.feature_extractor(batch, sampling_rate=SAMPLE_RATE_HZ, return_tensors="pt",
                                            padding=True, return_attention_mask=use_mask)
            values = inputs["input_values"].to(self.device)
            mask = inputs.get("attention_mask") if use_mask else None
            mask = mask.to(self.device) if mask is not None else None
            out = self.model(input_values=values, attention_mask=mask, output_hidden_states=True)
            hidden = out.hidden_states[-1]                                   # (B, frames, hidden)
            if mask is not None:
                fmask = self.model._get_feature_vector_attention_mask(hidden.shape[1], mask).to(hidden.dtype)
            else:
                fmask = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
            pooled = (hidden * fmask[..., None]).sum(1) / fmask.sum(1, keepdim=True).clamp_min(1)
            p = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()
            probs[idx] = self.labels(p)
            embs[idx] = pooled.float().cpu().numpy()
        return probs, embs


def load_dir(path: str | Path, device: str | torch.device = "cpu") -> HFAudioClassifier:
    """Load a local Wav2Vec2ForSequenceClassification folder; never touches the network."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    path = Path(path)
    require_hf_folder(path)
    if not (path / "preprocessor_config.json").is_file():
        raise ModelUnavailableError(f"{path}: no preprocessor_config.json (the feature extractor's settings)")
    device = torch.device(device)
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(path), local_files_only=True)
    if getattr(extractor, "sampling_rate", SAMPLE_RATE_HZ) != SAMPLE_RATE_HZ:
        raise ModelUnavailableError(f"{path}: feature extractor expects {extractor.sampling_rate} Hz, not 16 kHz")
    model = Wav2Vec2ForSequenceClassification.from_pretrained(str(path), local_files_only=True,
                                                              use_safetensors=True)
    model.to(device).eval()
    return HFAudioClassifier(model=model, feature_extractor=extractor, labels=LabelMap.from_config(model.config, path),
                             path=str(path), device=device)

"""The ``full`` profile's face model: a local Hugging Face image-classification folder
(e.g. a ViT fine-tuned for facial expression), labels mapped onto ours.

The input contract comes from the checkpoint's own image-processor config (size, mean, std),
never from pipeline code. Loading is strictly local (``local_files_only``, safetensors only);
downloading and caching is models.registry's job (``load(name, kind="face")``).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from emotion_pipeline.labels import LABELS
from emotion_pipeline.models.contract import InputContract
from emotion_pipeline.models.hf_labels import LabelMap, require_hf_folder


class HFFaceClassifier:
    """predict(crops) -> (probs (N, 7) over LABELS, embeddings (N, hidden)); crops are BGR or grey uint8."""

    def __init__(self, model, processor, path: Path, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.labels = LabelMap.from_config(model.config, path)

    def contract(self) -> InputContract:
        """The checkpoint's image processor's size and normalisation; classes mapped onto LABELS."""
        size = getattr(self.processor, "size", None)      # a dict, a transformers SizeDict, or an int
        side = size if isinstance(size, int) or size is None else next(
            (v for k in ("height", "shortest_edge") if isinstance(v := getattr(size, k, None) if not hasattr(size, "get")
                                                                 else size.get(k), int)), None)
        mean, std = getattr(self.processor, "image_mean", None), getattr(self.processor, "image_std", None)
        return InputContract(LABELS, crop_px=int(side) if side else None, grey=False,
                             mean=tuple(map(float, mean)) if mean is not None else None,
                             std=tuple(map(float, std)) if std is not None else None)

    @staticmethod
    def _rgb(crops: np.ndarray) -> list[np.ndarray]:
        crops = np.asarray(crops)
        if crops.ndim == 3:  # grey (N, H, W)
            return [cv2.cvtColor(c, cv2.COLOR_GRAY2RGB) for c in crops]
        return [cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in crops]

    @torch.inference_mode()
    def predict(self, crops: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        images = self._rgb(crops)
        probs, embs = [], []
        for i in range(0, len(images), batch_size):
            inputs = self.processor(images=images[i:i + batch_size], return_tensors="pt").to(self.device)
            out = self.model(**inputs, output_hidden_states=True)
            probs.append(self.labels(torch.softmax(out.logits.float(), -1).cpu().numpy()))
            embs.append(out.hidden_states[-1].float().mean(dim=1).cpu().numpy())
        if not probs:
            return np.zeros((0, 7), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(probs), np.concatenate(embs)


def load_dir(path: str | Path, device: str | torch.device = "cpu") -> HFFaceClassifier:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    path = Path(path)
    require_hf_folder(path)
    processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True, use_fast=False)
    model = AutoModelForImageClassification.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    return HFFaceClassifier(model, processor, path, device=device)

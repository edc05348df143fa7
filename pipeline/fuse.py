"""Late fusion of the per-second modality scores.

Two fusers:
- ``average``: confidence-weighted average of the present modalities' probabilities. The weight
  of modality m is ``w_m * c_m``, with ``w_m`` from the config (``modality_weights``) and
  ``c_m`` = its top probability (a peaked distribution counts more than a flat one). Missing
  modalities take no part; with none present the second's fused entry is null.
- ``head``: the trained FusionHead (models/fusion_head.py), used only when the encoders it was
  trained on (recorded in its metadata) are the ones configured; otherwise the run says why and
  falls back to the average.

Each fused second records ``weights``, {modality: share} summing to 1, saying how much each
present modality counted: for the average its normalised ``w_m * c_m``; for the head its
leave-one-out influence (how far the fused scores move, in total variation, without it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from emotion_pipeline.models import registry
from emotion_pipeline.models.fusion_head import MODALITIES
from emotion_pipeline.labels import NUM_LABELS
from emotion_pipeline.records import ModalityScores

log = logging.getLogger(__name__)

Row = Sequence[ModalityScores | None]  # one second: (face, audio, text)


def average(row: Row, weights: Sequence[float]) -> ModalityScores | None:
    total = np.zeros(NUM_LABELS, dtype=np.float64)
    norm = 0.0
    used: dict[str, float] = {}
    for name, entry, w in zip(MODALITIES, row, weights):
        if entry is None or w <= 0:
            continue
        c = float(np.max(entry.probs))
        total += w * c * entry.probs
        norm += w * c
        used[name] = w * c
    if norm <= 0:
        return None
    return ModalityScores(probs=(total / norm).astype(np.float32), details={
        "method": "average", "modalities": list(used), "weights": _shares(used)})


def _shares(raw: dict[str, float]) -> dict[str, float]:
    """{modality: share} summing to 1 (equal shares when every raw value is 0), rounded for the JSON."""
    total = sum(raw.values())
    if total <= 0:
        return {m: round(1.0 / len(raw), 4) for m in raw}
    return {m: round(v / total, 4) for m, v in raw.items()}


@dataclass
class HeadFuser:
    loaded: registry.LoadedModel

    @property
    def encoders(self) -> dict[str, str]:
        return dict(self.loaded.meta.get("encoders", {}))

    def fuse(self, rows: list[Row]) -> list[ModalityScores | None]:
        n = len(rows)
        probs = torch.zeros(n, len(MODALITIES), NUM_LABELS)
        mask = torch.zeros(n, len(MODALITIES))
        cfg = self.loaded.module.config
        embs = [torch.zeros(n, d) for d in cfg.embed_dims] if cfg.embed_dims else None
        for i, row in enumerate(rows):
            for j, entry in enumerate(row):
                if entry is not None:
                    probs[i, j] = torch.from_numpy(entry.probs)
                    mask[i, j] = 1
                    if embs is not None and entry.embedding is not None:
                        embs[j][i] = torch.from_numpy(np.asarray(entry.embedding, dtype=np.float32))
        with torch.inference_mode():
            out = torch.softmax(self.loaded.module(probs, mask, embs), dim=-1).numpy()
            # each modality's weight: leave-one-out influence, the total-variation distance between
            # the fused scores with and without it (shares summing to 1; a lone modality weighs 1)
            influence = np.zeros((n, len(MODALITIES)))
            for j in range(len(MODALITIES)):
                without = mask.clone()
                without[:, j] = 0
                alone = torch.softmax(self.loaded.module(probs, without, embs), dim=-1).numpy()
                influence[:, j] = 0.5 * np.abs(out - alone).sum(-1)
        rows_out: list[ModalityScores | None] = []
        for i in range(n):
            present = [(j, m) for j, m in enumerate(MODALITIES) if mask[i, j] > 0]
            if not present:
                rows_out.append(None)
                continue
            raw = {m: (1.0 if len(present) == 1 else float(influence[i, j])) for j, m in present}
            rows_out.append(ModalityScores(probs=out[i].astype(np.float32), details={
                "method": "head", "modalities": [m for _, m in present], "weights": _shares(raw)}))
        return rows_out


# Encoder settings besides the weights that change what an encoder outputs (recorded with a head).
OUTPUT_SETTINGS = ("tta",)


def encoder_record(described: dict[str, dict]) -> dict[str, dict]:
    """What a fusion head records about its encoders, from each one's describe():
    {"encoders": {modality: sha256}, "encoder_settings": {modality: {setting: value}}},
    e.g. encoder_settings {"face": {"tta": "flip"}}."""
    return {"encoders": {m: d.get("sha256") for m, d in described.items()},
            "encoder_settings": {m: {k: d[k] for k in OUTPUT_SETTINGS if k in d} for m, d in described.items()
                                 if any(k in d for k in OUTPUT_SETTINGS)}}


def head_mismatch(head: registry.LoadedModel, described: dict[str, dict]) -> str | None:
    """Why the head cannot be used with the encoders ``described`` ({modality: describe()}), or
    None if it can: their weights and output settings must be the ones it was trained on."""
    current = encoder_record(described)
    encoder_ids, settings = current["encoders"], current["encoder_settings"]
    recorded = head.meta.get("encoders") or {}
    for modality in MODALITIES:
        want, have = recorded.get(modality), encoder_ids.get(modality)
        if want and have and want != have:
            return (f"fusion head {head.name} was trained on {modality} encoder {want[:12]}…, "
                    f"but this run uses {have[:12]}…")
        if want and not have:
            return f"fusion head {head.name} expects a {modality} encoder that this run does not have"
    recorded_settings = head.meta.get("encoder_settings")
    if recorded_settings is not None:  # heads exported before settings were recorded: weights only
        for modality in MODALITIES:
            want, have = recorded_settings.get(modality, {}), settings.get(modality, {})
            if want != have:
                return (f"fusion head {head.name} was trained on {modality} scores with {want or 'no extra settings'}, "
                        f"but this run uses {have or 'no extra settings'}")
    return None


def fuse_all(rows: list[Row], *, method: str, weights: Sequence[float], head: HeadFuser | None) -> list[ModalityScores | None]:
    if method == "head" and head is not None:
        return head.fuse(rows)
    return [average(row, weights) for row in rows]


def smooth_one(entry: ModalityScores, neighbours: Sequence[ModalityScores | None], window_s: int, *,
               causal: bool = False) -> ModalityScores:
    """One second's smoothed entry: the mean of its ``neighbours`` that have a fused entry (the
    second itself among them), renormalised; the window and its kind go into the details."""
    p = np.mean([f.probs for f in neighbours if f is not None], axis=0).astype(np.float32)
    details = {**entry.details, "smoothing_window_s": window_s}
    if causal:
        details["smoothing"] = "causal"
    return ModalityScores(probs=p / p.sum(), details=details)


def smooth(fused: list[ModalityScores | None], window_s: int, *, causal: bool = False) -> list[ModalityScores | None]:
    """Moving average over neighbouring seconds that have a fused entry (gaps stay gaps): centred,
    or ``causal`` (this second and the ``window_s - 1`` before it: a stream cannot look ahead)."""
    if window_s <= 1:
        return fused
    half = window_s // 2
    out: list[ModalityScores | None] = []
    for i, entry in enumerate(fused):
        lo, hi = (i - window_s + 1, i + 1) if causal else (i - half, i + half + 1)
        out.append(None if entry is None else smooth_one(entry, fused[max(0, lo): hi], window_s, causal=causal))
    return out

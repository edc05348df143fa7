"""Clip-level evaluation of the whole pipeline on labelled video clips.

``python -m emotion_pipeline evaluate clips --data FOLDER_OR_CSV [--adapter mead|ravdess|meld|csv]``:
each clip is analysed; its label is the most frequent fused label over its seconds (ties go to
the higher mean fused probability). Clips whose label has no Ekman class (MEAD contempt) are
reported but cannot be right; they are counted in ``n_clips`` and listed under ``unmappable``.
A clip that cannot be analysed (a ``PipelineError``: unreadable, no streams, ...) is logged, listed
under ``skipped`` with its reason and left out of the figures; the others are still evaluated.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from emotion_pipeline.errors import PipelineError, bad_file
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import report

log = logging.getLogger(__name__)


POOLS = ("vote", "mean")


def clip_label(doc: dict, modality: str = "fused", pool: str = "vote") -> str | None:
    """Most frequent label of ``modality`` over the clip's seconds (ties: higher mean score);
    ``pool="mean"``: the label of the mean of the seconds' scores instead."""
    fused = [t[modality] for t in doc["timeline"] if t[modality]]
    if not fused:
        return None
    if pool == "mean":
        mean = {label: np.mean([f["scores"][label] for f in fused]) for label in LABELS}
        return max(LABELS, key=mean.get)
    counts = Counter(f["label"] for f in fused)
    top = max(counts.values())
    tied = [label for label, c in counts.items() if c == top]
    mean = {label: np.mean([f["scores"][label] for f in fused]) for label in tied}
    return max(tied, key=mean.get)


def run(data: Path, *, adapter: str = "mead", device: str = "cpu", model: str | None = None,
        whisper: str = "auto") -> dict:
    """``whisper``: the whisper_model setting (``none``: no words; the default: the packaged ASR)."""
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig
    from emotion_pipeline.corpora.clips import mead_files, read_clips

    clips = read_clips(data, adapter)
    # contempt clips are skipped by the adapter; list them for the report
    unmappable = [f.name for f, label in mead_files(data) if label is None] if adapter == "mead" else []
    analyzer = Analyzer(AnalyzeConfig(whisper_model=whisper, offline=True, progress=False, device=device,
                                      **({"face_model": model} if model else {})))
    rows, y_true, y_pred, skipped = [], [], [], []
    for clip in clips:
        try:
            doc = analyzer.analyze(clip.path)
        except PipelineError as exc:   # one bad clip never stops the evaluation
            log.warning("skipped %s", exc)
            skipped.append({"clip": str(clip.path), "error": str(exc)})
            continue
        pred = clip_label(doc)
        face = Counter(t["face"]["label"] for t in doc["timeline"] if t["face"])
        alone = {m: clip_label(doc, m) for m in ("face", "audio", "text")}
        pooled = {m: clip_label(doc, m, "mean") for m in ("fused", "face", "audio", "text")}
        rows.append({"clip": clip.path.name, "label": clip.label, "predicted": pred, "correct": pred == clip.label,
                     "face_labels": dict(face), "alone": alone, "mean_pooled": pooled})
        y_true.append(LABELS.index(clip.label))
        y_pred.append(LABELS.index(pred) if pred else -1)
    if not rows:
        raise bad_file(data, f"none of its {len(clips)} clips could be analysed")
    ok = [p >= 0 for p in y_pred]
    result = report([t for t, k in zip(y_true, ok) if k], [p for p, k in zip(y_pred, ok) if k], LABELS)
    # each modality on its own, over the clips where it gave a label (its clip label as if it were fused)
    single = {}
    for m in ("face", "audio", "text"):
        mine = [r for r in rows if r["alone"][m]]
        alone = report([LABELS.index(r["label"]) for r in mine], [LABELS.index(r["alone"][m]) for r in mine], LABELS)
        single[m] = {"clips": len(mine), "correct": sum(1 for r in mine if r["alone"][m] == r["label"]),
                     "per_class_recall": alone["per_class_recall"], "read_as_neutral": alone["read_as_neutral"]}
    return {"data": str(data), "adapter": adapter, "n_clips": len(rows) + len(unmappable), "skipped": skipped,
            "correct": sum(r["correct"] for r in rows), "accuracy_mappable": result["accuracy"],
            "uar": result.get("uar"), "per_class_recall": result["per_class_recall"],
            "read_as_neutral": result["read_as_neutral"], "confusion_matrix": result["confusion_matrix"],
            "modality_alone": single,
            # the clip label by the mean of the seconds' scores instead of the most frequent label
            "mean_pooled_correct": {m: sum(1 for r in rows if r["mean_pooled"][m] == r["label"])
                                    for m in ("fused", "face", "audio", "text")},
            "unmappable": unmappable, "clips": rows, "models": analyzer.models}

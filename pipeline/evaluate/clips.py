"""Clip-level evaluation of the whole pipeline on labelled video clips.

``python -m pipeline evaluate clips --data FOLDER_OR_CSV [--adapter mead|ravdess|meld|csv]``:
each clip is analysed; its label is the most frequent fused label over its seconds (ties go to
the higher mean fused probability). Clips whose label has no Ekman class (MEAD contempt) are
reported but cannot be right; they are counted in ``n_clips`` and listed under ``unmappable``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.labels import LABELS
from pipeline.metrics import report


def clip_label(doc: dict) -> str | None:
    fused = [t["fused"] for t in doc["timeline"] if t["fused"]]
    if not fused:
        return None
    counts = Counter(f["label"] for f in fused)
    top = max(counts.values())
    tied = [label for label, c in counts.items() if c == top]
    mean = {label: np.mean([f["scores"][label] for f in fused]) for label in tied}
    return max(tied, key=mean.get)


def run(data: Path, *, adapter: str = "mead", device: str = "cpu", model: str | None = None) -> dict:
    from pipeline.analyze import Analyzer
    from pipeline.config import AnalyzeConfig
    from pipeline.errors import PipelineError
    from pipeline.train.manifests import mead_files, read_clips

    try:
        clips = read_clips(data, adapter)
    except PipelineError as e:
        raise ValueError(str(e)) from e
    # contempt clips are skipped by the adapter; list them for the report
    unmappable = [f.name for f, label in mead_files(data) if label is None] if adapter == "mead" else []
    analyzer = Analyzer(AnalyzeConfig(whisper_model="none", offline=True, progress=False, device=device,
                                      **({"face_model": model} if model else {})))
    rows, y_true, y_pred = [], [], []
    for clip in clips:
        doc = analyzer.analyze(clip.path)
        pred = clip_label(doc)
        face = Counter(t["face"]["label"] for t in doc["timeline"] if t["face"])
        rows.append({"clip": clip.path.name, "label": clip.label, "predicted": pred, "correct": pred == clip.label,
                     "face_labels": dict(face)})
        y_true.append(LABELS.index(clip.label))
        y_pred.append(LABELS.index(pred) if pred else -1)
    ok = [p >= 0 for p in y_pred]
    result = report([t for t, k in zip(y_true, ok) if k], [p for p, k in zip(y_pred, ok) if k], LABELS)
    return {"data": str(data), "adapter": adapter, "n_clips": len(rows) + len(unmappable),
            "correct": sum(r["correct"] for r in rows), "accuracy_mappable": result["accuracy"],
            "unmappable": unmappable, "clips": rows, "models": analyzer.models}

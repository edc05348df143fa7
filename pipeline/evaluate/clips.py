"""Clip-level evaluation of the whole pipeline on labelled video clips.

``python -m emotion_pipeline evaluate clips --data FOLDER_OR_CSV [--adapter mead|ravdess|meld|csv]``:
each clip is analysed; its label is the most frequent fused label over its seconds (ties go to
the higher mean fused probability). Clips whose label has no Ekman class (MEAD contempt) are
reported but cannot be right; they are counted in ``n_clips`` and listed under ``unmappable``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import report


def clip_label(doc: dict, modality: str = "fused") -> str | None:
    """Most frequent label of ``modality`` over the clip's seconds (ties: higher mean score)."""
    fused = [t[modality] for t in doc["timeline"] if t[modality]]
    if not fused:
        return None
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
    from emotion_pipeline.errors import PipelineError
    from emotion_pipeline.corpora.clips import mead_files, read_clips

    try:
        clips = read_clips(data, adapter)
    except PipelineError as e:
        raise ValueError(str(e)) from e
    # contempt clips are skipped by the adapter; list them for the report
    unmappable = [f.name for f, label in mead_files(data) if label is None] if adapter == "mead" else []
    analyzer = Analyzer(AnalyzeConfig(whisper_model=whisper, offline=True, progress=False, device=device,
                                      **({"face_model": model} if model else {})))
    rows, y_true, y_pred = [], [], []
    for clip in clips:
        doc = analyzer.analyze(clip.path)
        pred = clip_label(doc)
        face = Counter(t["face"]["label"] for t in doc["timeline"] if t["face"])
        alone = {m: clip_label(doc, m) for m in ("face", "audio", "text")}
        rows.append({"clip": clip.path.name, "label": clip.label, "predicted": pred, "correct": pred == clip.label,
                     "face_labels": dict(face), "alone": alone})
        y_true.append(LABELS.index(clip.label))
        y_pred.append(LABELS.index(pred) if pred else -1)
    ok = [p >= 0 for p in y_pred]
    result = report([t for t, k in zip(y_true, ok) if k], [p for p, k in zip(y_pred, ok) if k], LABELS)
    # each modality on its own, over the clips where it gave a label (its clip label as if it were fused)
    single = {m: {"clips": sum(1 for r in rows if r["alone"][m]),
                  "correct": sum(1 for r in rows if r["alone"][m] and r["alone"][m] == r["label"])}
              for m in ("face", "audio", "text")}
    return {"data": str(data), "adapter": adapter, "n_clips": len(rows) + len(unmappable),
            "correct": sum(r["correct"] for r in rows), "accuracy_mappable": result["accuracy"],
            "uar": result.get("uar"), "modality_alone": single,
            "unmappable": unmappable, "clips": rows, "models": analyzer.models}

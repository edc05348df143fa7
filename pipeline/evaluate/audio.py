"""Evaluate a speech emotion model on labelled audio: ``run(data, model=..., device=...) -> dict``.

``data`` (read by ``pipeline.corpora.speech.labelled_audio``) is either
* a folder holding RAVDESS-named files ``03-01-EE-II-SS-RR-AA.flac|wav`` at any depth (labels from
  ``pipeline.labels.ravdess_fields``, calm -> neutral); other files are ignored; or
* a CSV manifest with columns ``path,label``: labels in our seven names (or any synonym
  ``pipeline.labels.canonical`` knows; rows mapping to no Ekman class are dropped), relative
  paths resolved against the CSV's folder.
Audio is read with soundfile (librosa as fallback), made mono, resampled to the model's rate and
scored clip-level (pipeline.audio_windows.score_clip: 3 s windows every 1 s, probabilities
averaged). Files that cannot be read are skipped with a warning and counted in ``skipped``.

Returns ``pipeline.metrics.report`` over the 7 labels plus model, sha256, data, format, n.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from emotion_pipeline.corpora.speech import labelled_audio
from emotion_pipeline.errors import bad_file
from emotion_pipeline.labels import LABELS

log = logging.getLogger(__name__)


def run(data: Path, *, model: str = "audio-cnn", device: str = "cpu") -> dict:
    """Metrics of ``model`` (a registry name or .safetensors path) on labelled audio ``data``."""
    from emotion_pipeline.models import registry
    from emotion_pipeline.audio_windows import load_audio_file, score_clip
    from emotion_pipeline.metrics import report

    data = Path(data)
    items, fmt = labelled_audio(data)
    loaded = registry.load(model, device=device, kind="audio")
    if loaded.arch != "audio_cnn":
        raise ValueError(f"{model}: architecture {loaded.arch!r} is not an audio model")
    rate = loaded.module.config.sample_rate_hz
    y_true, y_pred, skipped = [], [], 0
    for path, label in items:
        try:
            wave = load_audio_file(path, rate)
        except Exception as exc:  # unreadable or missing file: count it, keep going
            log.warning("%s: skipped (%s)", path, " ".join(str(exc).split()) or type(exc).__name__)
            skipped += 1
            continue
        if wave.size == 0:
            log.warning("%s: skipped (no samples)", path)
            skipped += 1
            continue
        probs = score_clip(loaded.module, wave, rate)
        y_true.append(label)
        y_pred.append(int(np.argmax(probs)))
    if not y_true:
        raise bad_file(data, f"none of the {len(items)} listed audio files could be read")
    result = report(y_true, y_pred, list(LABELS))
    result.update(model=loaded.name, sha256=loaded.sha256, data=str(data), format=fmt,
                  n=len(y_true), n_files=len(y_true), skipped=skipped)
    log.info("%s on %s (%s, n=%d, skipped %d): UAR %.4f, accuracy %.4f", loaded.name, data, fmt,
             len(y_true), skipped, result["uar"], result["accuracy"])
    return result

"""Predictions for a dataset file: ``python -m emotion_pipeline predict {face,audio,text} --data FILE --out predictions.csv``.

Reads any file the matching ``evaluate`` command reads (the same readers) and writes one row per
input, atomically:

    id, true_label, label, neutral, happy, sad, angry, fearful, disgusted, surprised, model

- ``id``: face: the npz's ``filenames`` entry, else the row index; audio: the file's path relative
  to the data folder (or as the CSV lists it); text: the row's index among the file's data rows
  (GoEmotions rows whose labels map to several of our classes are skipped, as ``evaluate`` does);
- ``true_label``: the file's label mapped onto ours (empty when it has none of ours);
- ``label`` and the seven scores: the model's prediction, probabilities 0..1 (empty for an audio
  file that cannot be read; a warning names it);
- ``model``: name, version, the first 12 hex digits of the weights' SHA-256, and settings (face TTA).

A cell that starts like a spreadsheet formula (``=``, ``+``, ``-``, ``@``) gets a leading ``'``; an
``--out`` that is the ``--data`` file is refused before any model loads.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import numpy as np

from emotion_pipeline.errors import InputError
from emotion_pipeline.fileio import atomic_write_text, csv_cell
from emotion_pipeline.labels import LABELS, canonical

log = logging.getLogger(__name__)

COLUMNS = ("id", "true_label", "label", *LABELS, "model")


def _model_tag(loaded, **settings) -> str:
    extra = "".join(f" {k}={v}" for k, v in settings.items())
    return f"{loaded.name} {loaded.meta.get('version') or ''} sha256:{(loaded.sha256 or '')[:12]}{extra}".replace("  ", " ")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def face_rows(data: Path, *, model: str, device: str, tta: str | None, batch_size: int = 256):
    from emotion_pipeline.models.face_cnn import predict_logits, tta_mode
    from emotion_pipeline.models.registry import load
    from emotion_pipeline.corpora.faces import fer_faces

    tta = tta_mode(tta)
    faces = fer_faces(data)
    loaded = load(model, device=device, kind="face")
    probs = _softmax(predict_logits(loaded.module, faces.images, tta, batch_size=batch_size).numpy().astype(np.float64))
    ids = faces.filenames if faces.filenames is not None else np.arange(len(probs))
    tag = _model_tag(loaded, tta=tta)
    for i, p in enumerate(probs):
        yield str(ids[i]), LABELS[faces.labels[i]] if faces.labels[i] >= 0 else None, p, tag


def audio_rows(data: Path, *, model: str, device: str):
    from emotion_pipeline.models import registry
    from emotion_pipeline.audio_windows import load_audio_file, score_clip
    from emotion_pipeline.corpora.speech import labelled_audio

    items, _ = labelled_audio(data)
    loaded = registry.load(model, device=device, kind="audio")
    if loaded.arch != "audio_cnn":
        raise ValueError(f"{model}: architecture {loaded.arch!r} is not an audio model")
    rate = loaded.module.config.sample_rate_hz
    tag = _model_tag(loaded)
    base = data if data.is_dir() else data.parent
    for path, label in items:
        ident = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        try:
            wave = load_audio_file(path, rate)
            if wave.size == 0:
                raise ValueError("no samples")
        except Exception as exc:   # unreadable or missing file: a row without a prediction
            log.warning("%s: no prediction (%s)", path, " ".join(str(exc).split()) or type(exc).__name__)
            yield ident, LABELS[label], None, tag
            continue
        yield ident, LABELS[label], np.asarray(score_clip(loaded.module, wave, rate), dtype=np.float64), tag


def text_rows(data: Path, *, model: str, device: str, batch_size: int = 64):
    from emotion_pipeline.models import registry
    from emotion_pipeline.corpora.text import read_rows

    texts, names, _, _ = read_rows(data)
    loaded = registry.load(model, device=device, kind="text")
    probs, _ = loaded.module.predict(list(texts), batch_size=batch_size) if texts else (np.zeros((0, 7)), None)
    tag = _model_tag(loaded)
    for i, (name, p) in enumerate(zip(names, probs)):
        try:
            gold = canonical(name)
        except ValueError:
            gold = None
        yield str(i), gold, np.asarray(p, dtype=np.float64), tag


DEFAULT_MODELS = {"face": "face-cnn", "audio": "audio-cnn", "text": "text-minilm"}


def run(modality: str, data: str | Path, out: str | Path, *, model: str | None = None, device: str = "cpu",
        tta: str | None = "flip") -> Path:
    """Write the predictions CSV for ``data``; returns its path. ValueError (one line naming the
    file) when the data cannot be read."""
    data = Path(data)
    if os.path.realpath(out) == os.path.realpath(data):   # before any model loads: the dataset is never replaced
        raise InputError(f"{out}: the predictions would replace the data file --data {data}; choose another --out")
    model = model or DEFAULT_MODELS[modality]
    if modality == "face":
        rows = face_rows(data, model=model, device=device, tta=tta)
    elif modality == "audio":
        rows = audio_rows(data, model=model, device=device)
    elif modality == "text":
        rows = text_rows(data, model=model, device=device)
    else:
        raise ValueError(f"unknown modality {modality!r}; choose face, audio or text")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for ident, gold, probs, tag in rows:
        scores = [""] * len(LABELS) if probs is None else [f"{x:.5f}" for x in probs]
        label = "" if probs is None else LABELS[int(np.argmax(probs))]
        writer.writerow([csv_cell(ident), csv_cell(gold or ""), label, *scores, csv_cell(tag)])   # no formulas
        n += 1
    path = atomic_write_text(out, buf.getvalue())
    log.info("%s: %d predictions of %s written to %s", data, n, model, path)
    return path

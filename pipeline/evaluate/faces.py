"""The face modality on labelled photos of real people: ``evaluate faces --data FOLDER_OR_CSV``.

The photos (``corpora.face_images.labelled_images``: a folder with ``labels.csv``, ``<emotion>/``
sub-folders, or a CSV; any size, colour or grey) are detected and cropped exactly as the video
pipeline does it (``faces.crop_still``, the pipeline's detector) and scored by the face model as
``analyze`` builds it (``encoders.load_predictor``: the shipped model with its test-time
augmentation). A photo in which no face is found is scored on the whole photo and counted as
``missed``; the figures are given over every photo and over the detected ones.

``--folds K --fold I`` keeps the people (``person_id``) of fold I of K only, the same stable
assignment the face trainer holds out (``corpora.face_images.person_folds``); ``--angles``
keeps the listed head angles (e.g. ``frontal,half_left,half_right``).

Reports ``metrics.report`` (accuracy, UAR, per-class recall, confusion matrix, ``read_as_neutral``:
how many faces of each class were read as neutral), per angle, and the model and detector used.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from emotion_pipeline.errors import bad_file
from emotion_pipeline.labels import LABELS

log = logging.getLogger(__name__)


def run(data: Path, *, model: str = "face-cnn", device: str = "cpu", tta: str | None = "default",
        folds: int = 0, fold: int = 0, angles: str | None = None, batch_size: int = 128,
        cache_dir: Path | None = None) -> dict:
    """Scores of the face model on the photos at ``data`` (see the module docstring)."""
    import torch

    from emotion_pipeline.corpora.face_images import face_crops, labelled_images, person_folds, pipeline_detector
    from emotion_pipeline.encoders import ShippedFace, load_predictor
    from emotion_pipeline.faces import FACE_CROP_PX
    from emotion_pipeline.metrics import report
    from emotion_pipeline.models.face_cnn import tta_mode

    data = Path(data)
    images = labelled_images(data)
    if folds:
        if not 0 <= fold < folds:
            raise ValueError(f"--fold must be in 0..{folds - 1}")
        images = images.take(person_folds(images.person_ids, folds) == fold)
    if angles:
        wanted = {a.strip() for a in angles.split(",") if a.strip()}
        images = images.take(np.asarray([a in wanted for a in images.angles]))
    if not len(images):
        raise bad_file(data, "no photos left after --fold / --angles")
    predictor = load_predictor("face", model, device=torch.device(device), offline=True)
    if tta != "default" and isinstance(predictor, ShippedFace):
        predictor.tta = tta_mode(tta)
    detector = pipeline_detector()
    t0 = time.time()
    crops = face_crops(images, detector, FACE_CROP_PX, cache_dir=cache_dir, progress=True)
    t1 = time.time()
    probs = np.concatenate([predictor.predict(crops.crops[i:i + batch_size])[0]
                            for i in range(0, len(images), batch_size)])
    t2 = time.time()
    pred = probs.argmax(1)
    result = report(images.labels, pred, LABELS)
    detected = crops.detected
    result["detected_only"] = {k: v for k, v in report(images.labels[detected], pred[detected], LABELS).items()
                               if k in ("n", "accuracy", "uar", "per_class_recall")}
    by_angle = {}
    for angle in sorted(set(images.angles) - {""}):
        rows = np.asarray([a == angle for a in images.angles])
        r = report(images.labels[rows], pred[rows], LABELS)
        by_angle[angle] = {"n": r["n"], "accuracy": r["accuracy"], "uar": r["uar"]}
    result.update({
        "data": str(data), "n_people": len(set(images.person_ids)), "missed": int((~detected).sum()),
        "by_angle": by_angle, "fold": {"folds": folds, "fold": fold} if folds else None, "angles": angles,
        "model": predictor.describe(), "detector": detector.name,
        "seconds": {"detect_and_crop": round(t1 - t0, 2), "model": round(t2 - t1, 2)},
        "ms_per_face": round(1000 * (t2 - t1) / len(images), 3),
    })
    log.info("%s: %d photos of %d people, accuracy %.4f, UAR %.4f (a face found in %d); read as neutral: %s",
             data, len(images), result["n_people"], result["accuracy"], result["uar"], int(detected.sum()),
             ", ".join(f"{c} {n}" for c, n in result["read_as_neutral"].items()))
    return result

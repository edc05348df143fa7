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

``--expert blendshape-expert`` adds ``expert`` (``expert_reports``): the face landmarker on the same
crops, the blendshape expert alone on the photos it read, the face model on those same photos, and
the face modality's combination of the two (``models.blendshape_expert.combine``, the weight
recorded in the expert's file unless ``--expert-weight`` gives one) on every photo.
``python -m bench.face_expert`` prints the whole comparison on the held-out people of each set.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from emotion_pipeline.errors import bad_file
from emotion_pipeline.labels import LABELS

log = logging.getLogger(__name__)


REPORTED = ("n", "accuracy", "uar", "macro_f1", "per_class_recall", "read_as_neutral", "confusion_matrix")


def expert_reports(labels: np.ndarray, cnn: np.ndarray, expert: np.ndarray, found: np.ndarray,
                   weight: float) -> dict:
    """``metrics.report`` of the face CNN alone (every photo), the blendshape expert alone and the
    CNN on the photos the landmarker read (``found``), and their combination at ``weight`` (every
    photo: the CNN alone where nothing was read)."""
    from emotion_pipeline.metrics import report
    from emotion_pipeline.models.blendshape_expert import combine

    def rep(rows: np.ndarray, probs: np.ndarray) -> dict:
        r = report(labels[rows], probs[rows].argmax(1), LABELS)
        return {k: r[k] for k in REPORTED}

    every = np.ones(len(labels), bool)
    return {"n": int(len(labels)), "read": int(found.sum()), "weight": weight, "cnn": rep(every, cnn),
            "expert": rep(found, expert), "cnn_on_read": rep(found, cnn),
            "combined": rep(every, combine(cnn, expert, found, weight))}


def run(data: Path, *, model: str = "face-cnn", device: str = "cpu", tta: str | None = "default",
        folds: int = 0, fold: int = 0, angles: str | None = None, batch_size: int = 128,
        cache_dir: Path | None = None, expert: str | None = None, expert_weight: float | None = None) -> dict:
    """Scores of the face model on the photos at ``data`` (see the module docstring)."""
    import torch

    from emotion_pipeline.corpora.face_images import face_crops, labelled_images, person_folds, pipeline_detector
    from emotion_pipeline.encoders import ShippedFace, load_predictor, probabilities
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
    probs = probabilities(predictor, crops.crops, batch_size)
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
    if expert:
        result["expert"] = _expert(images.labels, probs, crops.crops, expert, expert_weight, cache_dir)
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


def _expert(labels: np.ndarray, cnn: np.ndarray, crops: np.ndarray, name: str, weight: float | None,
            cache_dir: Path | None) -> dict:
    from emotion_pipeline.landmarks import load_landmarker, read_cached
    from emotion_pipeline.models import registry
    from emotion_pipeline.models.blendshape_expert import probs_of_readings

    loaded = registry.load(name, kind="expression", offline=True)
    recorded = loaded.meta.get("combination") or {}
    if weight is None:
        weight = float(recorded.get("weight", 0.0))
    with load_landmarker() as landmarker:
        t0 = time.time()
        r = read_cached(landmarker, crops, cache_dir=cache_dir, progress=True)
        seconds = time.time() - t0
        name_lm = landmarker.name
    out = expert_reports(labels, cnn, probs_of_readings(loaded.module, r.blendshapes, r.landmarks, r.found), r.found,
                         weight)
    out.update({"model": loaded.describe(), "landmarker": name_lm, "weight_chosen_for": recorded.get("face_model"),
                "landmarker_ms_per_face": round(1000 * seconds / max(len(crops), 1), 2)})
    log.info("expert %s: read %d of %d photos; accuracy CNN %.4f, expert (read) %.4f, CNN (read) %.4f, "
             "combined (w=%.2f) %.4f", loaded.name, out["read"], out["n"], out["cnn"]["accuracy"],
             out["expert"]["accuracy"], out["cnn_on_read"]["accuracy"], weight, out["combined"]["accuracy"])
    return out

"""Evaluate a face emotion model on labelled face crops: ``run(data, model=..., device=...) -> dict``.

``data`` is an ``.npz`` in the FER2013 format of ../shared/data/faces/fer2013 (see its README):
``images`` uint8 (N,H,W) grey crops, ``labels`` int class indices, and optionally ``classes``
(the names of those indices, in the file's order). Class names are mapped onto our LABELS with
``pipeline.labels.canonical`` (names with no Ekman class, e.g. "contempt", drop their rows); a
file without ``classes`` is taken to be in FER2013 order (angry, disgust, fear, happy, sad,
surprise, neutral). Crops of any size are resized to the model's 48 px exactly as
``models.face_cnn.prepare`` does.

FER+ crowd votes (``ferplus_votes_<split>.npz``, row-aligned to the FER2013 file; see
``pipeline.corpora.faces.ferplus_votes``) are read from ``votes`` or, by default, found beside the
file by name; with them the result also carries ``ferplus`` (``pipeline.metrics.ferplus_report``):
majority-label accuracy and per-class recall, plurality accuracy, agreement with the vote distribution.

Returns ``pipeline.metrics.report`` over the 7 labels plus model, sha256, data, tta, n (and
``ferplus``). Unusable input raises ValueError with a one-line message naming the file. The
reader itself lives in ``pipeline.corpora.faces`` (shared with training).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from emotion_pipeline.corpora.faces import fer_faces, ferplus_votes, ferplus_votes_path
from emotion_pipeline.errors import bad_file
from emotion_pipeline.labels import LABELS

log = logging.getLogger(__name__)


def _find_votes(data: Path, votes: Path | str | None) -> Path | None:
    if votes in ("", "none"):
        return None
    if votes is not None:
        return Path(votes)
    found = ferplus_votes_path(data)
    if found is not None:
        log.info("FER+ votes for %s: %s", data, found)
    return found


def run(data: Path, *, model: str = "face-cnn", device: str = "cpu", batch_size: int = 256,
        tta: str | None = None, votes: Path | str | None = None) -> dict:
    """Accuracy, macro F1, per-class recall, confusion matrix (and the rest of metrics.report)
    against the file's labels; plus ``ferplus`` (see ``pipeline.metrics.ferplus_report``) when FER+
    votes are given or found beside ``data`` (``votes="none"``: do not look)."""
    from emotion_pipeline.models.face_cnn import predict_logits, tta_mode
    from emotion_pipeline.models.registry import load
    from emotion_pipeline.metrics import ferplus_report, report

    tta = tta_mode(tta)
    data = Path(data)
    faces = fer_faces(data)
    vote_file = _find_votes(data, votes)
    crowd = (ferplus_votes(vote_file, filenames=faces.filenames, n_rows=len(faces.labels))
             if vote_file is not None else None)
    if not (faces.labels >= 0).any():
        raise bad_file(data, "no rows with a label among " + ", ".join(LABELS))
    loaded = load(model, device=device, kind="face")
    t0 = time.time()
    images = faces.images
    logits = predict_logits(loaded.module, images, tta, batch_size=batch_size).numpy()
    seconds = time.time() - t0
    keep = faces.labels >= 0  # rows whose class has no Ekman label are left out of the label scores
    result = report(faces.labels[keep], logits[keep].argmax(1), LABELS)
    result.update({"model": loaded.name, "sha256": loaded.sha256, "data": str(data), "tta": tta,
                   "seconds": round(seconds, 2), "ms_per_face": round(1000 * seconds / len(images), 3)})
    log.info("%s on %s (tta=%s): accuracy %.4f, macro F1 %.4f, %d faces in %.1f s",
             loaded.name, data, tta, result["accuracy"], result["macro_f1"], len(images), seconds)
    if crowd is not None:
        fp = ferplus_report(logits, crowd, faces.labels)
        result["ferplus"] = {"votes": str(vote_file), **fp}
        log.info("FER+ (%s): majority accuracy %.4f on %d faces (neutral recall %.3f), plurality %.4f, "
                 "crowd agreement %.4f, cross entropy %.3f", vote_file.name, fp["majority"]["accuracy"],
                 fp["majority"]["n"], fp["majority"]["per_class_recall"]["neutral"] or float("nan"),
                 fp["plurality"]["accuracy"], fp["crowd_agreement"], fp["cross_entropy"])
    return result

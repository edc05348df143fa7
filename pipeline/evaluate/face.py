"""Evaluate a face emotion model on labelled face crops: ``run(data, model=..., device=...) -> dict``.

``data`` is an ``.npz`` in the FER2013 format of ../shared/data/faces/fer2013 (see its README):
``images`` uint8 (N,H,W) grey crops, ``labels`` int class indices, and optionally ``classes``
(the names of those indices, in the file's order). Class names are mapped onto our LABELS with
``pipeline.labels.canonical`` (names with no Ekman class, e.g. "contempt", drop their rows); a
file without ``classes`` is taken to be in FER2013 order (angry, disgust, fear, happy, sad,
surprise, neutral). Crops of any size are resized to the model's 48 px exactly as
``models.face_cnn.prepare`` does.

FER+ crowd votes (``ferplus_votes_<split>.npz``, row-aligned to the FER2013 file; see
``pipeline.corpora.ferplus_votes``) are read from ``votes`` or, by default, found beside the
file by name; with them the result also carries ``ferplus``: majority-label accuracy and
per-class recall, plurality accuracy, agreement with the vote distribution.

Returns ``pipeline.metrics.report`` over the 7 labels plus model, sha256, data, tta, n (and
``ferplus``). Unusable input raises ValueError with a one-line message naming the file. The
reader itself lives in ``pipeline.corpora`` (shared with training).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from emotion_pipeline.corpora import FerPlusVotes, fer_faces, ferplus_votes, ferplus_votes_path
from emotion_pipeline.labels import LABELS

log = logging.getLogger(__name__)


def ferplus_report(logits: np.ndarray, votes: FerPlusVotes, labels: np.ndarray | None = None) -> dict:
    """Scores of (N,7) logits against FER+ crowd votes for the same N faces.

    - ``majority``: metrics.report against the majority label (FER+ paper's protocol, see
      ``FerPlusVotes.majority``) on the faces that have one: the headline FER+ accuracy;
    - ``plurality``: against the most-voted of the seven classes, on every usable face whose top
      is not tied;
    - ``crowd_agreement``: share of usable faces whose predicted class got the most votes (ties
      count), ``vote_share``: mean share of the seven-class votes that the predicted class got;
    - ``cross_entropy``: mean cross entropy of the softmax against votes / sum (nats; the training
      loss of the soft-target mode);
    - ``original_label_agreement`` (when FER2013 ``labels`` are given): how often the majority
      label equals the FER2013 label, on the same faces."""
    import torch
    import torch.nn.functional as F

    from emotion_pipeline.metrics import report

    pred = logits.argmax(1)
    usable = votes.usable
    maj, plu = votes.majority(), votes.plurality()
    counts = votes.counts[usable]
    got = counts[np.arange(len(counts)), pred[usable]]
    targets = torch.from_numpy(votes.targets()[usable])
    ce = float(F.cross_entropy(torch.from_numpy(logits[usable]).float(), targets)) if usable.any() else float("nan")
    out = {
        "n_faces": int(len(pred)), "n_usable": int(usable.sum()),
        "n_unmatched": int((~votes.matched).sum()),
        "majority": report(maj[maj >= 0], pred[maj >= 0], LABELS),
        "plurality": report(plu[plu >= 0], pred[plu >= 0], LABELS),
        "crowd_agreement": float((got == counts.max(1)).mean()) if usable.any() else float("nan"),
        "vote_share": float((got / counts.sum(1)).mean()) if usable.any() else float("nan"),
        "cross_entropy": ce,
    }
    if labels is not None:
        both = (maj >= 0) & (labels >= 0)
        out["original_label_agreement"] = float((maj[both] == labels[both]).mean()) if both.any() else float("nan")
    return out


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
    against the file's labels; plus ``ferplus`` (see ``ferplus_report``) when FER+ votes are
    given or found beside ``data`` (``votes="none"``: do not look)."""
    from emotion_pipeline.models.face_cnn import TTA_MODES, predict_logits, to_source_size
    from emotion_pipeline.models.registry import load
    from emotion_pipeline.metrics import report

    tta = None if tta in ("", "none") else tta
    if tta not in TTA_MODES:
        raise ValueError(f"unknown tta {tta!r}; choose from {', '.join(str(m) for m in TTA_MODES)}")
    data = Path(data)
    faces = fer_faces(data)
    vote_file = _find_votes(data, votes)
    crowd = (ferplus_votes(vote_file, filenames=faces.filenames, n_rows=len(faces.labels))
             if vote_file is not None else None)
    if not (faces.labels >= 0).any():
        raise ValueError(f"{data}: no rows with a label among " + ", ".join(LABELS))
    loaded = load(model, device=device)
    net = loaded.module
    t0 = time.time()
    images = faces.images
    logits = np.concatenate([predict_logits(net, to_source_size(images[i:i + batch_size], net.config), tta).numpy()
                             for i in range(0, len(images), batch_size)])
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

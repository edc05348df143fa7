"""Evaluate a face emotion model on labelled face crops: ``run(data, model=..., device=...) -> dict``.

``data`` is an ``.npz`` in the FER2013 format of ../shared/data/faces/fer2013 (see its README):
``images`` uint8 (N,H,W) grey crops, ``labels`` int class indices, and optionally ``classes``
(the names of those indices, in the file's order). Class names are mapped onto our LABELS with
``pipeline.labels.canonical`` (names with no Ekman class, e.g. "contempt", drop their rows); a
file without ``classes`` is taken to be in FER2013 order (angry, disgust, fear, happy, sad,
surprise, neutral). Crops of any size are resized to the model's 48 px exactly as
``models.face_cnn.prepare`` does.

Returns ``pipeline.metrics.report`` over the 7 labels plus model, sha256, data, tta, n.
Unusable input raises ValueError with a one-line message naming the file.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from pipeline.labels import FER2013_CLASSES, LABEL_INDEX, LABELS, canonical

log = logging.getLogger(__name__)


def _fail(path: Path, why: str) -> ValueError:
    return ValueError(f"{path}: {why}")


def read_fer_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,H,W), labels int64 in LABELS order) from a FER2013-format npz."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file" if not path.exists() else "not a file (expected a FER2013-format .npz)")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = list(getattr(data, "files", []))
            if "images" not in files or "labels" not in files:
                raise _fail(path, f"expected keys 'images' and 'labels', found {sorted(files) or 'none'}")
            images, labels = data["images"], data["labels"]
            classes = [str(c) for c in data["classes"]] if "classes" in files else list(FER2013_CLASSES)
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise _fail(path, f"not a readable FER2013-format npz ({exc})") from None
    except Exception as exc:  # zip / pickle / OS errors from np.load
        raise _fail(path, f"not a readable npz ({type(exc).__name__}: {exc})") from None
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise _fail(path, f"images must be (N,H,W) with one label each, got {images.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise _fail(path, f"labels must be integers, got {labels.dtype}")
    try:
        ours = [canonical(c) for c in classes]
    except ValueError as exc:
        raise _fail(path, f"class names do not map onto {', '.join(LABELS)} ({exc})") from None
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(ours)):
        raise _fail(path, f"labels outside 0..{len(ours) - 1} (the file has {len(ours)} classes)")
    mapping = np.array([LABEL_INDEX[c] if c is not None else -1 for c in ours], dtype=np.int64)
    mapped = mapping[labels]
    keep = mapped >= 0  # rows whose class has no Ekman label are dropped
    if not keep.any():
        raise _fail(path, "no rows with a label among " + ", ".join(LABELS))
    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(images[keep]), mapped[keep]


def run(data: Path, *, model: str = "face-cnn", device: str = "cpu", batch_size: int = 256,
        tta: str | None = None) -> dict:
    """Accuracy, macro F1, per-class recall, confusion matrix (and the rest of metrics.report)."""
    from models.face_cnn import TTA_MODES, predict_logits, to_source_size
    from models.registry import load
    from pipeline.metrics import report

    tta = None if tta in ("", "none") else tta
    if tta not in TTA_MODES:
        raise ValueError(f"unknown tta {tta!r}; choose from {', '.join(str(m) for m in TTA_MODES)}")
    data = Path(data)
    images, labels = read_fer_npz(data)
    loaded = load(model, device=device)
    net = loaded.module
    t0 = time.time()
    preds = []
    for i in range(0, len(images), batch_size):
        batch = to_source_size(images[i:i + batch_size], net.config)
        preds.append(predict_logits(net, batch, tta).argmax(1).numpy())
    seconds = time.time() - t0
    result = report(labels, np.concatenate(preds), LABELS)
    result.update({"model": loaded.name, "sha256": loaded.sha256, "data": str(data), "tta": tta,
                   "seconds": round(seconds, 2), "ms_per_face": round(1000 * seconds / len(images), 3)})
    log.info("%s on %s (tta=%s): accuracy %.4f, macro F1 %.4f, %d faces in %.1f s",
             loaded.name, data, tta, result["accuracy"], result["macro_f1"], len(images), seconds)
    return result

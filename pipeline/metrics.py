"""Classification metrics (scikit-learn), FER+ crowd-vote scores, and the figures every training run
saves (curves, confusion matrix)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from emotion_pipeline.corpora.faces import FerPlusVotes


def report(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """accuracy, uar (= macro recall), macro_f1, weighted_f1, per-class recall/F1, confusion matrix
    (rows true classes, columns predictions), all from scikit-learn.

    Classes absent from y_true are left out of the macro averages (and reported as null),
    so a split without, say, disgust is not penalised for it.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    every = list(range(len(class_names)))
    cm = confusion_matrix(y_true, y_pred, labels=every) if len(y_true) else np.zeros((len(every),) * 2, np.int64)
    support = cm.sum(axis=1)
    present = [k for k in every if support[k] > 0]
    total = int(support.sum())
    nan = float("nan")
    precision, recall, _, _ = (precision_recall_fscore_support(y_true, y_pred, labels=every, zero_division=0)
                               if total else (np.zeros(len(every)),) * 4)
    # F1 as 2PR / (P + R) of scikit-learn's P and R: sklearn's own 2TP / (2TP + FP + FN) differs from
    # it in the last bit only, and this form keeps every figure published so far bit-identical
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)

    def mean(values, weights=None) -> float:
        return float(np.average(values[present], weights=None if weights is None else weights[present])) if present else nan

    return {
        "n": total,
        "accuracy": float(np.trace(cm) / total) if total else nan,
        "uar": mean(recall),
        "macro_f1": mean(f1),
        "weighted_f1": mean(f1, support),
        "per_class_recall": {c: float(recall[k]) if support[k] else None for k, c in enumerate(class_names)},
        "per_class_f1": {c: float(f1[k]) if support[k] else None for k, c in enumerate(class_names)},
        "support": {c: int(s) for c, s in zip(class_names, support)},
        "labels": list(class_names),
        "confusion_matrix": cm.tolist(),
        # how often each true class was read as the first class (neutral in LABELS order): the
        # failure users see most on camera, an expression read as no expression
        f"read_as_{class_names[0]}": {c: int(cm[k, 0]) for k, c in enumerate(class_names) if k and support[k]},
    }


def ferplus_report(logits: np.ndarray, votes: "FerPlusVotes", labels: np.ndarray | None = None) -> dict:
    """Scores of (N,7) logits against FER+ crowd votes for the same N faces.

    - ``majority``: ``report`` against the majority label (FER+ paper's protocol, see
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

    from emotion_pipeline.labels import LABELS

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


def plot_confusion(cm: np.ndarray | list, class_names: Sequence[str], path: str | Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted"); ax.set_ylabel("true"); ax.set_title(title)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def plot_curves(history: list[dict], path: str | Path, keys: Sequence[str] = ("train_loss", "val_loss", "val_accuracy")) -> None:
    """One panel per metric over epochs, from the per-epoch records a trainer logs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        xs = [h["epoch"] for h in history if key in h]
        ax.plot(xs, [h[key] for h in history if key in h], marker="o")
        ax.set_title(key); ax.set_xlabel("epoch"); ax.grid(alpha=0.3)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)

"""Classification metrics and the figures every trainer saves (curves, confusion matrix)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predictions."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def report(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """accuracy, uar (= macro recall), macro_f1, weighted_f1, per-class recall/F1, confusion matrix.

    Classes absent from y_true are left out of the macro averages (and reported as null),
    so a split without, say, disgust is not penalised for it.
    """
    n = len(class_names)
    cm = confusion(y_true, y_pred, n)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        f1 = np.where(support > 0, 2 * precision * np.nan_to_num(recall) /
                      np.maximum(precision + np.nan_to_num(recall), 1e-12), np.nan)
    present = support > 0
    total = int(support.sum())
    return {
        "n": total,
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "uar": float(np.nanmean(recall[present])) if present.any() else float("nan"),
        "macro_f1": float(np.nanmean(f1[present])) if present.any() else float("nan"),
        "weighted_f1": float(np.nansum(f1 * support) / total) if total else float("nan"),
        "per_class_recall": {c: (None if np.isnan(r) else float(r)) for c, r in zip(class_names, recall)},
        "per_class_f1": {c: (None if np.isnan(v) else float(v)) for c, v in zip(class_names, f1)},
        "support": {c: int(s) for c, s in zip(class_names, support)},
        "labels": list(class_names),
        "confusion_matrix": cm.tolist(),
    }


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

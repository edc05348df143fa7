"""A picture of a timeline: one row per modality, one cell per second, coloured by label,
shaded by confidence (grey where the modality is missing)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import atomic_write
from pipeline.labels import LABELS

ROWS = ("face", "audio", "text", "fused")
# one colour per label, in LABELS order (neutral grey-blue, happy yellow, sad blue, angry red,
# fearful purple, disgusted green, surprised orange)
COLOURS = ("#8da0b3", "#f2c12e", "#3b6fb6", "#d6403a", "#7d4fa8", "#4c9a4c", "#f08a24")


def plot_timeline(doc: dict[str, Any], path: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    tl = doc["timeline"]
    img = np.ones((len(ROWS), len(tl), 3)) * 0.93
    for j, entry in enumerate(tl):
        for i, row in enumerate(ROWS):
            pred = entry.get(row)
            if pred:
                conf = max(pred["scores"].values())
                colour = np.array(to_rgb(COLOURS[LABELS.index(pred["label"])]))
                img[i, j] = 1 - (1 - colour) * (0.35 + 0.65 * conf)
    fig, ax = plt.subplots(figsize=(max(6, len(tl) * 0.25), 2.6))
    ax.imshow(img, aspect="auto", interpolation="nearest", extent=(0, len(tl), len(ROWS), 0))
    ax.set_yticks(np.arange(len(ROWS)) + 0.5, ROWS)
    ax.set_xlabel("seconds")
    ax.set_title(Path(doc["video"]["path"]).name)
    ax.legend(handles=[Patch(color=c, label=lab) for c, lab in zip(COLOURS, LABELS)], loc="upper center",
              bbox_to_anchor=(0.5, -0.35), ncol=len(LABELS), fontsize=7, frameon=False)
    fig.tight_layout()
    path = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path

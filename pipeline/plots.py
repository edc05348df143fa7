"""Pictures of a timeline.

``timeline_figure(doc)`` draws three panels sharing the time axis (seconds):

1. the fused emotion: the seven fused scores stacked per second (their colours sum to 1), a
   blank where no modality was present;
2. each modality's track beneath it (face, audio, text): one cell per second in the colour of its
   label, shaded by confidence (paler = less sure); missing stretches are left as gaps;
3. the transcript along the time axis: each segment's span and as much of its text as fits.

Every text taken from the document (file name, words, reasons) is drawn as it is, never as
mathtext: ``$20 from 10% of $30`` stays that.

``plot_timeline(doc, path)`` writes it as a PNG (atomically); ``figure_bytes`` gives PNG or
SVG bytes for the HTML report.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from emotion_pipeline.fileio import atomic_write
from emotion_pipeline.labels import LABELS

TRACKS = ("face", "audio", "text")
# one colour per label, in LABELS order (neutral grey-blue, happy yellow, sad blue, angry red,
# fearful purple, disgusted green, surprised orange)
COLOURS = ("#8da0b3", "#f2c12e", "#3b6fb6", "#d6403a", "#7d4fa8", "#4c9a4c", "#f08a24")
LABEL_COLOUR = dict(zip(LABELS, COLOURS))
WIDTH_PER_S_IN = 0.32         # inches of figure per second of video, between the limits below
MIN_WIDTH_IN, MAX_WIDTH_IN = 8.0, 30.0
DPI = 110
CHAR_WIDTH_IN = 0.062         # about one character of the 7-point transcript font


def _shade(colour: str, confidence: float) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb
    rgb = np.array(to_rgb(colour))
    return tuple(1 - (1 - rgb) * (0.35 + 0.65 * float(confidence)))


def timeline_figure(doc: dict[str, Any]):
    """A matplotlib Figure of ``doc`` (a timeline document); the caller closes it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    tl = doc["timeline"]
    end = float(tl[-1]["end_s"]) if tl else float(doc["video"]["duration_s"])
    width = float(np.clip(end * WIDTH_PER_S_IN, MIN_WIDTH_IN, MAX_WIDTH_IN))
    fig, (ax_f, ax_m, ax_t) = plt.subplots(3, 1, figsize=(width, 4.6), sharex=True,
                                           gridspec_kw={"height_ratios": [2.2, 1.3, 0.8], "hspace": 0.08})

    # 1. fused scores, stacked
    fused_rows = [e for e in tl if e.get("fused")]
    if fused_rows:   # one bar call per label, not per second and label (an hour is 25,000 bars)
        starts = np.array([e["start_s"] for e in fused_rows])
        widths = np.array([e["end_s"] - e["start_s"] for e in fused_rows])
        bottom = np.zeros(len(fused_rows))
        for label in LABELS:
            p = np.array([float(e["fused"]["scores"][label]) for e in fused_rows])
            ax_f.bar(starts, p, width=widths, bottom=bottom, align="edge", color=LABEL_COLOUR[label], linewidth=0)
            bottom += p
    ax_f.set_ylim(0, 1)
    ax_f.set_ylabel("fused\nscores")
    ax_f.set_title(f"{Path(doc['video']['path']).name}: dominant {doc['summary'].get('dominant_label') or 'none'}",
                   fontsize=10, parse_math=False)
    ax_f.legend(handles=[Patch(color=c, label=lab) for lab, c in LABEL_COLOUR.items()], loc="lower center",
                bbox_to_anchor=(0.5, 1.12), ncol=len(LABELS), fontsize=7, frameon=False)

    # 2. one track per modality; gaps where it is missing
    for i, modality in enumerate(TRACKS):
        ax_m.axhspan(i + 0.1, i + 0.9, color="#f4f4f4", linewidth=0)
        for entry in tl:
            pred = entry.get(modality)
            if pred:
                conf = max(pred["scores"].values())
                ax_m.broken_barh([(entry["start_s"], entry["end_s"] - entry["start_s"])], (i + 0.1, 0.8),
                                 facecolors=[_shade(LABEL_COLOUR[pred["label"]], conf)], linewidth=0)
        status = doc.get("modalities", {}).get(modality, {})
        if status.get("status") == "missing":
            ax_m.text(end / 2, i + 0.5, f"missing: {(status.get('reason') or '')[:90]}", ha="center", va="center",
                      fontsize=7, color="#777777", parse_math=False)
    ax_m.set_ylim(len(TRACKS), 0)
    ax_m.set_yticks(np.arange(len(TRACKS)) + 0.5, TRACKS)

    # 3. the transcript
    segments = (doc.get("transcript") or {}).get("segments") or []
    for k, seg in enumerate(segments):
        a, b = float(seg["start_s"]), float(seg["end_s"])
        y = 0.3 if k % 2 == 0 else 0.75
        ax_t.plot([a, b], [y + 0.15, y + 0.15], color="#999999", linewidth=1)
        chars = int((b - a) / end * width / CHAR_WIDTH_IN) if end > 0 else 0
        text = seg["text"].strip()
        if chars >= 4:
            ax_t.text(a, y, text if len(text) <= chars else text[:chars - 1] + "…", fontsize=7, va="center",
                      parse_math=False)
    if not segments:
        ax_t.text(end / 2, 0.5, "no transcript", ha="center", va="center", fontsize=7, color="#777777")
    ax_t.set_ylim(1, 0)
    ax_t.set_yticks([0.5], ["words"])
    ax_t.set_xlim(0, end)
    ax_t.set_xlabel("seconds")
    for ax in (ax_f, ax_m, ax_t):
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.subplots_adjust(left=0.6 / width + 0.02, right=1 - 0.25 / width, top=0.85, bottom=0.12)
    return fig


def figure_bytes(doc: dict[str, Any], fmt: str = "png") -> bytes:
    import matplotlib.pyplot as plt

    fig = timeline_figure(doc)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


def plot_timeline(doc: dict[str, Any], path: str | Path) -> Path:
    """Write the timeline figure of ``doc`` to ``path`` as a PNG, atomically."""
    data = figure_bytes(doc, "png")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))

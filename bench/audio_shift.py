"""How much an audio model's clip scores depend on where its windows fall: ``python -m bench.audio_shift``.

Each clip is scored as evaluation scores it (``audio_windows.score_windows``: windows of the model's
``window_s`` every 1 s, probabilities averaged), once as it is and once per shift, the first
``shift`` ms cut off, which moves every window by that much against the speech. In the video
pipeline the windows are centred on the timeline's seconds, so where they fall against the speech
is arbitrary: the mean over shifts is the figure to expect there; the unshifted figure is the one
the best epoch was selected on. Printed: UAR and accuracy per shift, their mean, spread and range,
and how often the first window's and the clip's label change against the unshifted scores.

    python -m bench.audio_shift [--data FOLDER_OR_CSV] [--model audio-cnn] [--max-shift-ms 150 --step-ms 10]

``--data``: a RAVDESS-named folder or a ``path,label`` CSV (``evaluate audio``'s formats); by default
RAVDESS actors 17-20 of the shared data (the audio model's validation speakers).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

import numpy as np

log = logging.getLogger("bench")


def validation_clips() -> list[tuple[str, int]]:
    """RAVDESS actors 17-20 (the shipped audio model's validation speakers), as (path, label index)."""
    from emotion_pipeline.corpora.speech import speech_items
    from emotion_pipeline.data import data_path
    from emotion_pipeline.labels import LABEL_INDEX
    from emotion_pipeline.train.audio import AudioConfig
    cfg = AudioConfig()
    return [(it.path, LABEL_INDEX[it.label]) for it in speech_items(data_path(cfg.ravdess)) if it.actor in cfg.val_actors]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="RAVDESS-named folder or path,label CSV (default: RAVDESS actors 17-20)")
    parser.add_argument("--model", default="audio-cnn")
    parser.add_argument("--max-shift-ms", type=int, default=150)
    parser.add_argument("--step-ms", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch
    from emotion_pipeline.audio_windows import load_audio_file, score_windows
    from emotion_pipeline.corpora.speech import labelled_audio
    from emotion_pipeline.labels import LABELS
    from emotion_pipeline.metrics import report
    from emotion_pipeline.models import registry

    torch.set_num_threads(args.threads)
    loaded = registry.load(args.model, kind="audio")
    model, sr = loaded.module.eval(), loaded.module.config.sample_rate_hz
    items = labelled_audio(args.data)[0] if args.data else validation_clips()
    shifts = list(range(0, args.max_shift_ms + 1, args.step_ms))
    clip = {s: [] for s in shifts}
    first = {s: [] for s in shifts}
    t0 = time.perf_counter()
    for path, _ in items:
        wave = load_audio_file(path, sr)
        for s in shifts:
            _, probs, _ = score_windows(model, wave[int(s * sr / 1000):], sr)
            clip[s].append(probs.mean(0))
            first[s].append(probs[0])
    y = np.array([label for _, label in items])
    rows = []
    for s in shifts:
        pred, first_pred = np.stack(clip[s]).argmax(1), np.stack(first[s]).argmax(1)
        r = report(y, pred, LABELS)
        rows.append({"shift_ms": s, "uar": r["uar"], "accuracy": r["accuracy"],
                     "clip_label_changed": float(np.mean(pred != np.stack(clip[0]).argmax(1))),
                     "first_window_label_changed": float(np.mean(first_pred != np.stack(first[0]).argmax(1)))})
    uars = [r["uar"] for r in rows]
    summary = {"model": loaded.name, "sha256": loaded.sha256, "data": args.data or "RAVDESS actors 17-20",
               "clips": len(items), "seconds": round(time.perf_counter() - t0, 1),
               "uar_unshifted": uars[0], "uar_mean": statistics.mean(uars), "uar_sd": statistics.stdev(uars) if len(uars) > 1 else 0.0,
               "uar_min": min(uars), "uar_max": max(uars), "rows": rows}
    print("| shift (ms) | UAR | accuracy | clip label changed | first window's label changed |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shift_ms']} | {r['uar']:.4f} | {r['accuracy']:.4f} | {r['clip_label_changed']:.3f} | "
              f"{r['first_window_label_changed']:.3f} |")
    print(f"\n{len(items)} clips, {len(shifts)} shifts: UAR unshifted {uars[0]:.4f}; mean {summary['uar_mean']:.4f} "
          f"(sd {summary['uar_sd']:.4f}, {min(uars):.4f}-{max(uars):.4f})")
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Face clip labels on labelled clips for a face CNN, alone and with the blendshape expert at several weights.

    python -m bench.mead_faces [--data ../shared/data/video/mead] [--adapter mead] \
        [--face-models face-cnn,other.safetensors] [--weights 0,0.3,0.5,0.65]

Each clip is analysed without words (whisper_model none); its face label is the most frequent
per-second face label (``evaluate.clips.clip_label``, "vote") and the label of the mean of the
seconds' face scores ("mean"). Clips whose label has no Ekman class are left out by the adapter.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="clip folder or CSV (default: the shared MEAD clips)")
    ap.add_argument("--adapter", default="mead")
    ap.add_argument("--face-models", default="face-cnn")
    ap.add_argument("--weights", default="0,0.3,0.5,0.65", help="blendshape expert weights (0: the CNN alone)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig
    from emotion_pipeline.corpora.clips import read_clips
    from emotion_pipeline.data import data_path
    from emotion_pipeline.evaluate.clips import clip_label

    clips = read_clips(Path(args.data) if args.data else data_path("video", "mead"), args.adapter)
    for face_model in [m.strip() for m in args.face_models.split(",") if m.strip()]:
        for w in (float(x) for x in args.weights.split(",")):
            analyzer = Analyzer(AnalyzeConfig(whisper_model="none", offline=True, progress=False, face_model=face_model,
                                              face_expert="blendshape-expert" if w else "none",
                                              face_expert_weight=w or None))
            got = []
            for clip in clips:
                doc = analyzer.analyze(clip.path)
                got.append((clip.label, clip_label(doc, "face"), clip_label(doc, "face", "mean")))
            wrong = ", ".join(f"{t} -> {p}" for t, p, _ in got if t != p)
            print(f"{face_model[-40:]:40s} expert weight {w:.2f}: vote {sum(t == p for t, p, _ in got)}, "
                  f"mean {sum(t == m for t, _, m in got)} of {len(got)}   wrong: {wrong}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The face stage's cost per minute of video for several face models, side by side in one process.

    python -m bench.face_stage VIDEO [--models runs/models/face_cnn_3.0.0.safetensors,face-cnn@float32]
                               [--detect-face-px 0,64] [--repeat 4]

Each variant (a model, ``NAME@float32`` / ``NAME@bfloat16`` for its precision, default analyze's
``auto``; times each ``--detect-face-px``, 0 = every frame searched at full size) gets its own
``Analyzer`` (default settings otherwise, ``whisper_model=none``); the face pass
(``Analyzer.face_frames`` + ``FaceEncoder.observe``: decoding, detection, tracks, crops, the CNN with its TTA, the landmarker,
re-identification) runs once to warm up, then ``--repeat`` times per model, alternating, so that a
noisy shared machine affects every model alike. Prints wall and CPU seconds (every thread) per
minute of video: median (min-max).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--models", default="face-cnn", help="comma-separated registry names or .safetensors files, "
                    "each optionally NAME@float32 / NAME@bfloat16")
    ap.add_argument("--detect-face-px", default=None, help="comma-separated detect_face_px values (default: analyze's)")
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch
    torch.set_num_threads(args.threads)
    from bench.face_models import model_spec
    from emotion_pipeline import demux
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig

    info = demux.probe(args.video)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sizes = [int(v) for v in args.detect_face_px.split(",")] if args.detect_face_px else [AnalyzeConfig.detect_face_px]
    analyzers = {}
    for m in models:
        name, precision = model_spec(m)
        for px in sizes:
            cfg = AnalyzeConfig(whisper_model="none", progress=False, face_model=name,
                                face_precision=precision, detect_face_px=px)
            analyzers[f"{m} detect_face_px={px}"] = Analyzer(cfg)

    def face_pass(an: Analyzer) -> tuple[float, float]:
        crew = an.cast(info)
        frames = an.face_frames(info, demux.Coverage("video", demux.VIDEO_GAP_S, info.video_start_s))
        t, c = time.perf_counter(), time.process_time()
        an.face.observe(frames, watchers=crew.watchers)
        per_min = 60 / info.duration_s
        return (time.perf_counter() - t) * per_min, (time.process_time() - c) * per_min

    for an in analyzers.values():
        face_pass(an)
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in analyzers}
    for _ in range(args.repeat):
        for m, an in analyzers.items():
            runs[m].append(face_pass(an))
    print(f"face stage, s per minute of {args.video} ({info.duration_s:.1f} s), {args.repeat} runs, {args.threads} threads")
    for m, r in runs.items():
        w, c = [x[0] for x in r], [x[1] for x in r]
        print(f"  {m[-60:]:60s} wall {statistics.median(w):.2f} ({min(w):.2f}-{max(w):.2f})  "
              f"cpu {statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

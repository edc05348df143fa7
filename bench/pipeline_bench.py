"""Seconds of compute per minute of video, per stage, and peak memory: ``make bench``.

Each video runs in its own process so its peak RSS is its own. Videos: the shared talking clips
and a long synthetic video (a talking clip looped, ``--long-minutes``, default 10; 60 for the
one-hour check). Also the text model's throughput per 1,000 utterances (MELD dev).

    python -m bench.pipeline_bench [--long-minutes 60] [--whisper auto|none|base] [--videos a.mp4 ...]
                                   [--face-expression auto|off]

``faces`` includes the face landmarker and the blendshape expert (``face_expression``; ``off``: the
face CNN alone, to see what they add); ``faces cpu`` is the process's CPU seconds during the face
stage (every thread, decoding included), which a machine shared with other jobs inflates less
than the wall-clock columns.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bench")
STAGES = ("faces", "audio", "transcribe", "text", "fusion")


def _one(video: str, whisper: str, threads: int, face_expression: str = "auto") -> None:
    """Child process: analyse one video, print its timings and peak RSS as JSON."""
    import torch
    torch.set_num_threads(threads)
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig

    t0 = time.perf_counter()
    analyzer = Analyzer(AnalyzeConfig(whisper_model=whisper, offline=True, progress=False, face_expression=face_expression))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc = analyzer.analyze(video)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"video": video, "duration_s": doc["video"]["duration_s"], "load_s": load_s, "wall_s": wall,
               "timings_s": doc["timings_s"], "peak_rss_mb": peak_mb,
               "expression": doc["modalities"].get("expression", {}).get("status"),
               "text": doc["modalities"]["text"]["status"], "language": (doc.get("transcript") or {}).get("language"),
               "text_seconds": sum(1 for e in doc["timeline"] if e.get("text"))}, sys.stdout)


def _text_throughput(n: int = 1000) -> dict:
    import csv

    from emotion_pipeline.data import data_path
    from emotion_pipeline.encoders import load_predictor
    path = data_path("text", "meld", "dev_sent_emo.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        texts = [row["Utterance"] for row in csv.DictReader(fh)][:n]
    pred = load_predictor("text", "text-minilm", device="cpu", offline=True)
    pred.predict(texts[:16])
    t0 = time.perf_counter()
    pred.predict(texts)
    return {"utterances": len(texts), "seconds": time.perf_counter() - t0}


def make_long_video(minutes: float, source: Path, folder: Path) -> Path:
    """A talking clip looped to ``minutes`` (stream copy: no re-encoding)."""
    out = folder / f"long_{minutes:g}min.mp4"
    if not out.exists():
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(source),
                        "-t", str(minutes * 60), "-c", "copy", str(out)], check=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="*", help="videos to time (default: the shared talking clips)")
    parser.add_argument("--long-minutes", type=float, default=10.0, help="length of the synthetic long video; 0 = none")
    parser.add_argument("--whisper", default="auto",
                        help="transcription model, as analyze's whisper_model (default auto: the packaged tiny.en; none: skipped)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--face-expression", default="auto", choices=["auto", "on", "off"],
                        help="the face landmarker and blendshape expert (analyze's face_expression; default auto)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args.whisper, args.threads, args.face_expression)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from emotion_pipeline.data import data_path

    videos = [Path(v) for v in args.videos] if args.videos else sorted(data_path("video", "talking").glob("*.mp4"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    if args.long_minutes > 0:
        if shutil.which("ffmpeg") is None:
            log.warning("ffmpeg CLI not found: no long synthetic video")
        else:
            videos.append(make_long_video(args.long_minutes, data_path("video", "talking", "Obama_clip1.mp4"), tmp))
    results = []
    for video in videos:
        proc = subprocess.run([sys.executable, "-m", "bench.pipeline_bench", "--one", str(video), "--whisper", args.whisper,
                               "--threads", str(args.threads), "--face-expression", args.face_expression],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            log.error("%s failed: %s", video, proc.stderr.strip().splitlines()[-1:] or "?")
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    shutil.rmtree(tmp, ignore_errors=True)

    head = (f"{'video':28s} {'dur s':>7s} " + " ".join(f"{s:>10s}" for s in STAGES) + f" {'total':>8s} {'peak MB':>8s}"
            f" {'text s':>7s} {'faces cpu':>9s} {'expr':>7s}")
    lines = ["seconds of compute per minute of video (threads=%d, whisper=%s, face_expression=%s)"
             % (args.threads, args.whisper, args.face_expression), head]
    for r in results:
        per_min = {s: r["timings_s"].get(s, 0.0) / r["duration_s"] * 60 for s in STAGES}
        total = sum(per_min.values())
        r["per_minute_s"] = per_min | {"total": total}
        lines.append(f"{Path(r['video']).name[:28]:28s} {r['duration_s']:7.1f} " +
                     " ".join(f"{per_min[s]:10.2f}" for s in STAGES) + f" {total:8.2f} {r['peak_rss_mb']:8.0f} {r.get('text_seconds', 0):7d}"
                     f" {r['timings_s'].get('faces_cpu', 0.0) / r['duration_s'] * 60:9.2f} {r.get('expression') or '-':>7s}")
    text = _text_throughput()
    lines.append(f"text model: {text['seconds']:.2f} s per {text['utterances']} utterances (MELD dev)")
    print("\n".join(lines))  # the benchmark's report is its output
    if args.json:
        Path(args.json).write_text(json.dumps({"videos": results, "text": text}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

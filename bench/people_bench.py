"""What people cost: seconds of compute per minute of video with 1, 2 and 5 faces on screen, with
re-identification and the active speaker (the defaults), the same without the voices told apart
(``voice_model=none``, "nv") and without any of it (``identity_model=none, speaker=off,
primary_face=dominant``: the face pass as it was). Part of ``make bench``.

    python -m bench.people_bench [--threads N] [--repeat 3] [--face-expression off|auto] [--json out.json]

Videos (built with ffmpeg from the shared talking clips, each looped to one minute, 25 frames/s):
1 face: Obama_clip1 (256 px); 2 faces: Obama and KristiNoem side by side taking turns, one heard
at a time; 5 faces: five talking clips in a 3x2 grid (768x512), Obama's voice. Whisper is off
(``whisper_model=none``) so that the columns are the face, people and voice stages. Each run is
its own process; with ``--repeat`` the median of that many runs (the machine's load moves the
one-face figures by more than the difference asked about: at most 1 s per minute). ``faces cpu``:
the process's CPU seconds in the face stage (SFace runs inside it), less moved by other jobs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("faces", "people", "audio", "fusion")
OFF = {"identity_model": "none", "speaker": "off", "primary_face": "dominant"}
NO_VOICES = {"voice_model": "none"}      # people and speaker, the speaker decided at each reading (no CAM++)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def build_videos(folder: Path, seconds: float = 60.0) -> dict[int, Path]:
    from emotion_pipeline.data import data_path
    t = data_path("video", "talking")
    clips = [t / f"{n}.mp4" for n in ("Obama_clip1", "KristiNoem", "andrew_clip_1", "feifeili_clip1", "WDA_KatieHill_000")]
    v = "scale=256:256,setsar=1,fps=25"
    a = "aresample=16000,aformat=channel_layouts=mono"
    enc = ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-c:a", "aac")
    out = {1: folder / "faces1.mp4", 2: folder / "faces2.mp4", 5: folder / "faces5.mp4"}
    loop = lambda src, dst: _ffmpeg("-stream_loop", "-1", "-i", str(src), "-t", str(seconds), "-c", "copy", str(dst))
    one = folder / "one.mp4"
    _ffmpeg("-i", str(clips[0]), "-vf", v, "-af", a, "-t", "18", *enc, str(one))
    loop(one, out[1])
    two = folder / "two.mp4"
    _ffmpeg("-i", str(clips[0]), "-i", str(clips[1]), "-filter_complex",
            f"[0:v]{v}[l];[1:v]{v}[r];[l][r]hstack[v];[0:a]{a},volume='1-between(t,6,12)':eval=frame[a0];"
            f"[1:a]{a},volume='between(t,6,12)':eval=frame[a1];[a0][a1]amix=inputs=2:normalize=0[a]",
            "-map", "[v]", "-map", "[a]", "-t", "18", *enc, str(two))
    loop(two, out[2])
    five = folder / "five.mp4"
    inputs = [x for c in clips for x in ("-stream_loop", "-1", "-i", str(c))]
    scaled = "".join(f"[{i}:v]{v}[v{i}];" for i in range(5))
    _ffmpeg(*inputs, "-filter_complex",
            scaled + "[v0][v1][v2][v3][v4]xstack=inputs=5:layout=0_0|256_0|512_0|0_256|256_256:fill=black[v];"
            f"[0:a]{a}[a]", "-map", "[v]", "-map", "[a]", "-t", "18", *enc, str(five))
    loop(five, out[5])
    return out


def _one(video: str, threads: int, settings: dict) -> None:
    """Child process: analyse one video, print its timings as JSON."""
    import torch
    torch.set_num_threads(threads)
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig
    analyzer = Analyzer(AnalyzeConfig(whisper_model="none", offline=True, progress=False, **settings))
    t0 = time.perf_counter()
    doc = analyzer.analyze(video)
    json.dump({"video": video, "duration_s": doc["video"]["duration_s"], "wall_s": time.perf_counter() - t0,
               "timings_s": doc["timings_s"], "people": len(doc.get("people") or []),
               "speakers": sorted({e["speaker"] for e in doc["timeline"] if e.get("speaker") is not None}),
               "bases": sorted({e.get("speaker_basis") for e in doc["timeline"] if e.get("speaker_basis")})}, sys.stdout)


def run(threads: int, face_expression: str = "off", repeat: int = 1) -> tuple[list[str], list[dict]]:
    """(the table's lines, the results)."""
    import numpy as np
    folder = Path(tempfile.mkdtemp(prefix="people-bench-"))
    try:
        videos = build_videos(folder)
        results = []
        for faces, video in videos.items():
            for mode, settings in (("on", {}), ("nv", NO_VOICES), ("off", OFF)):
                settings = {**settings, "face_expression": face_expression}
                runs = []
                for _ in range(repeat):
                    proc = subprocess.run([sys.executable, "-m", "bench.people_bench", "--one", str(video),
                                           "--threads", str(threads), "--settings", json.dumps(settings)],
                                          capture_output=True, text=True)
                    if proc.returncode != 0:
                        raise RuntimeError(f"{video} ({mode}): {proc.stderr.strip().splitlines()[-1:]}")
                    runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                r = runs[0]
                per = lambda key: float(np.median([x["timings_s"].get(key, 0.0) for x in runs])) / r["duration_s"] * 60
                r.update(faces=faces, mode=mode, runs=len(runs), per_minute_s={s: per(s) for s in STAGES},
                         faces_cpu_per_minute_s=per("faces_cpu"))
                r["per_minute_s"]["total"] = sum(r["per_minute_s"].values())
                results.append(r)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [f"people: seconds of compute per minute of video (threads={threads}, whisper none, "
             f"face_expression={face_expression}); off = {', '.join(f'{k}={v}' for k, v in OFF.items())}; "
             f"nv = the defaults but {', '.join(f'{k}={v}' for k, v in NO_VOICES.items())}",
             f"{'faces':>5s} {'mode':>4s} " + " ".join(f"{s:>8s}" for s in STAGES) + f" {'total':>8s} {'+ per min':>9s} "
             f"{'faces cpu':>9s} {'people':>6s}  speaker"]
    by = {(r["faces"], r["mode"]): r for r in results}
    for (faces, mode), r in sorted(by.items(), key=lambda kv: (kv[0][0], ("off", "nv", "on").index(kv[0][1]))):
        pm = r["per_minute_s"]
        extra = pm["total"] - by[(faces, "off")]["per_minute_s"]["total"] if mode != "off" else 0.0
        lines.append(f"{faces:5d} {mode:>4s} " + " ".join(f"{pm[s]:8.2f}" for s in STAGES) + f" {pm['total']:8.2f} "
                     f"{extra:+9.2f} {r['faces_cpu_per_minute_s']:9.2f} {r['people']:6d}  {','.join(r['bases']) or '-'}")
    return lines, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--face-expression", default="off", choices=["auto", "on", "off"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per video and mode; the median is reported")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args.threads, json.loads(args.settings))
        return 0
    lines, results = run(args.threads, args.face_expression, args.repeat)
    print("\n".join(lines))   # the benchmark's report is its output
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

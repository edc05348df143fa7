"""Throughput of a batch: minutes of video analysed per minute of wall time, for ``--jobs 1`` and
``--jobs 2`` side by side (alternating, repeated), with the whole command's wall time (start-up
included) and the peak RSS of the largest process (the main one for --jobs 1, a worker for 2).

    python -m bench.batch_bench [--repeats 2] [--long-minutes 3] [--jobs 1 2] [--whisper none]

Videos: the shared talking clips and one synthetic long video (a talking clip looped).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _child(argv: list[str]) -> None:
    """Run one CLI command; print its wall time and the peak RSS of its largest process."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    json.dump({"rc": r.returncode, "wall_s": wall, "peak_rss_mb": peak_mb, "stderr": r.stderr[-500:]}, sys.stdout)


STARTUP = """
import time, json
t0 = time.perf_counter()
from emotion_pipeline.analyze import Analyzer
from emotion_pipeline.config import AnalyzeConfig
t1 = time.perf_counter()
Analyzer(AnalyzeConfig(whisper_model={whisper!r}, offline=True, progress=False))
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1}}))
"""


def startup(whisper: str, repeats: int) -> list[dict]:
    """Seconds to import the pipeline and load the default profile's models, in fresh processes."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", STARTUP.format(whisper=whisper)], capture_output=True, text=True,
                           cwd=REPO, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["process_s"] = time.perf_counter() - t0
        runs.append(res)
    return runs


def _duration(path: Path) -> float:
    from emotion_pipeline import demux
    return demux.probe(path).duration_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--long-minutes", type=float, default=3.0)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--whisper", default="none", help="whisper_model setting (none: faces and voice only)")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _child(a.child)
        return 0
    from emotion_pipeline.data import data_path

    for whisper in dict.fromkeys(["auto", a.whisper]):
        runs = startup(whisper, 3)
        fmt = lambda k: f"{statistics.median(r[k] for r in runs):.2f} ({min(r[k] for r in runs):.2f}-{max(r[k] for r in runs):.2f})"
        print(f"start-up, whisper_model={whisper} (3 fresh processes, median (range)): imports {fmt('import_s')} s, "
              f"model loading {fmt('load_s')} s, whole process {fmt('process_s')} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="batch_bench_"))
    videos = work / "videos"
    videos.mkdir()
    talking = sorted(data_path("video", "talking").glob("*.mp4"))
    for v in talking:
        (videos / v.name).symlink_to(v)
    if a.long_minutes > 0 and shutil.which("ffmpeg"):
        loops = int(a.long_minutes * 60 / _duration(talking[0])) + 1
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(talking[0]), "-t",
                        str(a.long_minutes * 60), "-c", "copy", str(videos / "long_synthetic.mp4")], check=True)
    minutes = sum(_duration(v) for v in videos.iterdir()) / 60
    print(f"{len(list(videos.iterdir()))} videos, {minutes:.2f} minutes in all; {os.cpu_count()} cores; "
          f"whisper_model={a.whisper}", flush=True)
    results: dict[int, list[dict]] = {j: [] for j in a.jobs}
    for rep in range(a.repeats):
        for jobs in a.jobs:   # alternating, so both see the same machine load
            out = work / f"out_{jobs}_{rep}"
            cli = [sys.executable, "-m", "emotion_pipeline", "analyze", str(videos), "--out", str(out), "--offline",
                   "--no-progress", "--force", "--jobs", str(jobs), "--set", f"whisper_model={a.whisper}"]
            r = subprocess.run([sys.executable, "-m", "bench.batch_bench", "--child", *cli], capture_output=True,
                               text=True, cwd=REPO, check=True)
            res = json.loads(r.stdout)
            if res["rc"] != 0:
                print(f"  --jobs {jobs}: exit {res['rc']}: {res['stderr']}")
            res["throughput"] = minutes / (res["wall_s"] / 60)
            results[jobs].append(res)
            print(f"  run {rep + 1} --jobs {jobs}: wall {res['wall_s']:.1f} s, {res['throughput']:.1f} min of video "
                  f"per min, peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    print("\n| --jobs | wall s (median, range) | minutes of video per minute | peak RSS per process |")
    print("|---|---|---|---|")
    for jobs, rs in results.items():
        walls = [r["wall_s"] for r in rs]
        tp = [r["throughput"] for r in rs]
        print(f"| {jobs} | {statistics.median(walls):.1f} ({min(walls):.1f}-{max(walls):.1f}) | "
              f"{statistics.median(tp):.1f} ({min(tp):.1f}-{max(tp):.1f}) | {max(r['peak_rss_mb'] for r in rs):.0f} MB |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

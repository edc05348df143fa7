"""Resident memory of ``live`` over a long stream: a talking clip looped by ffmpeg into a pipe.

    python -m bench.live_memory                      # 25 min of stream at 8x its speed, no Whisper
    python -m bench.live_memory --minutes 25 --readrate 4 --whisper   # with live words (slower)

ffmpeg loops ``--clip`` (``-stream_loop -1``) as MPEG-TS on its stdout, read at ``--readrate`` times
real time; ``live --source -`` reads it on stdin. The live process's VmRSS is read from /proc each
time its lines pass a stream minute; the figure that matters is the growth from minute 5 (models
loaded, every buffer and window filled) to the end. Run by hand (minutes), not in the test suite.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("bench.live_memory")
REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main(argv: list[str] | None = None) -> int:
    from emotion_pipeline.data import data_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default=str(data_dir() / "video" / "talking" / "Obama_clip1.mp4"))
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--readrate", type=float, default=8.0, help="stream speed, times real time (ffmpeg -readrate)")
    p.add_argument("--whisper", action="store_true", help="with live transcription (default: whisper_model=none)")
    p.add_argument("--from-minute", type=float, default=5.0, help="growth is measured from this stream minute")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if shutil.which("ffmpeg") is None:
        log.error("error: needs the ffmpeg command")
        return 2
    seconds = int(args.minutes * 60)
    feed = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-readrate", str(args.readrate),
                             "-stream_loop", "-1", "-i", args.clip, "-t", str(seconds), "-c:v", "libx264",
                             "-preset", "ultrafast", "-c:a", "aac", "-f", "mpegts", "pipe:1"], stdout=subprocess.PIPE)
    out = Path(tempfile.mkdtemp(prefix="live_memory_"))
    cmd = [sys.executable, "-m", "emotion_pipeline", "live", "--source", "-", "--offline", "--out", str(out),
           "--max-delay-s", "60"] + ([] if args.whisper else ["--set", "whisper_model=none"])
    proc = subprocess.Popen(cmd, stdin=feed.stdout, stdout=subprocess.PIPE, text=True, cwd=REPO)
    feed.stdout.close()
    samples: dict[int, float] = {}
    last = -1
    for line in proc.stdout:
        row = json.loads(line)
        if row["type"] != "second":
            continue
        minute = int(row["start_s"] // 60)
        if minute > last:
            last = minute
            samples[minute] = rss_mb(proc.pid)
            log.info("stream minute %3d: RSS %.1f MB", minute, samples[minute])
    proc.wait()
    feed.wait()
    start = min((m for m in samples if m >= args.from_minute), default=None)
    if start is None:
        log.error("error: the stream never reached minute %g", args.from_minute)
        return 1
    end = max(samples)
    growth = samples[end] - samples[start]
    log.info("RSS minute %d -> %d: %.1f -> %.1f MB, growth %.1f MB (%s, readrate %gx, exit %d)", start, end,
             samples[start], samples[end], growth, "with Whisper" if args.whisper else "no Whisper", args.readrate,
             proc.returncode)
    print(json.dumps({"from_minute": start, "to_minute": end, "rss_mb": samples, "growth_mb": round(growth, 1),
                      "whisper": args.whisper, "readrate": args.readrate, "exit": proc.returncode}))
    shutil.rmtree(out, ignore_errors=True)
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

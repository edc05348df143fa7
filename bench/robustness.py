"""Bad and unusual inputs, run through the command line as a new user would: one table row each.

    python -m bench.robustness [--repo PATH] [--work DIR] [--only round2|round3] [--table FILE]

Makes every input from the shared clips with ffmpeg (ffmpeg must be installed), runs
``python -m emotion_pipeline analyze`` on it from ``--repo`` (default: this checkout, so an older
checkout can be compared side by side) and prints, per case: the exit code, how many lines went
to stderr that are not log lines, whether a traceback was printed, the output files, and, where
a timeline was written, how many seconds carry a face and a voice and how many voice rows agree
with the same clip's unshifted analysis. Nothing here is a test: ``tests/test_reliability.py``
asserts the behaviour; this prints the before/after table for the closing note and the README.

Round 3 (issue 22, ``tests/test_reliability3.py``): outputs over inputs, CSV formula injection, a
JSON that names the file to embed, alias bombs and oversized transcripts, language codes, ``$``
in words, settings trusted too far, unclear messages (copies of the shared clips and small generated
files); its second part (``tests/test_reliability3_media.py``) makes media with ffmpeg: recordings
joined with ``cat``, two audio tracks and subtitles, cover art, a held frame, a raw .h264 stream, an
upside-down clip; and ends live runs (SIGTERM, a FIFO that stalls, --max-seconds), makes the cache
unusable and the disk full. Each row prints the issue's item, the behaviour it recorded before the
fix and what ``--repo`` does now; the table of all 16 items is saved as Markdown (``--table``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EMOTION_DATA_DIR", REPO.parent / "shared" / "data"))
TALKING = DATA / "video" / "talking" / "Obama_clip1.mp4"
MEAD = DATA / "video" / "mead"
BASE = ["--offline", "--no-progress", "--set", "whisper_model=none"]


def ff(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def damaged_inputs(src: Path, w: Path) -> dict[str, Path]:
    """The timing and damage cases, made from one clip into ``w`` (tests/test_reliability.py uses
    the same ones): start offset, MPEG-TS, 20% of the bytes overwritten, a faststart MP4 and an
    MKV cut in half, MJPEG in MKV, camera or microphone starting 5 s late."""
    import random

    p = {"offset10": w / "offset10.mp4", "ts": w / "clip.ts", "corrupt20": w / "corrupt20.mp4",
         "faststart_half": w / "faststart_half.mp4", "mjpeg_mkv": w / "mjpeg.mkv",
         "late_video": w / "late_video.mkv", "late_audio": w / "late_audio.mp4", "mkv_half": w / "mkv_half.mkv"}
    ff("-i", str(src), "-c", "copy", "-output_ts_offset", "10", str(p["offset10"]))
    ff("-i", str(src), "-c", "copy", str(p["ts"]))
    data = bytearray(src.read_bytes())
    n, rnd = len(data), random.Random(0)
    data[int(n * 0.4):int(n * 0.6)] = bytes(rnd.randrange(256) for _ in range(int(n * 0.6) - int(n * 0.4)))
    p["corrupt20"].write_bytes(bytes(data))
    faststart = w / "faststart.mp4"
    ff("-i", str(src), "-c", "copy", "-movflags", "+faststart", str(faststart))
    p["faststart_half"].write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    ff("-i", str(src), "-c:v", "mjpeg", "-q:v", "5", "-c:a", "copy", str(p["mjpeg_mkv"]))
    ff("-itsoffset", "5", "-i", str(src), "-i", str(src), "-map", "0:v", "-map", "1:a", "-c", "copy",
       str(p["late_video"]))
    ff("-i", str(src), "-itsoffset", "5", "-i", str(src), "-map", "0:v", "-map", "1:a", "-c", "copy",
       str(p["late_audio"]))
    p["mkv_half"].write_bytes(p["mjpeg_mkv"].read_bytes()[: p["mjpeg_mkv"].stat().st_size // 2])   # no per-stream lengths
    return p


# ------------------------------------------------------------------ round 3: streams (issue 22, items 5, 7-9, 15, 16)
# Each maker writes one input into ``w`` from the shared clips with ffmpeg (tests/test_reliability3.py
# makes the same ones at test time) and returns its path.
def joined_ts(w: Path) -> Path:
    """Two 3 s recordings (two talking clips, with sound) joined with ``cat`` into one MPEG-TS: the
    second's timestamps restart where the first's began."""
    talking = TALKING.parent
    parts = []
    for i, (src, seek) in enumerate(((talking / "Obama_clip1.mp4", "2"), (talking / "andrew_clip_1.mp4", "2"))):
        parts.append(w / f"part{i}.ts")
        ff("-ss", seek, "-t", "3", "-i", str(src), "-vf", "scale=256:256", "-c:v", "libx264", "-preset", "veryfast",
           "-c:a", "aac", "-f", "mpegts", str(parts[-1]))
    out = w / "joined.ts"
    out.write_bytes(b"".join(p.read_bytes() for p in parts))
    return out


def two_audio_tracks(w: Path) -> Path:
    """4 s of a talking clip with two audio tracks: first silence tagged German, not default; second
    the clip's English speech, tagged ``eng`` and default; plus a mov_text subtitle track."""
    subs = w / "subs.srt"
    subs.write_text("1\n00:00:00,200 --> 00:00:02,500\nI love this, it is wonderful\n\n"
                    "2\n00:00:02,600 --> 00:00:03,900\nthank you all\n\n")
    out = w / "two_tracks.mp4"
    ff("-t", "4", "-i", str(TALKING), "-f", "lavfi", "-t", "4", "-i", "anullsrc=r=48000:cl=mono", "-i", str(subs),
       "-map", "0:v", "-map", "1:a", "-map", "0:a", "-map", "2:s", "-c:v", "libx264", "-preset", "veryfast",
       "-c:a", "aac", "-c:s", "mov_text", "-metadata:s:a:0", "language=deu", "-metadata:s:a:1", "language=eng",
       "-metadata:s:s:0", "language=eng", "-disposition:a:0", "0", "-disposition:a:1", "default", "-t", "4", str(out))
    return out


def cover_art(w: Path, ext: str) -> Path:
    """3 s of speech in an .mp3 or .m4a with a face as its cover art (an attached picture)."""
    cover = w / "cover.jpg"
    ff("-ss", "1", "-i", str(TALKING), "-frames:v", "1", str(cover))
    out = w / f"song.{ext}"
    codec = ["-c:a", "libmp3lame"] if ext == "mp3" else ["-c:a", "aac"]
    ff("-t", "3", "-i", str(TALKING), "-i", str(cover), "-map", "0:a", "-map", "1:v", *codec, "-c:v", "mjpeg",
       "-disposition:v:0", "attached_pic", str(out))
    return out


def held_frame(w: Path) -> Path:
    """A variable-frame-rate MP4: 4 s of a talking clip at 30 fps whose frame at 2 s stays on screen
    for 10 s (nothing decoded in between, as a screen recorder writes a still screen), 14 s of sound."""
    out = w / "held.mp4"
    ff("-t", "4", "-i", str(TALKING), "-t", "14", "-i", str(TALKING), "-map", "0:v", "-map", "1:a",
       "-vf", "setpts='if(gte(N,60),PTS+10/TB,PTS)'", "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "veryfast",
       "-c:a", "aac", str(out))
    return out


def raw_h264(w: Path) -> Path:
    """A raw H.264 elementary stream (no container, no timestamps): 4 s of a talking clip."""
    out = w / "cam.h264"
    ff("-t", "4", "-i", str(TALKING), "-an", "-c:v", "libx264", "-preset", "veryfast", "-f", "h264", str(out))
    return out


def upside_down(w: Path) -> Path:
    """A MEAD clip turned upside down in its pixels, with no rotation metadata."""
    out = w / "upside_down.mp4"
    ff("-i", str(MEAD / "M030_front_happy_level3_001.mp4"), "-vf", "vflip,hflip", "-c:v", "libx264",
       "-preset", "veryfast", str(out))
    return out


def make_inputs(w: Path) -> dict[str, Path]:
    w.mkdir(parents=True, exist_ok=True)
    p = {"original": w / "orig" / "clip.mp4"}
    p["original"].parent.mkdir(exist_ok=True)
    shutil.copy(TALKING, p["original"])
    p.update(damaged_inputs(TALKING, w))
    p["long_name"] = w / ("x" * 238 + ".mp4")
    shutil.copy(MEAD / "M030_front_angry_level3_001.mp4", p["long_name"])
    for d in ("a", "b"):
        (w / d).mkdir(exist_ok=True)
        p[f"same_name_{d}"] = w / d / "clip.mp4"
    shutil.copy(MEAD / "M030_front_angry_level3_001.mp4", p["same_name_a"])
    shutil.copy(MEAD / "M030_front_happy_level3_001.mp4", p["same_name_b"])
    p["space"] = w / "a b.mp4"
    shutil.copy(MEAD / "M030_front_sad_level3_001.mp4", p["space"])
    p["empty"] = w / "empty.mp4"
    p["empty"].write_bytes(b"")
    p["text"] = w / "notes.mp4"
    p["text"].write_text("not a video\n" * 40)
    for name, body in {"tr_nan": '{"segments": [{"start_s": NaN, "end_s": 1, "text": "hi"}]}',
                       "tr_inf": '{"segments": [{"start_s": 0, "end_s": 1e400, "text": "hi"}]}',
                       "tr_lang": '{"language": 5, "segments": [{"start_s": 0, "end_s": 1, "text": "hi"}]}',
                       "tr_bad": '{"segments": 7}'}.items():
        p[name] = w / f"{name}.json"
        p[name].write_text(body)
    return p


def timeline_stats(doc: dict, reference: dict | None) -> str:
    tl = doc["timeline"]
    face = sum(t["face"] is not None for t in tl)
    audio = sum(t["audio"] is not None for t in tl)
    out = f"{len(tl)} s: face {face}, voice {audio}"
    if reference is not None:
        ref = reference["timeline"]
        agree = sum(1 for a, b in zip(tl, ref) if (a["audio"] or {}).get("label") == (b["audio"] or {}).get("label")
                    and (a["audio"] is None) == (b["audio"] is None))
        out += f", voice rows as unshifted {agree}/{len(ref)}"
    if doc.get("complete") is False:
        out += ", marked partial"
    return out


def run(repo: Path, args: list[str], out: Path, cwd: Path | None = None) -> tuple[int, list[str], bool, str]:
    r = subprocess.run([sys.executable, "-m", "emotion_pipeline", "analyze", *args, "--out", str(out)],
                       capture_output=True, text=True, cwd=cwd or repo,
                       env={**os.environ, "PYTHONPATH": str(repo)})
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith(("INFO ", "DEBUG ", "WARNING ", "ERROR "))]
    counts = [ln.split(": ", 1)[1].split("; summary")[0] for ln in r.stderr.splitlines()
              if ln.startswith("INFO pipeline: analysed")]
    return r.returncode, lines, "Traceback" in r.stderr, counts[0] if counts else ""


# ------------------------------------------------------------------ round 3
def _cli(repo: Path, args: list, cwd: Path | None = None, timeout: float = 120) -> tuple[str, list[str], float]:
    """(exit code or 'killed after N s', the lines the user is told, seconds)."""
    import time

    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "emotion_pipeline", *map(str, args)], capture_output=True, text=True,
                           cwd=cwd or repo, env={**os.environ, "PYTHONPATH": str(repo)}, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"killed after {timeout:.0f} s", [], time.perf_counter() - t0
    told = [ln for ln in r.stderr.splitlines() if not ln.startswith(("INFO ", "DEBUG ", *NATIVE_LOGS))]
    if "Traceback" in r.stderr:
        told = ["TRACEBACK " + (told[-1] if told else "")]
    return f"exit {r.returncode}", told, time.perf_counter() - t0


# native libraries' own log lines (OpenCV, MediaPipe's glog and TensorFlow Lite, onnxruntime): not ours
NATIVE_LOGS = ("[ WARN:", "W0000", "I0000", "WARNING: Logging before InitGoogle", "INFO: Created TensorFlow Lite",
               "\x1b[0;93m")


def _py(repo: Path, code: str, timeout: float = 120) -> str:
    """The last line a Python snippet prints (or its exception's last line), run against ``repo``."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": str(repo)})
    lines = (r.stdout.strip() or r.stderr.strip()).splitlines()
    return lines[-1][:110] if lines else f"exit {r.returncode}"


def _srt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
    return "".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{t}\n\n" for i, (a, b, t) in enumerate(cues, 1))


ROUND3_BEFORE = {   # what issue 22 recorded before the fix
    "mp4 output over the input video": "exit 0, talk.mp4 replaced by the annotated video",
    "png output over a png input": "exit 0, face.png replaced by the plot",
    "srt output over --transcript": "exit 0, subtitles replaced; re-runs read [neutral 51%] as words",
    "predict --out = --data": "the dataset overwritten",
    "results folder inside the input": "re-analyses results/a.mp4 each run (results/results/...)",
    "word =HYPERLINK(...) in the CSV": "cell starts with = (a spreadsheet runs it)",
    "file =evil.mp4 in batch_summary": "cell starts with =",
    "crafted JSON names /etc/passwd": "the report embeds /etc/passwd (base64)",
    "YAML alias bomb config": "hangs, ~100 MB/s while building the message",
    "3 MB transcript for a 3.8 s clip": "10 MB: 103 s and 4.8 GB",
    "transcript language EN/en-US/eng/English": "words off: 'text model is English-only'",
    "$ in words and file name": "exit 1 (mathtext error), JSON left; 20.10off,downfrom30.",
    "--set fusion_head=/missing": "exit 0, silent fallback to the average",
    "glob with .. after the wildcard": "ValueError ... not in the subpath (batch aborted)",
    "--manifest alone": "argparse: the following arguments are required: videos",
    "train missing.yaml": "no task: key",
    "live --max-seconds nan": "runs, then fails writing the JSON",
    "Result.load of a tampered JSON": "jsonschema.ValidationError",
    "Result.load start_s 50 > end_s 1": "accepted",
    "a/../b/x.mp4 and its absolute path": "analysed twice into one output",
    ".opus .m3u8 .h264 .y4m in a folder": "skipped without a word",
    "name with a newline fails": "the error line is broken in two",
    "--set whisper_model=small (not cached)": "a log warning, warnings: [] in the JSON, exit 0",
    "JSON transcript whose text is an object": "accepted: its repr is scored",
    "--jobs 2, one worker SIGKILLed": "every video not yet started fails with BrokenProcessPool",
    "--jobs 2, SIGTERM to the command": "workers orphaned, still writing into --out",
    # the second part (streams, live endings, caches, disks; tests/test_reliability3_media.py)
    "two recordings joined with cat (MPEG-TS)": "6 s reported as 3 s, complete: true, coverage 1.0",
    "two audio tracks, the 2nd English + default": "the 1st (silent) track used; the JSON names neither",
    "mov_text subtitles, no Whisper": "ignored without a word",
    "cover art in an mp3": "partial: video decoded for 0.2 of 3.3 s, exit 3; cover's face scored",
    "cover art in an m4a": "partial: video decoded for 0.2 of 3.3 s, exit 3; cover's face scored",
    "a frame held for 10 s (VFR)": "reported as lost video (exit 3)",
    "annotated MP4 of the held frame": "re-timed from 14 s to 18.9 s, out of sync with its sound",
    "SIGTERM during live": "no timeline written (SIGINT writes it)",
    "live FIFO that stops sending": "hangs forever",
    "read-only HOME, default settings": "every run fails: OSError: Read-only file system: .../asr",
    "cache path that is a file": "NotADirectoryError",
    "raw .h264 stream": "PermissionError from a seek",
    "--set face_model= weights of a bad shape": "error names no file",
    "--set face_model= a huge header": "error names no file",
    "transcript end_s of 401 digits": "OverflowError naming no file",
    "a disk that fills (HTML does not fit)": "the failed video's JSON and CSV left behind",
    "live --max-seconds 5": "stopped: end of stream",
    "upside-down video, no rotation metadata": "analysed without a hint",
}
# the item of every case, for the table of all 16
ROUND3_ITEM = {
    "mp4 output over the input video": 1, "png output over a png input": 1, "srt output over --transcript": 1,
    "predict --out = --data": 1, "results folder inside the input": 1, "word =HYPERLINK(...) in the CSV": 2,
    "file =evil.mp4 in batch_summary": 2, "crafted JSON names /etc/passwd": 3, "YAML alias bomb config": 4,
    "3 MB transcript for a 3.8 s clip": 4, "two recordings joined with cat (MPEG-TS)": 5,
    "transcript language EN/en-US/eng/English": 6, "two audio tracks, the 2nd English + default": 7,
    "mov_text subtitles, no Whisper": 7, "cover art in an mp3": 8, "cover art in an m4a": 8,
    "a frame held for 10 s (VFR)": 9, "annotated MP4 of the held frame": 9, "$ in words and file name": 10,
    "--set fusion_head=/missing": 11, "--set whisper_model=small (not cached)": 11,
    "a/../b/x.mp4 and its absolute path": 12, ".opus .m3u8 .h264 .y4m in a folder": 12,
    "JSON transcript whose text is an object": 12, "Result.load start_s 50 > end_s 1": 12,
    "--jobs 2, one worker SIGKILLed": 13, "--jobs 2, SIGTERM to the command": 13, "SIGTERM during live": 13,
    "live FIFO that stops sending": 13, "read-only HOME, default settings": 14, "cache path that is a file": 14,
    "glob with .. after the wildcard": 15, "raw .h264 stream": 15, "Result.load of a tampered JSON": 15,
    "live --max-seconds nan": 15, "transcript end_s of 401 digits": 15,
    "--set face_model= weights of a bad shape": 15, "--set face_model= a huge header": 15,
    "--manifest alone": 16, "train missing.yaml": 16, "name with a newline fails": 16,
    "a disk that fills (HTML does not fit)": 16, "live --max-seconds 5": 16,
    "upside-down video, no rotation metadata": 16,
}


def _signal_case(repo: Path, w: Path, sig: str) -> str:
    """``analyze --jobs 2`` on four copies of the talking clip; once the first result is written,
    SIGKILL one worker (as the OOM killer does) or SIGTERM the command. What was left, 5 s later."""
    import signal
    import time

    for i in range(4):
        (w / "in").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TALKING, w / "in" / f"t{i}.mp4")
    out = w / "out"
    p = subprocess.Popen([sys.executable, "-m", "emotion_pipeline", "analyze", str(w / "in"), "--out", str(out),
                          "--jobs", "2", "--offline", "--no-progress", "--set", "whisper_model=none"],
                         stderr=subprocess.PIPE, text=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    t0 = time.time()
    while time.time() - t0 < 300 and not list(out.glob("*.json")) and p.poll() is None:
        time.sleep(0.2)
    ps = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout
    workers = [int(ln.split()[0]) for ln in ps.splitlines() if "spawn_main" in ln]
    if sig == "KILL" and workers:
        os.kill(workers[0], signal.SIGKILL)
    else:
        p.send_signal(signal.SIGTERM)
    try:
        err = p.communicate(timeout=600)[1]
    except subprocess.TimeoutExpired:
        p.kill()
        err = "(did not end)"
    time.sleep(5)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
    for pid in alive:   # (an older checkout left them running)
        os.kill(pid, signal.SIGKILL)
    broken = err.count("BrokenProcessPool")
    return (f"exit {p.returncode} | {len(list(out.glob('t*.json')))}/4 results, {broken} BrokenProcessPool, "
            f"{len(alive)} worker(s) left running, {len(list(out.rglob('*.part')))} .part files")


def round3(repo: Path, w: Path) -> list[tuple[int, str, str, str]]:
    """(item, case, before, now) for every round-3 case."""
    import hashlib

    w.mkdir(parents=True, exist_ok=True)
    clip = MEAD / "M030_front_happy_level3_001.mp4"
    rows: list[tuple[int, str, str, str]] = []
    sha = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()   # noqa: E731
    fast = ["--offline", "--no-progress", "--set", "whisper_model=none"]

    def row(name: str, now: str) -> None:
        rows.append((ROUND3_ITEM[name], name, ROUND3_BEFORE[name], now))
        print(f"{ROUND3_ITEM[name]:>2} {name:<42} | {ROUND3_BEFORE[name]:<60} | {now}", flush=True)

    def said(rc: str, told: list[str], extra: str = "") -> str:
        msg = (told[0][:100] + (f" (+{len(told) - 1} lines)" if len(told) > 1 else "")) if told else "(nothing)"
        return f"{rc} | {msg}" + (f" | {extra}" if extra else "")

    d = w / "dir"
    d.mkdir(exist_ok=True)
    talk = d / "talk.mp4"
    shutil.copyfile(clip, talk)
    before = sha(talk)
    rc, told, _ = _cli(repo, ["analyze", talk, "--out", d, "--formats", "json,mp4", *fast])
    row("mp4 output over the input video", said(rc, told, f"input {'kept' if sha(talk) == before else 'REPLACED'}"))
    shutil.copyfile(clip, talk)   # (an older checkout replaced it)

    import av
    import cv2
    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="bgr24")
    face = w / "png" / "face.png"
    face.parent.mkdir(exist_ok=True)
    cv2.imwrite(str(face), frame)
    before = sha(face)
    rc, told, _ = _cli(repo, ["analyze", face, "--out", face.parent, "--formats", "png", *fast])
    row("png output over a png input", said(rc, told, f"input {'kept' if sha(face) == before else 'REPLACED'}"))

    subs = d / "talk.srt"
    subs.write_text(_srt([(0.2, 1.5, "hello there")]))
    before = sha(subs)
    rc, told, _ = _cli(repo, ["analyze", talk, "--transcript", subs, "--out", d, "--formats", "srt", *fast])
    row("srt output over --transcript", said(rc, told, f"transcript {'kept' if sha(subs) == before else 'REPLACED'}"))

    dev = w / "dev.csv"
    dev.write_text("Utterance,Emotion\nhello,joy\n")
    before = sha(dev)
    rc, told, _ = _cli(repo, ["predict", "text", "--data", dev, "--out", dev])
    row("predict --out = --data", said(rc, told, f"data {'kept' if sha(dev) == before else 'REPLACED'}"))

    nest = w / "nest"
    nest.mkdir(exist_ok=True)
    shutil.copyfile(clip, nest / "a.mp4")
    for _ in range(2):
        _cli(repo, ["analyze", nest, "--out", nest / "results", "--formats", "json,mp4", *fast], timeout=600)
    made = sorted(str(p.relative_to(nest)) for p in (nest / "results").rglob("*.json"))
    row("results folder inside the input", f"after two runs: {made}")

    inj = w / "inj"
    inj.mkdir(exist_ok=True)
    shutil.copyfile(clip, inj / "budget $$ Q1.mp4")
    words = inj / "words.srt"
    words.write_text(_srt([(0.1, 1.4, '=HYPERLINK("http://evil/","x")'), (1.5, 3.0, "we raised $20 from 10% of $30")]))
    rc, told, _ = _cli(repo, ["analyze", inj / "budget $$ Q1.mp4", "--transcript", words, "--out", inj / "o",
                              "--formats", "json,csv,png,html", *fast], timeout=600)
    csv_path = inj / "o" / "budget $$ Q1.csv"
    cell = ""
    if csv_path.exists():
        import csv as _csv
        cells = [r["words"] for r in _csv.DictReader(csv_path.open()) if r.get("words")]
        cell = cells[0][:24] if cells else ""
    row("word =HYPERLINK(...) in the CSV", f"{rc} | words cell: {cell!r}")
    row("$ in words and file name", said(rc, told, f"png {'made' if (inj / 'o' / 'budget $$ Q1.png').exists() else 'missing'}"))

    ev = w / "evil"
    ev.mkdir(exist_ok=True)
    (ev / "=evil.mp4").write_bytes(b"")
    (ev / "@sum.mp4").write_bytes(b"")
    _cli(repo, ["analyze", "=evil.mp4", "@sum.mp4", "--out", "o", *fast], cwd=ev)
    summary = ev / "o" / "batch_summary.csv"
    first = summary.read_text().splitlines()[1][:16] if summary.exists() else "(no summary)"
    row("file =evil.mp4 in batch_summary", f"row starts {first!r}")

    timeline = inj / "o" / "budget $$ Q1.json"
    if timeline.exists():
        crafted = w / "crafted.json"
        doc = json.loads(timeline.read_text())
        doc["input"] = {"path": "/etc/passwd", "size_bytes": 1, "mtime_ns": 0}
        crafted.write_text(json.dumps(doc))
        code = ("import base64; from emotion_pipeline.api import Result; r = Result.load(%r); "
                "h = r.save(%r, formats='html')['html'].read_text(); "
                "print('embeds /etc/passwd' if base64.b64encode(open('/etc/passwd','rb').read()).decode()[:40] in h "
                "else 'not embedded (video=%%s)' %% r.video)") % (str(crafted), str(w / "crafted_out"))
        row("crafted JSON names /etc/passwd", _py(repo, code))

    bomb = w / "bomb.yaml"
    bomb.write_text("\n".join(['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
                              + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefg", "bcdefgh")]
                              + [f"language: [{','.join(['*h'] * 9)}]"]) + "\n")
    rc, told, t = _cli(repo, ["analyze", talk, "--config", bomb, "--out", w / "o_bomb"], timeout=30)
    row("YAML alias bomb config", said(rc, told, f"{t:.1f} s"))

    big = w / "big.srt"
    big.write_text("1\n00:00:00,000 --> 00:00:01,000\n" + "word " * 600_000 + "\n")
    rc, told, t = _cli(repo, ["analyze", talk, "--transcript", big, "--out", w / "o_big", *fast], timeout=120)
    row("3 MB transcript for a 3.8 s clip", said(rc, told, f"{t:.1f} s"))

    states = []
    for lang in ("EN", "en-US", "eng", "English"):
        tj = w / f"lang_{lang}.json"
        tj.write_text(json.dumps({"language": lang, "segments": [{"start_s": 0.2, "end_s": 2.0, "text": "I love this"}]}))
        out = w / f"o_lang_{lang}"
        _cli(repo, ["analyze", talk, "--transcript", tj, "--out", out, *fast], timeout=600)
        got = out / "talk.json"
        states.append(f"{lang}: {json.loads(got.read_text())['modalities']['text']['status']}" if got.exists() else f"{lang}: -")
    row("transcript language EN/en-US/eng/English", ", ".join(states))

    rc, told, _ = _cli(repo, ["analyze", talk, "--out", w / "o_head", "--offline", "--set", "fusion_head=/missing.safetensors",
                              "--set", "whisper_model=none"], timeout=600)
    row("--set fusion_head=/missing", said(rc, told))
    rc, told, _ = _cli(repo, ["analyze", str(w / "*" / ".." / "dir" / "talk.mp4"), "--out", w / "o_glob", *fast], timeout=600)
    row("glob with .. after the wildcard", said(rc, told))
    listing = w / "list.txt"
    listing.write_text("missing.mp4\n")
    rc, told, _ = _cli(repo, ["analyze", "--manifest", listing, "--out", w / "o_man", *fast])
    row("--manifest alone", said(rc, told))
    rc, told, _ = _cli(repo, ["train", "face", w / "missing.yaml"])
    row("train missing.yaml", said(rc, told))
    rc, told, _ = _cli(repo, ["live", "--source", talk, "--max-seconds", "nan", "--out", w / "o_live", "--offline",
                              "--set", "whisper_model=none"], timeout=300)
    row("live --max-seconds nan", said(rc, told))
    tampered = w / "tampered.json"
    tampered.write_text(json.dumps({"schema_version": "1.1", "timeline": "nope"}))
    row("Result.load of a tampered JSON",
        _py(repo, f"from emotion_pipeline.api import Result\ntry:\n Result.load({str(tampered)!r})\n"
                  f"except Exception as e:\n print(type(e).__name__ + ': ' + str(e).splitlines()[0][:80])"))
    if timeline.exists():
        doc = json.loads(timeline.read_text())
        doc["timeline"][0]["start_s"], doc["timeline"][0]["end_s"] = 50, 1
        backwards = w / "backwards.json"
        backwards.write_text(json.dumps(doc))
        row("Result.load start_s 50 > end_s 1",
            _py(repo, f"from emotion_pipeline.api import Result\ntry:\n Result.load({str(backwards)!r}); print('accepted')\n"
                      f"except Exception as e:\n print(type(e).__name__ + ': ' + str(e)[:90])"))
    (w / "a").mkdir(exist_ok=True)
    rc, told, _ = _cli(repo, ["analyze", w / "a" / ".." / "dir" / "talk.mp4", talk.resolve(), "--out", w / "o_twice", *fast],
                       timeout=600)
    summary = w / "o_twice" / "batch_summary.csv"
    n = len(summary.read_text().splitlines()) - 1 if summary.exists() else 1
    row("a/../b/x.mp4 and its absolute path", f"{rc} | analysed {n} time(s)")
    odd = w / "odd"
    odd.mkdir(exist_ok=True)
    for name in ("talk.m3u8", "cam.h264"):
        (odd / name).write_bytes(b"x")
    rc, told, _ = _cli(repo, ["analyze", odd, "--out", w / "o_odd", *fast])
    warned = [ln for ln in told if "m3u8" in ln or "h264" in ln]
    row(".opus .m3u8 .h264 .y4m in a folder", said(rc, warned or told))
    rc, told, _ = _cli(repo, ["analyze", talk, "--out", w / "o_small", "--offline", "--no-progress", "--set",
                              "whisper_model=small"], timeout=600)
    got = w / "o_small" / "talk.json"
    warned = len(json.loads(got.read_text())["warnings"]) if got.exists() else "-"
    row("--set whisper_model=small (not cached)", said(rc, [t[:60] for t in told], f"JSON warnings: {warned}"))
    obj = w / "obj.json"
    obj.write_text(json.dumps({"segments": [{"start_s": 0, "end_s": 1, "text": {"evil": 1}}]}))
    rc, told, _ = _cli(repo, ["analyze", talk, "--transcript", obj, "--out", w / "o_obj", *fast], timeout=600)
    row("JSON transcript whose text is an object", said(rc, told))
    for name, sig in (("--jobs 2, one worker SIGKILLed", "KILL"), ("--jobs 2, SIGTERM to the command", "TERM")):
        row(name, _signal_case(repo, w / f"sig_{sig}", sig))
    nl = w / "bad\nname.mp4"
    nl.write_bytes(b"")
    rc, told, _ = _cli(repo, ["analyze", nl, "--out", w / "o_nl", *fast])
    row("name with a newline fails", said(rc, told, f"{len(told)} line(s)"))
    round3_media(repo, w / "media", row, said)
    return rows


def _doc_summary(path: Path) -> str:
    if not path.is_file():
        return "no JSON"
    doc = json.loads(path.read_text())
    tl = doc["timeline"]
    return (f"{len(tl)} s, face {sum(t['face'] is not None for t in tl)}, voice {sum(t['audio'] is not None for t in tl)}"
            f", words {sum(t['text'] is not None for t in tl)}, complete {str(doc['complete']).lower()}")


def round3_media(repo: Path, w: Path, row, said) -> None:
    """The second part's cases: media made with ffmpeg, live endings, caches, full disks."""
    import resource
    import signal
    import threading
    import time

    w.mkdir(parents=True, exist_ok=True)
    fast = ["--offline", "--no-progress", "--set", "whisper_model=none"]
    made = {"joined": joined_ts(w), "tracks": two_audio_tracks(w), "mp3": cover_art(w, "mp3"),
            "m4a": cover_art(w, "m4a"), "held": held_frame(w), "h264": raw_h264(w), "upside": upside_down(w)}
    out = w / "o"
    rc, told, _ = _cli(repo, ["analyze", *made.values(), "--out", out, *fast], timeout=900)
    doc = lambda name: json.loads((out / name).read_text()) if (out / name).is_file() else None   # noqa: E731
    d = doc("joined.json")
    row("two recordings joined with cat (MPEG-TS)", f"{rc} | {_doc_summary(out / 'joined.json')}" + (
        f", coverage {d['coverage']['video']['coverage']}, restarts at {d['video'].get('timestamp_restarts_s')}" if d else ""))
    d = doc("two_tracks.json")
    used = [t["index"] for t in d["video"].get("tracks", []) if t["kind"] == "audio" and t["used"]] if d else []
    n_audio = sum(t["kind"] == "audio" for t in d["video"].get("tracks", [])) if d else 0
    row("two audio tracks, the 2nd English + default",
        f"{_doc_summary(out / 'two_tracks.json')} | JSON: track {used or '?'} used of {n_audio or '?'} audio")
    words = sum(t["text"] is not None for t in d["timeline"]) if d else 0
    row("mov_text subtitles, no Whisper", f"{words} s with words | transcript: {((d or {}).get('transcript') or {}).get('source')}")
    for key, name in (("mp3", "song.mp3.json"), ("m4a", "song.m4a.json")):
        d = doc(name)
        row(f"cover art in an {key}", f"{_doc_summary(out / name)} | face: {d['modalities']['face']['reason'] if d else '-'}")
    d = doc("held.json")
    row("a frame held for 10 s (VFR)", f"{_doc_summary(out / 'held.json')}" + (
        f", video coverage {d['coverage']['video']['coverage']}, held {d['coverage']['video'].get('held_s')}" if d else ""))
    d = doc("cam.json")
    row("raw .h264 stream", said(rc, [t for t in told if "cam.h264" in t], _doc_summary(out / "cam.json")))
    d = doc("upside_down.json")
    hint = (d["modalities"]["face"]["reason"] or "no hint")[:60] if d else "-"
    row("upside-down video, no rotation metadata", f"{_doc_summary(out / 'upside_down.json')} | face: {hint}")

    held = w / "o_mp4"
    _cli(repo, ["analyze", made["held"], "--out", held, "--formats", "json,mp4", *fast], timeout=600)
    spans = "no MP4"
    if (held / "held.mp4").is_file():
        import av
        with av.open(str(held / "held.mp4")) as c:
            spans = ", ".join(f"{s.type} {float((s.start_time + s.duration) * s.time_base):.2f} s"
                              for s in (c.streams.video[0], c.streams.audio[0]))
    row("annotated MP4 of the held frame", f"source 14.00 s | annotated: {spans}")

    # live: SIGTERM once two lines are out; a FIFO whose writer stops sending (kept open 60 s)
    lines = w / "live_term.jsonl"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-m", "emotion_pipeline", "live", "--source", str(TALKING), "--realtime",
                             "--out", str(w / "o_live"), "--lines", str(lines), "--offline", "--set", "whisper_model=none"],
                            stderr=subprocess.PIPE, text=True, cwd=repo, env=env)
    t0 = time.time()
    while time.time() - t0 < 120 and (not lines.exists() or lines.read_text().count("\n") < 2) and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    written = w / "o_live" / f"{TALKING.stem}.live.json"
    stopped = json.loads(written.read_text())["live"]["stopped"] if written.is_file() else "no timeline"
    row("SIGTERM during live", f"exit {proc.returncode} | timeline: {stopped}")
    fifo = w / "cam.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    ts = w / "eight.ts"
    ff("-t", "8", "-i", str(TALKING), "-c", "copy", str(ts))

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(ts.read_bytes())
            fh.flush()
            time.sleep(60)
    threading.Thread(target=feed, daemon=True).start()
    rc, told, took = _cli(repo, ["live", "--source", fifo, "--out", w / "o_fifo", "--lines", w / "fifo.jsonl", "--offline",
                                 "--set", "whisper_model=none"], timeout=50)
    row("live FIFO that stops sending", said(rc, told, f"{took:.0f} s"))
    rc, told, _ = _cli(repo, ["live", "--source", TALKING, "--max-seconds", "5", "--out", w / "o_max", "--lines",
                              w / "max.jsonl", "--offline", "--set", "whisper_model=none"], timeout=300)
    written = w / "o_max" / f"{TALKING.stem}.live.json"
    row("live --max-seconds 5", said(rc, told, "stopped: " + (json.loads(written.read_text())["live"]["stopped"]
                                                            if written.is_file() else "no timeline")))

    # caches: HOME read-only (a bind mount when root), a cache path that is a file; the default settings
    clip = w / "talk5.mp4"   # 5 s with speech: the default settings transcribe it (tiny.en, base for the language)
    ff("-t", "5", "-i", str(TALKING), "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(clip))
    base_env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "EMOTION_CACHE_DIR")}
    home = w / "home"
    home.mkdir(exist_ok=True)
    (w / "tmp").mkdir(exist_ok=True)
    args = [sys.executable, "-m", "emotion_pipeline", "analyze", str(clip), "--out", str(w / "o_home"), "--no-progress"]
    env = {**base_env, "HOME": str(home), "TMPDIR": str(w / "tmp"), "PYTHONPATH": str(repo)}
    if os.geteuid() == 0 and shutil.which("unshare"):
        cmd = ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {home} {home} && exec " + " ".join(f"'{a}'" for a in args)]
    else:
        home.chmod(0o555)
        cmd = args
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, env=env, timeout=600)
    told = [ln for ln in r.stderr.splitlines() if ln.startswith(("error", "warning", "Traceback"))]
    row("read-only HOME, default settings", said(f"exit {r.returncode}", told, _doc_summary(w / "o_home" / f"{clip.stem}.json")))
    (w / "cache_file").write_text("a file")
    r = subprocess.run(args[:6] + [str(w / "o_cachefile"), "--no-progress"], capture_output=True, text=True, cwd=repo,
                       env={**env, "HOME": os.environ.get("HOME", "/"), "EMOTION_CACHE_DIR": str(w / "cache_file")},
                       timeout=600)
    told = [ln for ln in r.stderr.splitlines() if ln.startswith(("error", "warning", "Traceback"))]
    row("cache path that is a file", said(f"exit {r.returncode}", told, _doc_summary(w / "o_cachefile" / f"{clip.stem}.json")))

    # weight files and a transcript that are not what they say
    from safetensors import safe_open
    from safetensors.torch import save_file

    shipped = repo / "models" / "weights" / "face_cnn.safetensors"
    with safe_open(str(shipped), framework="pt") as fh:
        meta, state = dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = state[key][:1].clone()
    save_file(state, str(w / "shapes.safetensors"), metadata=meta)
    (w / "header.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    for name, f in (("--set face_model= weights of a bad shape", "shapes"), ("--set face_model= a huge header", "header")):
        rc, told, _ = _cli(repo, ["analyze", clip, "--out", w / f"o_{f}", *fast, "--set",
                                  f"face_model={w / (f + '.safetensors')}"], timeout=300)
        row(name, said(rc, told))
    digits = w / "digits.json"
    digits.write_text('{"segments": [{"start_s": 0, "end_s": 1' + "0" * 400 + ', "text": "hi"}]}')
    rc, told, _ = _cli(repo, ["analyze", clip, "--transcript", digits, "--out", w / "o_digits", *fast], timeout=300)
    row("transcript end_s of 401 digits", said(rc, told))

    # a disk that fills: files past 60 kB cannot be written (RLIMIT_FSIZE, as a full disk: EFBIG)
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
    full = w / "o_full"
    r = subprocess.run([sys.executable, "-m", "emotion_pipeline", "analyze", str(clip), str(MEAD / "M030_front_sad_level3_001.mp4"),
                        "--out", str(full), *fast, "--formats", "json,csv,png,html"], capture_output=True, text=True,
                       cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, preexec_fn=limit, timeout=600)
    told = [ln for ln in r.stderr.splitlines() if ln.startswith(("error", "warning", "Traceback"))]
    left = sorted(p.name for p in full.iterdir()) if full.exists() else []
    row("a disk that fills (HTML does not fit)", said(f"exit {r.returncode}", [t[:60] + "..." + t[-40:] for t in told],
                                                    f"left: {left}"))


def table(rows: list[tuple[int, str, str, str]]) -> str:
    """The round-3 rows as one Markdown table, by item."""
    out = ["| # | case | before (issue 22) | now |", "|---|---|---|---|"]
    for item, name, before, now in sorted(rows, key=lambda r: r[0]):
        out.append(f"| {item} | {name} | {before} | {now.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose `python -m emotion_pipeline` is run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/robustness"), help="scratch folder")
    ap.add_argument("--only", choices=["round2", "round3"], help="one round's cases (default: both)")
    ap.add_argument("--table", type=Path, help="where the round-3 table goes (Markdown; default: WORK/round3.md)")
    a = ap.parse_args(argv)
    if a.only != "round2":
        print(f" # {'round 3 case':<42} | {'before (issue 22)':<60} | now")
        rows = round3(a.repo.resolve(), a.work / "round3")
        saved = a.table or a.work / "round3.md"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(table(rows))
        print(f"\n{table(rows)}\nsaved: {saved}")
        if a.only == "round3":
            return 0
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is needed to make the inputs")
    w = a.work
    shutil.rmtree(w, ignore_errors=True)
    p = make_inputs(w)
    repo = a.repo.resolve()
    rows: list[tuple[str, str]] = []

    def case(name: str, args: list[str], out: Path, read: Path | None = None, ref: dict | None = None, cwd=None):
        rc, lines, tb, counts = run(repo, args, out, cwd)
        files = sorted(str(f.relative_to(out))[:30] for f in out.rglob("*") if f.is_file()) if out.exists() else []
        stats = ""
        if read is not None and read.is_file():
            stats = timeline_stats(json.loads(read.read_text()), ref)
        msg = (lines[0][:90] + (f" (+{len(lines) - 1} lines)" if len(lines) > 1 else "")) if lines else ""
        rows.append((name, f"exit {rc}{' TRACEBACK' if tb else ''} | {msg} | files {files[:3]}{'...' if len(files) > 3 else ''} | {stats}"
                           + (f" | {counts}" if counts else "")))
        print(f"{name:<28} {rows[-1][1]}", flush=True)

    o = w / "out_orig"
    case("original clip", [str(p["original"]), *BASE], o, o / "clip.json")
    ref = json.loads((o / "clip.json").read_text()) if (o / "clip.json").exists() else None
    for key, label in (("offset10", "start offset 10 s (mp4)"), ("ts", "MPEG-TS"), ("corrupt20", "20% bytes overwritten"),
                       ("faststart_half", "faststart mp4 cut in half"), ("mjpeg_mkv", "MJPEG in .mkv"),
                       ("late_video", "camera starts 5 s late"), ("late_audio", "microphone starts 5 s late"),
                       ("mkv_half", ".mkv cut in half")):
        out = w / f"out_{key}"
        case(label, [str(p[key]), *BASE], out, out / f"{p[key].stem}.json", ref)
    out = w / "out_long"
    case("242-char file name", [str(p["long_name"]), *BASE], out)
    out = w / "out_dir"
    (out / "clip.json").mkdir(parents=True)
    case("output path is a folder", [str(p["original"]), *BASE], out)
    out = w / "out_ro"
    out.mkdir()
    out.chmod(0o555)
    case("read-only output folder", [str(p["original"]), *BASE], out)
    blocked = w / "blocked"
    blocked.write_text("a file where the output folder should be")
    case("output folder is a file", [str(p["original"]), *BASE], blocked)
    for key in ("tr_nan", "tr_inf", "tr_lang", "tr_bad"):
        out = w / f"out_{key}"
        case(f"transcript {key[3:]}", [str(p["original"]), *BASE, "--transcript", str(p[key])], out)
    for setting in ("frames_per_second=nan", "primary_face=bogus", "device=cuda", "device=banana",
                    "max_frame_side_px=0", "face_batch_size=0", "modality_weights=0,0,0", "smoothing_window_s=-1",
                    "frames_per_second=abc"):
        out = w / f"out_set_{setting.split('=')[0]}"
        case(f"--set {setting}", [str(MEAD / 'M030_front_angry_level3_001.mp4'), *BASE, "--set", setting], out)
    out = w / "out_same"
    case("a/clip.mp4 b/clip.mp4", [str(p["same_name_a"]), str(p["same_name_b"]), *BASE], out)
    case("  again (skip?)", [str(p["same_name_a"]), str(p["same_name_b"]), *BASE], out)
    shutil.copy(MEAD / "M030_front_sad_level3_001.mp4", p["same_name_b"])
    case("  b replaced, again", [str(p["same_name_a"]), str(p["same_name_b"]), *BASE], out)
    case("  again with --offline dropped", [str(p["same_name_a"]), str(p["same_name_b"]), "--no-progress",
                                            "--set", "whisper_model=none"], out)
    out = w / "out_bad1"
    case("one empty file", [str(p["empty"]), *BASE], out)
    out = w / "out_batch"
    case("batch: empty, text, ok", [str(p["empty"]), str(p["text"]), str(p["same_name_a"]), *BASE], out)
    r = subprocess.run(["make", "-s", "analyze", f"VIDEO={p['space']}", f"OUT={w / 'out_space'}",
                        "ARGS=--offline --no-progress --set whisper_model=none"], capture_output=True, text=True, cwd=repo)
    rows.append(("make VIDEO='a b.mp4'", f"exit {r.returncode} | files {[f.name for f in (w / 'out_space').glob('*')]}"))
    print(f"{'make VIDEO=a b.mp4':<28} {rows[-1][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

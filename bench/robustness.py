"""Bad and unusual inputs, run through the command line as a new user would: one table row each.

    python -m bench.robustness [--repo PATH] [--work DIR]

Makes every input from the shared clips with ffmpeg (ffmpeg must be installed), runs
``python -m emotion_pipeline analyze`` on it from ``--repo`` (default: this checkout, so an older
checkout can be compared side by side) and prints, per case: the exit code, how many lines went
to stderr that are not log lines, whether a traceback was printed, the output files, and, where
a timeline was written, how many seconds carry a face and a voice and how many voice rows agree
with the same clip's unshifted analysis. Nothing here is a test: ``tests/test_reliability.py``
asserts the behaviour; this prints the before/after table for the closing note and the README.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose `python -m emotion_pipeline` is run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/robustness"), help="scratch folder")
    a = ap.parse_args(argv)
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

"""Never a silent wrong answer: odd timestamps, damaged files, bad settings, batches and re-runs.

Inputs are made from the shared clips with ffmpeg at test time. Each case asserts the exit code,
a one-line message naming the file, no traceback and no partial file; where a timeline is written,
the right seconds and the recorded coverage.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emotion_pipeline import demux, preflight, writers
from tests.conftest import MEAD, TALKING, needs_data, needs_ffmpeg

pytestmark = [needs_data, needs_ffmpeg]
REPO = Path(__file__).resolve().parent.parent
FAST = ["--offline", "--no-progress", "--set", "whisper_model=none"]
# Same clip, other container time base: per-second voice scores may differ by the resampler's
# phase and AAC priming (at most a few milliseconds of audio); they must agree this closely.
SCORE_TOLERANCE = 0.05
LABEL_KEYS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emotion_pipeline", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def message_lines(stderr: str) -> list[str]:
    """What the user is told (log lines start with their level)."""
    return [ln for ln in stderr.splitlines() if not ln.startswith(("INFO ", "DEBUG "))]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    from bench.robustness import damaged_inputs   # the same inputs as the before/after table
    return {"original": TALKING, **damaged_inputs(TALKING, tmp_path_factory.mktemp("reliability"))}


@pytest.fixture(scope="module")
def docs(analyzer, media) -> dict[str, dict]:
    out = {}
    for key, path in media.items():
        doc = analyzer.analyze(path)
        writers.validate(doc)
        out[key] = doc
    return out


# ------------------------------------------------------------------ one time base
@pytest.mark.parametrize("key", ["offset10", "ts"])
def test_start_offset_and_mpegts_give_the_same_voice_and_face_rows(docs, key):
    ref, doc = docs["original"]["timeline"], docs[key]["timeline"]
    assert len(doc) == len(ref) == 20
    assert docs[key]["complete"] and docs[key]["video"]["origin_s"] > 1.0
    for a, b in zip(doc, ref):
        assert (a["audio"] is None) == (b["audio"] is None), a["start_s"]
        assert (a["face"] is None) == (b["face"] is None), a["start_s"]
        if a["audio"] is not None:
            diff = max(abs(a["audio"]["scores"][k] - b["audio"]["scores"][k]) for k in a["audio"]["scores"])
            assert diff < SCORE_TOLERANCE, (a["start_s"], diff)
    assert sum(a["audio"] is not None for a in doc) >= 18   # before the fix: 9 (offset) or shifted by 1.4 s (TS)


def test_audio_is_placed_by_timestamp():
    """Priming before the first video frame is dropped, so both files give the same samples."""
    a = np.concatenate([c.samples for c in demux.iter_audio(TALKING)])
    info = demux.probe(TALKING)
    assert info.origin_s == 0 and len(a) / 16000 == pytest.approx(info.duration_s, abs=0.05)


# ------------------------------------------------------------------ damaged and cut files
def test_damaged_middle_is_decoded_past_and_reported(docs):
    doc = docs["corrupt20"]
    tl = doc["timeline"]
    assert len(tl) == 20 and not doc["complete"] and doc["warnings"]
    video, audio = doc["coverage"]["video"], doc["coverage"]["audio"]
    assert 0.7 < video["coverage"] < 0.9 and video["decode_errors"] > 0
    assert 0.7 < audio["coverage"] < 0.9
    (lo, hi), = video["lost_s"]
    assert 7 < lo < 9.5 and 11 < hi < 13
    # decoding went on after the damage: the last seconds have faces and voice again
    assert all(t["face"] is not None for t in tl[13:])
    assert sum(t["audio"] is not None for t in tl[13:]) >= 6
    assert all("video" in t.get("lost", []) for t in tl[9:11])
    assert doc["modalities"]["face"]["coverage"] == video["coverage"]


def test_truncated_faststart_file_says_what_is_missing(docs):
    doc = docs["faststart_half"]
    assert not doc["complete"] and len(doc["timeline"]) == 20
    (lo, hi), = doc["coverage"]["video"]["lost_s"]
    assert 8 < lo < 11 and hi == pytest.approx(20.0, abs=0.1)
    assert any("video decoded for" in w for w in doc["warnings"])
    assert all(t["face"] is None and t.get("lost") for t in doc["timeline"][11:])


def test_mjpeg_in_mkv_is_a_video_not_a_still(docs):
    doc = docs["mjpeg_mkv"]
    assert doc["video"]["video_codec"] == "mjpeg" and doc["complete"]
    tl = doc["timeline"]
    assert len(tl) == 20
    assert sum(t["face"] is not None for t in tl) >= 19 and sum(t["audio"] is not None for t in tl) >= 18


def test_a_late_camera_keeps_the_voice_before_it(docs):
    doc, ref = docs["late_video"], docs["original"]["timeline"]
    tl = doc["timeline"]
    assert len(tl) == 25 and doc["complete"], doc["warnings"]
    assert all(t["face"] is None for t in tl[:5]) and all(t["face"] is not None for t in tl[6:24])
    # The audio is where it was, seconds 0-19. Matroska keeps the 1024 AAC priming samples that
    # the MP4's edit list hides, so it sits 64 ms later, and the voice CNN's scores move by up to
    # 0.36 for that shift (0.2 for 10 ms: measured; the model is shift-sensitive): compare where
    # speech is found and the labels, not the scores.
    assert [a["audio"] is None for a in tl[:20]] == [b["audio"] is None for b in ref]
    same = sum(a["audio"]["label"] == b["audio"]["label"] for a, b in zip(tl[:20], ref) if a["audio"])
    assert same >= 0.7 * sum(1 for b in ref if b["audio"])


def test_a_cut_matroska_file_is_partial(docs):
    doc = docs["mkv_half"]
    assert not doc["complete"] and len(doc["timeline"]) == 20
    assert doc["coverage"]["video"]["lost_s"][-1][1] == pytest.approx(20.0, abs=0.1)


def test_partial_result_exit_code_and_strict(media, tmp_path):
    r = cli("analyze", str(media["faststart_half"]), "--out", str(tmp_path / "a"), *FAST)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    lines = message_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"warning: {media['faststart_half']}: partial result")
    assert json.loads((tmp_path / "a" / "faststart_half.json").read_text())["complete"] is False
    r = cli("analyze", str(media["faststart_half"]), "--out", str(tmp_path / "b"), "--strict", *FAST)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = message_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {media['faststart_half']}: partial result")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*.json"))


# ------------------------------------------------------------------ settings and transcripts, before models load
@pytest.mark.parametrize("setting", [
    "frames_per_second=nan", "frames_per_second=1e400", "frames_per_second=abc", "primary_face=bogus",
    "device=banana", "max_frame_side_px=0", "face_batch_size=0", "modality_weights=0,0,0",
    "smoothing_window_s=-1", "min_speech_fraction=2", "nope=1",
])
def test_bad_setting_is_one_line_naming_key_value_and_origin(setting, tmp_path):
    r = cli("analyze", str(MEAD / "M030_front_angry_level3_001.mp4"), "--out", str(tmp_path), *FAST, "--set", setting)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = message_lines(r.stderr)
    key = setting.split("=")[0]
    assert len(lines) == 1 and lines[0].startswith(f"error: --set {setting}: ") and key in lines[0]
    assert not any(tmp_path.iterdir())


def test_bad_setting_in_a_file_blames_the_file(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("frames_per_second: 0\n")
    r = cli("analyze", str(MEAD / "M030_front_angry_level3_001.mp4"), "--out", str(tmp_path / "o"),
            "--config", str(cfg), *FAST)
    lines = message_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {cfg}: frames_per_second")


def test_cuda_on_a_machine_without_one(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = cli("analyze", str(MEAD / "M030_front_angry_level3_001.mp4"), "--out", str(tmp_path), *FAST, "--set", "device=cuda")
    lines = message_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "no CUDA device" in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("name, body, problem", [
    ("nan", '{"segments": [{"start_s": NaN, "end_s": 1, "text": "hi"}]}', "bad times"),
    ("huge", '{"segments": [{"start_s": 0, "end_s": 1e400, "text": "hi"}]}', "bad times"),
    ("language", '{"language": 5, "segments": [{"start_s": 0, "end_s": 1, "text": "hi"}]}', "language"),
    ("shape", '{"segments": 7}', "segments"),
    ("srt", "1\n00:00:01,000 --> 00:00:xx,000\nhello\n", "bad cue timing"),
])
def test_bad_transcript_fails_before_analysis(name, body, problem, tmp_path):
    tr = tmp_path / (f"{name}.srt" if name == "srt" else f"{name}.json")
    tr.write_text(body)
    r = cli("analyze", str(TALKING), "--out", str(tmp_path / "o"), *FAST, "--transcript", str(tr))
    lines = message_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith(f"error: {tr}: ") and problem in lines[0]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ outputs, batches, re-runs
def test_batch_outputs_never_collide_and_bad_locations_fail_alone(tmp_path):
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    for src, dst in ((MEAD / "M030_front_angry_level3_001.mp4", a), (MEAD / "M030_front_happy_level3_001.mp4", b)):
        dst.parent.mkdir()
        shutil.copy(src, dst)
    long_name = tmp_path / ("x" * 238 + ".mp4")
    shutil.copy(MEAD / "M030_front_sad_level3_001.mp4", long_name)
    blocked = tmp_path / "c" / "blocked.mp4"
    blocked.parent.mkdir()
    shutil.copy(MEAD / "M030_front_sad_level3_001.mp4", blocked)
    out = tmp_path / "out"
    (out / "blocked.json").mkdir(parents=True)          # a folder where blocked's result should go
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    r = cli("analyze", str(a), str(b), str(long_name), str(blocked), str(empty), "--out", str(out), *FAST)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [ln for ln in message_lines(r.stderr) if ln.startswith("error:")]
    assert len(errors) == 2 and len(message_lines(r.stderr)) == 2
    assert any(ln.startswith(f"error: {blocked}: output path") and "is a folder" in ln for ln in errors)
    assert any(ln.startswith(f"error: {empty}: empty file") for ln in errors)
    da, db = (json.loads((out / d / "clip.json").read_text()) for d in ("a", "b"))
    assert da["input"]["path"] == str(a) and db["input"]["path"] == str(b)
    assert da["summary"] != db["summary"] or da["timeline"] != db["timeline"]
    assert (out / f"{long_name.stem}.json").is_file()
    assert not list(out.rglob("*.part"))

    # a re-run skips both before loading any model, whatever the progress/offline switches
    r = cli("analyze", str(a), str(b), "--out", str(out), "--no-progress", "--set", "whisper_model=none")
    assert r.returncode == 0 and r.stderr.count("up to date (same file") == 2 and "analysed 0" in r.stderr
    # b replaced under the same name: only b is analysed again
    before = (out / "a" / "clip.json").stat().st_mtime_ns
    shutil.copy(MEAD / "M030_front_sad_level3_001.mp4", b)
    r = cli("analyze", str(a), str(b), "--out", str(out), *FAST)
    assert r.returncode == 0 and r.stderr.count("up to date (same file") == 1 and "analysed 1" in r.stderr
    assert (out / "a" / "clip.json").stat().st_mtime_ns == before
    assert json.loads((out / "b" / "clip.json").read_text())["input"]["size_bytes"] == b.stat().st_size


def test_an_earlier_runs_result_for_another_video_is_not_overwritten(tmp_path):
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    for src, dst in ((MEAD / "M030_front_angry_level3_001.mp4", a), (MEAD / "M030_front_happy_level3_001.mp4", b)):
        dst.parent.mkdir()
        shutil.copy(src, dst)
    out = tmp_path / "out"
    assert cli("analyze", str(a), "--out", str(out), *FAST).returncode == 0
    r = cli("analyze", str(b), "--out", str(out), *FAST)         # a separate run: same output name
    lines = message_lines(r.stderr)
    assert r.returncode == 1 and len(lines) == 1 and "holds the result of another video" in lines[0]
    assert json.loads((out / "clip.json").read_text())["input"]["path"] == str(a)
    assert cli("analyze", str(b), "--out", str(out), "--force", *FAST).returncode == 0
    assert json.loads((out / "clip.json").read_text())["input"]["path"] == str(b)


def test_one_bad_file_is_one_line(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    r = cli("analyze", str(empty), "--out", str(tmp_path / "o"), *FAST)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [f"error: {empty}: empty file"]


def test_output_folder_that_is_a_file(tmp_path):
    blocked = tmp_path / "out"
    blocked.write_text("not a folder")
    r = cli("analyze", str(MEAD / "M030_front_angry_level3_001.mp4"), "--out", str(blocked), *FAST)
    lines = message_lines(r.stderr)
    assert r.returncode == 1 and len(lines) == 1 and "is a file, not a folder" in lines[0]


def test_make_analyze_takes_a_path_with_a_space(tmp_path):
    if shutil.which("make") is None or not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("needs make and the project's .venv")
    video = tmp_path / "a b.mp4"
    shutil.copy(MEAD / "M030_front_sad_level3_001.mp4", video)
    r = subprocess.run(["make", "-s", "analyze", f"VIDEO={video}", f"OUT={tmp_path / 'o'}",
                        "ARGS=--offline --no-progress --set whisper_model=none"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "a b.json").is_file()


def test_plan_keeps_folders_and_extensions_apart():
    jobs = preflight.plan([(Path("v/x/c.mp4"), Path("v")), (Path("v/c.mov"), Path("v")), (Path("v/c.mp4"), Path("v")),
                           (Path("a/clip.mp4"), Path("a")), (Path("b/clip.mp4"), Path("b"))], "out")
    outs = [str(j.out) for j in jobs]
    assert outs == ["out/x/c.json", "out/c.mov.json", "out/c.mp4.json", "out/a/clip.json", "out/b/clip.json"]


def test_atomic_write_temp_name_fits_the_file_system(tmp_path):
    from emotion_pipeline.fileio import atomic_write_text
    target = tmp_path / ("y" * 250 + ".json")
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_evaluate_audio_names_why_a_file_was_skipped(tmp_path):
    from emotion_pipeline.data import data_path
    good = sorted(data_path("speech", "ravdess", "Actor_17").glob("*.flac"))[:2]
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all\n" * 20)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},neutral\n" for p in good) + f"{bad},happy\n")
    r = cli("evaluate", "audio", "--data", str(manifest))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "skipped" in ln)
    assert str(bad) in line and "skipped ()" not in line and "not a readable audio file" in line
    assert json.loads(r.stdout)["skipped"] == 1

"""Round 3 (issue 22), second part: media that are not what they seem, live endings, full disks.

Inputs are made at test time from the shared clips with ffmpeg (``bench.robustness`` makes the same
ones for its before/after table). Each case asserts the exit code, what the user is told (one line,
naming the file, no traceback), that nothing is left half-written, and, where a result is written,
its seconds, coverage and statuses.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import robustness as media
from emotion_pipeline import demux, live
from emotion_pipeline.errors import InputError
from tests.conftest import MEAD, TALKING, needs_data, needs_ffmpeg

pytestmark = [needs_data, needs_ffmpeg]
REPO = Path(__file__).resolve().parent.parent
FAST = ["--offline", "--no-progress", "--set", "whisper_model=none"]


def environment(env: dict | None = None) -> dict:
    """os.environ with ``env`` over it (a value of None removes that variable)."""
    merged = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


def cli(*args, timeout: float = 300, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emotion_pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=environment(env), timeout=timeout, **kw)


# native libraries' own log lines (OpenCV, MediaPipe's glog and TensorFlow Lite, onnxruntime)
NATIVE_LOGS = ("[ WARN:", "W0000", "I0000", "WARNING: Logging before InitGoogle", "INFO: Created TensorFlow Lite")


def told(stderr: str) -> list[str]:
    """What the user is told: stderr lines that are neither our log lines nor native libraries' logs."""
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if not ln.startswith(("INFO ", "DEBUG ", "WARNING ", *NATIVE_LOGS))
            and "onnxruntime" not in ln]


def faces(doc: dict) -> int:
    return sum(t["face"] is not None for t in doc["timeline"])


def voices(doc: dict) -> int:
    return sum(t["audio"] is not None for t in doc["timeline"])


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    w = tmp_path_factory.mktemp("media")
    return {"joined": media.joined_ts(w), "tracks": media.two_audio_tracks(w), "mp3": media.cover_art(w, "mp3"),
            "m4a": media.cover_art(w, "m4a"), "h264": media.raw_h264(w), "upside": media.upside_down(w),
            "held": media.held_frame(w)}


@pytest.fixture(scope="module")
def docs(made, tmp_path_factory) -> dict[str, dict]:
    """One ``analyze`` of every input (the models load once): exit 0, nothing said but the upside-down hint."""
    out = tmp_path_factory.mktemp("out")
    r = cli("analyze", *made.values(), "--out", out, *FAST, timeout=600)
    assert r.returncode == 0, r.stderr
    assert told(r.stderr) == [], r.stderr
    assert not list(out.rglob("*.part"))
    names = {"mp3": "song.mp3.json", "m4a": "song.m4a.json"}
    return {k: json.loads((out / names.get(k, p.stem + ".json")).read_text()) for k, p in made.items()} | {
        "_stderr": r.stderr}


# ------------------------------------------------------------------ 5. recordings joined with cat
def test_recordings_joined_into_one_mpegts_are_analysed_whole(docs):
    doc = docs["joined"]
    assert doc["complete"] and doc["warnings"] == []
    assert len(doc["timeline"]) == 6 and doc["video"]["duration_s"] == pytest.approx(6.0, abs=0.15)
    (restart,) = doc["video"]["timestamp_restarts_s"]
    assert restart == pytest.approx(3.0, abs=0.1)
    for kind in ("video", "audio"):
        cov = doc["coverage"][kind]
        assert cov["coverage"] == 1.0 and cov["expected_s"] == pytest.approx(6.0, abs=0.15), cov
    assert faces(doc) >= 5 and voices(doc) >= 5                 # before: 3 s of 6, complete: true
    assert doc["timeline"][5]["face"] is not None


def test_a_restart_is_joined_where_the_stream_was():
    """Streams of one restart share its shift (the joined recording keeps its own sync) and stay increasing."""
    class Stream:
        def __init__(self, index):
            self.index = index

    class Packet:
        def __init__(self, stream, t, dur):
            self.stream, self.time_base = stream, __import__("fractions").Fraction(1, 1000)
            self.dts = self.pts = int(t * 1000)
            self.duration = int(dur * 1000)

    class Container:
        class format:
            flags = demux.TS_DISCONT

    r = demux.Restarts(Container())
    v, a = Stream(0), Stream(1)
    times = []
    for stream, t, dur in [(v, 1.40, 0.04), (a, 1.38, 0.02), (v, 4.40, 0.04), (a, 4.42, 0.02),
                           (v, 1.40, 0.04), (a, 1.38, 0.02), (a, 1.40, 0.02), (v, 1.44, 0.04)]:
        p = Packet(stream, t, dur)
        r.fix(p)
        times.append((stream.index, p.dts / 1000))
    assert len(r.at_s) == 1 and r.at_s[0] == pytest.approx(4.44)
    assert times[4] == (0, pytest.approx(4.44)) and times[5][1] >= 4.44 - 1e-9 and times[6][1] > times[5][1]


# ------------------------------------------------------------------ 7. which audio track, subtitles
def test_the_default_english_audio_track_is_used_and_recorded(docs):
    doc = docs["tracks"]
    tracks = {t["index"]: t for t in doc["video"]["tracks"]}
    assert [t["kind"] for t in doc["video"]["tracks"]] == ["video", "audio", "audio", "subtitle"]
    assert tracks[2]["used"] and tracks[2]["language"] == "eng" and tracks[2]["default"]
    assert not tracks[1]["used"] and tracks[1]["language"] == "deu"
    assert voices(doc) >= 3 and doc["complete"]                # the first track is silence: before, no voice


def test_a_mov_text_track_stands_in_for_the_transcript(docs):
    doc = docs["tracks"]
    assert doc["transcript"]["source"].endswith("#3 (mov_text)") and doc["transcript"]["language"] == "en"
    assert [s["text"] for s in doc["transcript"]["segments"]] == ["I love this, it is wonderful", "thank you all"]
    assert doc["modalities"]["text"]["status"] == "ok" and sum(t["text"] is not None for t in doc["timeline"]) >= 3
    assert next(t for t in doc["video"]["tracks"] if t["kind"] == "subtitle")["used"]


def test_stream_choice_prefers_default_then_english():
    class S:
        def __init__(self, index, default, language):
            self.index, self.metadata = index, {"language": language}
            self.disposition = demux.av.stream.Disposition.default if default else demux.av.stream.Disposition(0)

    class Streams:
        def __init__(self, audio):
            self.audio = audio

    class C:
        def __init__(self, *audio):
            self.streams = Streams(list(audio))

    assert demux.audio_stream(C(S(0, False, "deu"), S(1, True, "eng"))).index == 1
    assert demux.audio_stream(C(S(0, False, "deu"), S(1, False, "eng"))).index == 1
    assert demux.audio_stream(C(S(0, True, "deu"), S(1, False, "eng"))).index == 0
    assert demux.audio_stream(C(S(0, False, "und"), S(1, False, None))).index == 0
    assert demux.audio_stream(C()) is None


# ------------------------------------------------------------------ 8. cover art
@pytest.mark.parametrize("key", ["mp3", "m4a"])
def test_cover_art_is_not_a_video(docs, key):
    doc = docs[key]
    assert doc["complete"] and doc["warnings"] == [] and "video" not in doc["coverage"]
    assert not doc["video"]["has_video"] and faces(doc) == 0 and voices(doc) >= 2
    assert doc["modalities"]["face"] == {"status": "missing", "reason": "no video stream", "coverage": None}
    assert [t["kind"] for t in doc["video"]["tracks"]] == ["audio", "cover"]


# ------------------------------------------------------------------ 9. a frame held for 10 s
def test_a_held_frame_is_not_lost_video(docs):
    doc = docs["held"]
    assert doc["complete"] and doc["warnings"] == [] and len(doc["timeline"]) == 14
    video = doc["coverage"]["video"]
    assert video["coverage"] == 1.0 and video["lost_s"] == [] and video["held_s"] == [[2.0, 12.0]]
    assert faces(doc) == 14          # the held picture is what is on screen for those 10 s
    assert not any(t.get("lost") for t in doc["timeline"])


@pytest.mark.slow
def test_the_annotated_mp4_of_a_held_frame_keeps_its_sound_in_step(made, tmp_path):
    import av

    r = cli("analyze", made["held"], "--out", tmp_path, "--formats", "json,mp4", *FAST)
    assert r.returncode == 0 and told(r.stderr) == [], r.stderr
    with av.open(str(tmp_path / "held.mp4")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        v_end = float((v.start_time + v.duration) * v.time_base)
        a_end = float((a.start_time + a.duration) * a.time_base)
        assert v.frames == 120                                     # every source frame, none invented
    assert v_end == pytest.approx(14.0, abs=0.2) and a_end == pytest.approx(14.0, abs=0.1)   # before: 18.9 s


def test_a_damaged_middle_is_still_lost_not_held(tmp_path):
    """The held-frame rule needs the container to have had no packet either: packets that fail to
    decode are lost (the damaged clip of tests/test_reliability.py, without the models)."""
    import random

    data = bytearray(TALKING.read_bytes())   # 20% of the bytes overwritten, as bench.robustness.damaged_inputs
    n, rnd = len(data), random.Random(0)
    data[int(n * 0.4):int(n * 0.6)] = bytes(rnd.randrange(256) for _ in range(int(n * 0.6) - int(n * 0.4)))
    bad = tmp_path / "corrupt20.mp4"
    bad.write_bytes(bytes(data))
    cov = demux.Coverage("video", demux.VIDEO_GAP_S)
    list(demux.iter_frames(bad, sample_fps=4, coverage=cov))
    result = cov.result(demux.probe(bad).duration_s)
    (lo, hi), = result.lost_s
    assert 7 < lo < 9.5 and 11 < hi < 13 and result.held_s == () and result.decode_errors > 0


# ------------------------------------------------------------------ 15. a raw H.264 stream
def test_a_raw_h264_stream_is_analysed(docs):
    doc = docs["h264"]
    assert doc["complete"] and len(doc["timeline"]) == 4 and faces(doc) == 4       # before: PermissionError (a seek)
    assert doc["video"]["duration_s"] == pytest.approx(4.0, abs=0.1)


# ------------------------------------------------------------------ 16. upside down without rotation metadata
def test_an_upside_down_video_gets_a_hint(docs):
    doc = docs["upside"]
    assert doc["complete"] and "upside down" in doc["modalities"]["face"]["reason"]
    hints = [ln for ln in docs["_stderr"].splitlines() if "upside down" in ln]
    assert len(hints) == 1 and "upside_down.mp4" in hints[0]
    for key in ("joined", "tracks", "held", "h264"):                             # the right way up: no hint
        assert docs[key]["modalities"]["face"]["reason"] is None


# ------------------------------------------------------------------ 15. weight files that are not what they say
@pytest.mark.parametrize("content, problem", [
    (b"\xff" * 8 + b"{}", "not a safetensors file"), (b"", "not a safetensors file")], ids=["huge-header", "empty"])
def test_a_bad_weight_file_named_in_the_settings_is_one_line(tmp_path, content, problem):
    bad = tmp_path / "face.safetensors"
    bad.write_bytes(content)
    r = cli("analyze", MEAD / "M030_front_happy_level3_001.mp4", "--out", tmp_path / "o", *FAST,
            "--set", f"face_model={bad}", timeout=120)
    lines = told(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and str(bad) in lines[0] and problem in lines[0], r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_weights_of_the_wrong_shape_in_the_settings_are_one_line(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from emotion_pipeline.models import registry

    with safe_open(str(registry.shipped_path("face-cnn")), framework="pt") as fh:
        meta = dict(fh.metadata())
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = state[key][:1].clone()
    bad = tmp_path / "face.safetensors"
    save_file(state, str(bad), metadata=meta)
    r = cli("analyze", MEAD / "M030_front_happy_level3_001.mp4", "--out", tmp_path / "o", *FAST,
            "--set", f"face_model={bad}", timeout=120)
    lines = told(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and str(bad) in lines[0] and "do not fit" in lines[0], r.stderr


# ------------------------------------------------------------------ 16. a disk that fills
def _file_size_limit(limit_bytes: int):
    def apply() -> None:   # as a full disk does: writes past the limit fail (EFBIG), the process lives on
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def test_a_disk_that_fills_leaves_no_output_of_the_failed_video(tmp_path):
    videos = [MEAD / "M030_front_happy_level3_001.mp4", MEAD / "M030_front_sad_level3_001.mp4"]
    out = tmp_path / "o"
    # the JSON (16 kB), CSV (4 kB) and PNG (33 kB) fit under 60 kB, the HTML with its embedded video (100 kB) not
    r = cli("analyze", *videos, "--out", out, *FAST, "--formats", "json,csv,png,html",
            preexec_fn=_file_size_limit(60_000))
    lines = told(r.stderr)
    assert r.returncode == 1 and len(lines) == 2, r.stderr
    for line, video in zip(lines, videos):
        assert line.startswith(f"error: {video}: {out / (video.stem + '.html')}: cannot write it (File too large)")
    assert sorted(p.name for p in out.iterdir()) == ["batch_summary.csv"]    # no JSON, CSV or PNG left behind
    rows = (out / "batch_summary.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(",failed," in row and "cannot write it" in row for row in rows)


# ------------------------------------------------------------------ 13, 16. live: SIGTERM, --max-seconds, a stalled FIFO
def test_live_max_seconds_says_it_reached_the_limit(tmp_path):
    r = cli("live", "--source", TALKING, "--max-seconds", "2", "--out", tmp_path, "--lines", tmp_path / "l.jsonl",
            *FAST[:1], "--set", "whisper_model=none", timeout=180)
    assert r.returncode == 0 and told(r.stderr) == [], r.stderr
    doc = json.loads((tmp_path / "Obama_clip1.live.json").read_text())
    assert doc["live"]["stopped"] == "reached --max-seconds 2" and doc["live"]["seconds"] == 2   # before: end of stream
    assert doc["complete"] and len(doc["timeline"]) == 2


def test_sigterm_during_live_writes_the_timeline(tmp_path):
    lines = tmp_path / "l.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "emotion_pipeline", "live", "--source", str(TALKING), "--realtime",
                          "--out", str(tmp_path), "--lines", str(lines), "--offline", "--set", "whisper_model=none"],
                         stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    t0 = time.time()
    while time.time() - t0 < 120 and (not lines.exists() or lines.read_text().count("\n") < 2) and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    said = told(err)
    assert p.returncode == 143 and len(said) == 1 and "terminated" in said[0], err
    doc = json.loads((tmp_path / "Obama_clip1.live.json").read_text())           # before: no timeline
    assert doc["live"]["stopped"] == "terminated" and doc["live"]["seconds"] >= 2 and not doc["complete"]
    assert not list(tmp_path.glob("*.part"))


def _fifo_writer(fifo: Path, data: bytes, hold_s: float) -> threading.Thread:
    def write() -> None:
        with open(fifo, "wb") as fh:   # blocks until the reader opens it
            fh.write(data)
            fh.flush()
            time.sleep(hold_s)         # stops sending, keeps the pipe open
    th = threading.Thread(target=write, daemon=True)
    th.start()
    return th


def test_a_live_fifo_that_stops_sending_ends_with_one_line(analyzer, tmp_path, monkeypatch):
    import io

    monkeypatch.setattr(live, "STALL_S", 4.0)   # (15 s in use; 4 s keeps a loaded machine from looking stalled)
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    ts = tmp_path / "clip.ts"
    media.ff("-t", "8", "-i", str(TALKING), "-c", "copy", str(ts))
    writer = _fifo_writer(fifo, ts.read_bytes(), hold_s=30)
    t0 = time.monotonic()
    doc = live.run(analyzer, str(fifo), live.LiveOptions(), io.StringIO(), tmp_path / "cam.live.json")
    assert time.monotonic() - t0 < 25                                               # before: forever
    assert doc["live"]["stopped"] == "no data from the source for 4 s" and doc["live"]["seconds"] >= 7
    assert json.loads((tmp_path / "cam.live.json").read_text())["live"]["stopped"] == doc["live"]["stopped"]
    assert writer.is_alive()


def test_a_live_fifo_that_never_sends_enough_to_open_is_one_line(analyzer, tmp_path, monkeypatch):
    import io

    monkeypatch.setattr(live, "STALL_S", 2.0)
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    _fifo_writer(fifo, b"\x47" + b"\x00" * 187, hold_s=30)     # one MPEG-TS packet, then nothing
    with pytest.raises(InputError, match="no data from the source for 2 s while opening it"):
        live.run(analyzer, str(fifo), live.LiveOptions(), io.StringIO(), tmp_path / "cam.live.json")
    assert not (tmp_path / "cam.live.json").exists()


# ------------------------------------------------------------------ 14. a read-only HOME or cache
def _read_only_run(folder: Path, args: list, env: dict) -> subprocess.CompletedProcess:
    """``cli(*args)`` with ``folder`` read-only: its mode where that binds (not root), else a
    read-only bind mount in a mount namespace of its own (root, ``unshare``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return cli(*args, env=env)
    if shutil.which("unshare") is None:
        pytest.skip("root without unshare: no way to make a folder read-only")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -m not permitted here")
    inner = " ".join(["mount", "--bind", "-o", "ro", str(folder), str(folder), "&&", "exec", sys.executable, "-m",
                      "emotion_pipeline", *(f"'{a}'" for a in map(str, args))])
    return subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True, cwd=REPO,
                          env=environment(env), timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["read-only HOME", "cache path is a file"])
def test_a_default_run_with_an_unusable_cache_works(tmp_path, where):
    """The default settings (Whisper tiny.en from its wheel, base for the language joined once in the
    temporary folder instead of the cache): the words are there, nothing fails."""
    video, out = TALKING, tmp_path / "out"
    env = {"TMPDIR": str(tmp_path / "tmp"), "XDG_CACHE_HOME": None, "EMOTION_CACHE_DIR": None}
    (tmp_path / "tmp").mkdir()
    args = ["analyze", video, "--out", out, "--no-progress"]
    if where == "read-only HOME":
        r = _read_only_run(tmp_path / "home", args, {**env, "HOME": str(tmp_path / "home")})
    else:
        (tmp_path / "cache").write_text("a file where the cache folder should be")
        r = cli(*args, env={**env, "EMOTION_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0 and told(r.stderr) == [], r.stderr
    doc = json.loads((out / "Obama_clip1.json").read_text())
    assert doc["complete"] and doc["modalities"]["text"]["status"] == "ok", doc["modalities"]

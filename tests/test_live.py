"""Live mode: a shared talking clip played as a live source at its real speed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emotion_pipeline import writers
from tests.conftest import TALKING, ffmpeg, needs_data, needs_ffmpeg

pytestmark = [needs_data, needs_ffmpeg]
REPO = Path(__file__).resolve().parent.parent
BOUND_S = 2.0


def live(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emotion_pipeline", "live", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("live") / "talk.mp4"
    ffmpeg("-i", str(TALKING), "-c", "copy", str(path))
    return path


@pytest.fixture(scope="module")
def realtime(clip, tmp_path_factory) -> tuple[list[dict], dict]:
    folder = tmp_path_factory.mktemp("live_out")
    lines = folder / "lines.jsonl"
    r = live("--source", str(clip), "--realtime", "--offline", "--lines", str(lines), "--out", str(folder),
             "--max-delay-s", str(BOUND_S))   # with the default transcription: words come as amendments
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(ln) for ln in lines.read_text().splitlines()]
    return rows, json.loads((folder / "talk.live.json").read_text())


def test_every_second_arrives_in_order_with_its_timing(realtime):
    """Played at its own speed: every second once, in order, with its delay and compute. The
    bound itself is a policy on measured delays, tested on an injected clock below (a shared 2-core
    machine's wall clock says little about the code)."""
    rows, doc = realtime
    writers.validate(doc)
    assert doc["config"]["smoothing"] == "causal"
    seconds = [r for r in rows if r["type"] == "second"]
    assert [r["start_s"] for r in seconds] == [float(i) for i in range(20)]
    assert all(r["emitted_at"] > 0 and r["fused"]["scores"] for r in seconds)
    assert all(0 <= r["compute_s"] <= r["latency_s"] + 1.5 for r in seconds)   # the line waits for its context
    assert doc["live"]["latency_s"]["median"] <= doc["live"]["latency_s"]["max"]
    assert doc["live"]["shed_seconds"] == sum(1 for r in seconds if r.get("shed"))


class _Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_falling_behind_sheds_frames_then_the_voice_on_an_injected_clock(analyzer, clip):
    from emotion_pipeline import demux, live as live_mod
    clock, lines = _Clock(), []
    session = live_mod.LiveSession(analyzer, live_mod.LiveOptions(max_delay_s=BOUND_S), lines.append, clock=clock)
    frames = [f for f in demux.iter_frames(clip, sample_fps=analyzer.cfg.frames_per_second) if f.t_s < 8]
    chunks = [c for c in demux.iter_audio(clip, chunk_s=0.25) if c.start_s < 8]
    for t, kind, item in sorted([(f.t_s, 0, f) for f in frames] + [(c.end_s, 1, c) for c in chunks],
                                key=lambda x: x[:2]):   # in stream order, each arriving as the stream plays it
        if kind == 0:
            session.on_video(item, wall=t)
        else:
            session.on_audio(item.samples, item.end_s, wall=t)
    ends = [session.reached[k] for k in (1, 2, 3)]                    # when the stream passed 1, 2, 3 s
    assert ends == [1.0, 2.0, 3.0]
    # second 0 needs audio to 2 s (its voice window); taken 0.3 s after that arrived: in time
    clock.t = 2.3
    assert session.ready(0)
    session.process(0)
    # second 1 taken 0.9 s after its data arrived (over half the budget of 1 s): one frame
    clock.t = 3.9
    session.process(1)
    # second 2 taken 4 s late: no voice window either
    clock.t = 8.0
    session.process(2)
    assert [ln.get("shed", []) for ln in lines] == [[], ["frames"], ["frames", "audio"]]
    assert [ln["latency_s"] for ln in lines] == [1.3, 1.9, 5.0]        # after the end of each second
    assert lines[0]["audio"] is not None and lines[2]["audio"] is None and lines[2]["face"] is not None
    assert lines[1]["face"]["faces"][0]["frames"] == 1
    assert all(ln["compute_s"] == 0.0 for ln in lines)                  # the clock did not move while computing


def test_words_arrive_as_amendments_of_past_seconds(realtime):
    rows, doc = realtime
    amends = [r for r in rows if r["type"] == "amend"]
    assert len(amends) >= 8 and all(r["text"]["words"] and r["text_delay_s"] > 0 for r in amends)
    # (that words come while the stream still runs is tested on a scripted transcriber, in
    # tests/test_seconds.py: here it depends on how much CPU Whisper gets on a shared machine)
    assert doc["transcript"]["language"] == "en" and doc["modalities"]["text"]["status"] == "ok"
    assert sum(1 for t in doc["timeline"] if t["text"]) >= 15


def test_a_file_read_as_fast_as_it_decodes(clip, tmp_path, analyzer):
    r = live("--source", str(clip), "--offline", "--set", "whisper_model=none", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [r["start_s"] for r in rows if r["type"] == "second"] == [float(i) for i in range(20)]
    doc = json.loads((tmp_path / "talk.live.json").read_text())
    assert len(doc["timeline"]) == 20 and doc["live"]["stopped"] == "end of stream"
    assert np.isclose(sum(doc["timeline"][3]["fused"]["scores"].values()), 1.0, atol=1e-3)
    # a file read at its own pace sheds nothing, so its seconds are the file analysis's (no margin)
    offline = analyzer.analyze(clip)
    for modality in ("face", "audio"):
        assert [(r[modality] or {}).get("label") for r in rows] == \
            [(t[modality] or {}).get("label") for t in offline["timeline"]], modality
    assert doc["modalities"]["audio"] == offline["modalities"]["audio"]


def test_a_source_that_cannot_be_opened(tmp_path):
    r = live("--source", str(tmp_path / "nothing.mp4"), "--offline", "--out", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nothing.mp4'}: no such file")


def test_show_opens_a_window_where_a_display_exists(clip, tmp_path):
    import shutil
    import time as _time
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed (.ci/run installs it)")
    display = f":{90 + os.getpid() % 100}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
        deadline = _time.monotonic() + 30
        while not socket.exists() and xvfb.poll() is None and _time.monotonic() < deadline:
            _time.sleep(0.05)                       # until the server listens, not a guessed second
        assert socket.exists(), "Xvfb did not start"
        r = subprocess.run([sys.executable, "-m", "emotion_pipeline", "live", "--source", str(clip), "--show", "--offline",
                            "--set", "whisper_model=none", "--max-seconds", "5", "--out", str(tmp_path)],
                           capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO), "DISPLAY": display})
    finally:
        xvfb.terminate()
    assert r.returncode == 0, r.stderr[-2000:]
    shown = [ln for ln in r.stderr.splitlines() if "window showed" in ln]
    assert shown and int(shown[0].split("window showed ")[1].split()[0]) >= 15     # 4 frames per second x 5 s
    assert len([ln for ln in r.stdout.splitlines() if '"second"' in ln]) == 5


def test_show_without_a_display_runs_headless(clip, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-m", "emotion_pipeline", "live", "--source", str(clip), "--show", "--offline",
                        "--set", "whisper_model=none", "--max-seconds", "3", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0 and "running headless" in r.stderr and "Traceback" not in r.stderr
    assert len([ln for ln in r.stdout.splitlines() if '"second"' in ln]) == 3


def test_an_http_stream_and_a_source_that_fails(clip, tmp_path):
    """An MPEG-TS stream over HTTP is analysed; an MP4 from a server without range requests
    (FFmpeg cannot seek to its index) ends with one error line, exit 1, and what was seen."""
    import functools
    import http.server
    import threading
    ffmpeg("-i", str(clip), "-t", "4", "-c", "copy", "-f", "mpegts", str(tmp_path / "talk.ts"))
    ffmpeg("-i", str(clip), "-t", "4", "-c", "copy", str(tmp_path / "talk.mp4"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        r = live("--source", f"{base}/talk.ts", "--offline", "--set", "whisper_model=none", "--out", str(tmp_path / "a"))
        assert r.returncode == 0, r.stderr[-2000:]
        assert [json.loads(ln)["start_s"] for ln in r.stdout.splitlines()] == [0.0, 1.0, 2.0, 3.0]
        r = live("--source", f"{base}/talk.mp4", "--offline", "--set", "whisper_model=none", "--out", str(tmp_path / "b"))
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert r.returncode == 1 and len(errors) == 1 and "the source stopped" in errors[0] and "Traceback" not in r.stderr
        assert json.loads((tmp_path / "b" / "live.live.json").read_text())["live"]["seconds"] == 0
    finally:
        server.shutdown()

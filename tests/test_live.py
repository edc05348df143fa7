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
# Live and offline see the same frames and the same centred voice windows, but the voice
# activity detector runs over a few seconds instead of 30 s chunks, and shed seconds use one
# frame: labels must agree on most seconds, voice scores within this margin where both exist.
SCORE_MARGIN = 0.15


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


def test_every_second_arrives_in_order_within_the_bound(realtime):
    rows, doc = realtime
    seconds = [r for r in rows if r["type"] == "second"]
    assert [r["start_s"] for r in seconds] == [float(i) for i in range(20)]
    late = [(r["start_s"], r["latency_s"]) for r in seconds if r["latency_s"] > BOUND_S]
    assert not late, late
    assert all(r["emitted_at"] > 0 and r["fused"]["scores"] for r in seconds)
    assert doc["live"]["latency_s"]["max"] <= BOUND_S


def test_live_agrees_with_the_offline_analysis(realtime, analyzer, clip):
    rows, doc = realtime
    writers.validate(doc)
    assert doc["config"]["smoothing"] == "causal"
    offline = analyzer.analyze(clip)["timeline"]
    seconds = [r for r in rows if r["type"] == "second"]
    face_agree = sum((a["face"] or {}).get("label") == (b["face"] or {}).get("label") for a, b in zip(seconds, offline))
    assert face_agree >= 16
    both = [(a, b) for a, b in zip(seconds, offline) if a["audio"] and b["audio"] and "audio" not in a.get("shed", [])]
    assert len(both) >= 6
    close = sum(max(abs(a["audio"]["scores"][k] - b["audio"]["scores"][k]) for k in a["audio"]["scores"]) < SCORE_MARGIN
                for a, b in both)
    assert close >= 0.8 * len(both)


def test_words_arrive_as_amendments_of_past_seconds(realtime):
    rows, doc = realtime
    amends = [r for r in rows if r["type"] == "amend"]
    assert len(amends) >= 8 and all(r["text"]["words"] and r["text_delay_s"] > 0 for r in amends)
    first_amend = rows.index(amends[0])
    assert first_amend < len(rows) - len(amends)       # the first words come while the stream still runs
    assert doc["transcript"]["language"] == "en" and doc["modalities"]["text"]["status"] == "ok"
    assert sum(1 for t in doc["timeline"] if t["text"]) >= 15


def test_a_file_read_as_fast_as_it_decodes(clip, tmp_path):
    r = live("--source", str(clip), "--offline", "--set", "whisper_model=none", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [r["start_s"] for r in rows if r["type"] == "second"] == [float(i) for i in range(20)]
    doc = json.loads((tmp_path / "talk.live.json").read_text())
    assert len(doc["timeline"]) == 20 and doc["live"]["stopped"] == "end of stream"
    assert np.isclose(sum(doc["timeline"][3]["fused"]["scores"].values()), 1.0, atol=1e-3)


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
        _time.sleep(1.0)
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

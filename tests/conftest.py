"""Shared fixtures: the shared data folder, real media the tests make themselves, the shipped models."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from emotion_pipeline.data import data_dir

DATA = data_dir()
VIDEO = DATA / "video"
TALKING = VIDEO / "talking" / "Obama_clip1.mp4"
MEAD = VIDEO / "mead"
EDGE = VIDEO / "edge_cases"
YUNET = DATA / "faces" / "detectors" / "face_detection_yunet_2026may.onnx"

# A clone without the shared data is skipped through, green while testing little; CI (.ci/run)
# sets EMOTION_REQUIRE_DATA=1 so that every test needing it fails instead.
REQUIRE_DATA_ENV = "EMOTION_REQUIRE_DATA"
REQUIRE_DATA = os.environ.get(REQUIRE_DATA_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")

# ``@needs_data`` (or ``pytestmark = needs_data``): the shared video folder; ``@needs_data(path, ...)``:
# those files or folders of the shared data. Checked before the test runs (pytest_runtest_setup).
needs_data = pytest.mark.needs_data


def require_data(*paths: Path | str) -> None:
    """Skip the calling test when a path of the shared data is missing; fail it instead under
    EMOTION_REQUIRE_DATA=1. For tests and fixtures that find out what they need as they go."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if not missing:
        return
    reason = f"shared data not found: {', '.join(missing)} (set EMOTION_DATA_DIR)"
    if REQUIRE_DATA:
        pytest.fail(f"{reason}; {REQUIRE_DATA_ENV}=1 makes a missing data set a failure", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data(*paths): needs the shared data (default: its video folder); "
                                       f"skipped without it, failed under {REQUIRE_DATA_ENV}=1")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_data"):
        require_data(*(mark.args or (VIDEO,)))

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed (.ci/run installs it)")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (.ci/run installs it)")

# Sentences with clear emotional content, spoken by espeak-ng in the speech fixture.
SPEECH_LINES = (
    ("I am so happy today, this is wonderful and I love it!", "happy"),
    ("I am furious, I hate you, get out of here right now!", "angry"),
)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _wav_seconds(path: Path) -> float:
    import soundfile as sf
    info = sf.info(str(path))
    return info.frames / info.samplerate


@pytest.fixture(scope="session")
def speech_video(tmp_path_factory) -> tuple[Path, Path, list[tuple[float, float, str]]]:
    """A MEAD face clip looped under espeak-ng speech, with an .srt of the sentences.

    Returns (video, srt, [(start_s, end_s, expected_label)])."""
    if shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None:
        pytest.skip("needs ffmpeg and espeak-ng")
    require_data(MEAD)
    folder = tmp_path_factory.mktemp("speech")
    cues, parts, t = [], [], 0.5
    silence = folder / "gap.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1.0", str(silence))
    lead = folder / "lead.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0.5", str(lead))
    parts.append(lead)
    for i, (line, label) in enumerate(SPEECH_LINES):
        raw = folder / f"line{i}_raw.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), line], check=True)
        wav = folder / f"line{i}.wav"   # espeak-ng writes 22.05 kHz; the concat demuxer needs one format
        ffmpeg("-i", str(raw), "-ar", "16000", "-ac", "1", str(wav))
        dur = _wav_seconds(wav)
        cues.append((t, t + dur, line, label))
        parts += [wav, silence]
        t += dur + 1.0
    listing = folder / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    speech = folder / "speech.wav"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000", "-ac", "1", str(speech))
    video = folder / "speech_face.mp4"
    ffmpeg("-stream_loop", "-1", "-i", str(MEAD / "M030_front_happy_level3_001.mp4"), "-i", str(speech),
           "-map", "0:v", "-map", "1:a", "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(video))
    srt = folder / "speech_face.srt"

    def stamp(s: float) -> str:
        ms = int(round(s * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
    srt.write_text("".join(f"{i + 1}\n{stamp(a)} --> {stamp(b)}\n{line}\n\n" for i, (a, b, line, _) in enumerate(cues)))
    return video, srt, [(a, b, label) for a, b, _, label in cues]


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    """A random-initialised Whisper checkpoint in the official .pt layout (dims + state dict)."""
    import dataclasses

    import torch
    pytest.importorskip("whisper", reason="openai-whisper is an optional extra (pip install -e '.[openai-whisper]')")
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    model = Whisper(dims)
    with torch.no_grad():  # some Whisper parameters start as torch.empty: give every one a value
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    path = tmp_path_factory.mktemp("whisper") / "tiny-random.pt"
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def analyzer():
    """The default-profile analyzer (shipped models, offline, no Whisper), loaded once."""
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig

    return Analyzer(AnalyzeConfig(whisper_model="none", offline=True, progress=False, device="cpu"))


def sine(seconds: float, freq: float = 220.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)

"""Real-world input: each case gives a correct timeline with missing modalities marked missing,
or a one-line error naming the file (and, from the CLI, a non-zero exit and no output file)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emotion_pipeline import writers
from emotion_pipeline.errors import InputError
from tests.conftest import EDGE, MEAD, TALKING, ffmpeg, needs_data, needs_espeak, needs_ffmpeg

pytestmark = needs_data
REPO = Path(__file__).resolve().parent.parent


def check(doc):
    writers.validate(doc)
    assert len(doc["timeline"]) == doc["timeline"][-1]["start_s"] + 1
    return doc["timeline"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return tmp_path_factory.mktemp("edge")


@pytest.mark.parametrize("name, content, problem", [
    ("empty.mp4", b"", "empty file"),
    ("notes.mp4", b"just some text, no video here\n" * 50, "not a readable media file"),
])
def test_unreadable_files_are_one_line_errors(analyzer, made, name, content, problem):
    path = made / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as err:
        analyzer.analyze(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_path_and_directory(analyzer, made):
    with pytest.raises(InputError, match="no such file"):
        analyzer.analyze(made / "absent.mp4")
    with pytest.raises(InputError, match="is a directory"):
        analyzer.analyze(made)


@pytest.mark.parametrize("cut", ["head", "tail", "middle"])
def test_truncated_or_corrupt_mp4(analyzer, made, cut):
    data = bytearray(TALKING.read_bytes())
    if cut == "head":
        data = data[:len(data) // 3]            # the index (moov) may be lost
    elif cut == "tail":
        data = data[len(data) // 3:]            # the header is gone
    else:
        rng = np.random.default_rng(0)
        mid = len(data) // 2
        data[mid:mid + 20000] = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    path = made / f"broken_{cut}.mp4"
    path.write_bytes(bytes(data))
    try:
        tl = check(analyzer.analyze(path))
    except InputError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:
        assert len(tl) >= 1


def test_still_image_with_many_faces(analyzer):
    tl = check(analyzer.analyze(EDGE / "multi_face.jpg"))
    assert len(tl) == 1 and tl[0]["audio"] is None
    assert tl[0]["face"]["n_faces"] >= 4 and len(tl[0]["face"]["faces"]) >= 4


def test_no_face_at_all(analyzer):
    doc = analyzer.analyze(EDGE / "no_face.mp4")
    assert all(t["face"] is None for t in check(doc))
    assert doc["modalities"]["face"]["status"] == "missing" and "no face" in doc["modalities"]["face"]["reason"]


@pytest.mark.parametrize("name", ["face_noface.mov", "noface_face.mov"])
def test_hevc_mov_with_variable_frame_rate_and_a_face_that_comes_and_goes(analyzer, name):
    doc = analyzer.analyze(EDGE / name)
    tl = check(doc)
    assert doc["video"]["video_codec"] == "hevc"
    has_face = [t["face"] is not None for t in tl]
    assert any(has_face) and not all(has_face)


def test_silent_audio_track_gives_no_audio_emotion(analyzer):
    doc = analyzer.analyze(EDGE / "WolfgangLanger_Pexels.mp4")
    tl = check(doc)
    assert doc["video"]["has_audio"]
    assert sum(t["audio"] is not None for t in tl) <= len(tl) // 10
    assert sum(t["face"] is not None for t in tl) >= len(tl) // 2


@needs_ffmpeg
def test_audio_only_file(analyzer, made):
    path = made / "speech_only.m4a"
    ffmpeg("-i", str(TALKING), "-vn", "-c:a", "aac", str(path))
    doc = analyzer.analyze(path)
    tl = check(doc)
    assert not doc["video"]["has_video"] and doc["modalities"]["face"]["reason"] == "no video stream"
    assert all(t["face"] is None for t in tl) and sum(t["audio"] is not None for t in tl) >= 10


@needs_ffmpeg
def test_clip_shorter_than_a_second(analyzer, made):
    path = made / "short.mp4"
    ffmpeg("-i", str(TALKING), "-t", "0.6", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path))
    tl = check(analyzer.analyze(path))
    assert len(tl) == 1 and tl[0]["end_s"] < 1.0 and tl[0]["face"] is not None


@needs_ffmpeg
def test_4k_clip(analyzer, made):
    path = made / "uhd.mp4"
    ffmpeg("-i", str(MEAD / "M030_front_surprised_level3_001.mp4"), "-t", "2", "-vf", "scale=3840:2160",
           "-c:v", "libx264", "-preset", "ultrafast", str(path))
    doc = analyzer.analyze(path)
    assert (doc["video"]["width"], doc["video"]["height"]) == (3840, 2160)
    assert all(t["face"] is not None for t in check(doc))


@needs_ffmpeg
def test_music_without_speech_is_not_given_a_voice_emotion(analyzer, made):
    path = made / "music.mp4"
    chord = "+".join(f"0.2*sin(2*PI*{f}*t)*(0.6+0.4*sin(2*PI*2*t))" for f in (220, 277.2, 329.6, 440))
    ffmpeg("-i", str(MEAD / "M030_front_neutral_level1_001.mp4"), "-f", "lavfi", "-i",
           f"aevalsrc={chord}:s=44100:d=4", "-map", "0:v", "-map", "1:a", "-shortest",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path))
    tl = check(analyzer.analyze(path))
    assert sum(t["audio"] is not None for t in tl) <= 1


@needs_ffmpeg
@needs_espeak
def test_non_english_speech_keeps_voice_and_marks_words(analyzer, made):
    wav = made / "de.wav"
    subprocess.run(["espeak-ng", "-v", "de", "-w", str(wav), "Ich bin heute sehr glücklich und froh, das ist wunderbar."], check=True)
    path = made / "de.mp4"
    ffmpeg("-stream_loop", "-1", "-i", str(MEAD / "M030_front_happy_level3_001.mp4"), "-i", str(wav),
           "-map", "0:v", "-map", "1:a", "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path))
    transcript = made / "de.json"
    transcript.write_text(json.dumps({"language": "de", "segments": [
        {"start_s": 0.0, "end_s": 3.0, "text": "Ich bin heute sehr glücklich und froh, das ist wunderbar."}]}))
    doc = analyzer.analyze(path, transcript_file=transcript)
    tl = check(doc)
    assert all(t["text"] is None for t in tl) and "'de'" in doc["modalities"]["text"]["reason"]
    assert any(t["audio"] is not None for t in tl)


def test_cli_batch_reports_every_bad_file_and_writes_nothing_for_them(made):
    folder = made / "batch"
    folder.mkdir()
    (folder / "ok.mp4").symlink_to(MEAD / "M030_front_angry_level3_001.mp4")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("hello")
    out = made / "batch_out"
    r = subprocess.run([sys.executable, "-m", "emotion_pipeline", "analyze", str(folder), "--out", str(out), "--offline",
                        "--no-progress", "--set", "whisper_model=none"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and any("empty.mp4: empty file" in e for e in errors)
    assert sorted(p.name for p in out.iterdir()) == ["batch_summary.csv", "ok.json"]
    assert not list(out.glob(".*part"))

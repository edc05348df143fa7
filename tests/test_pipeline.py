"""The whole pipeline on real media, with the shipped models, on CPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emotion_pipeline import writers
from emotion_pipeline.labels import LABELS
from tests.conftest import MEAD, TALKING, needs_data

pytestmark = needs_data
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def obama(analyzer):
    return analyzer.analyze(TALKING)


def test_talking_clip_has_one_entry_per_second_with_face_and_audio(obama):
    writers.validate(obama)
    tl = obama["timeline"]
    assert len(tl) == 20
    assert [t["start_s"] for t in tl] == list(range(20))
    assert tl[-1]["end_s"] == pytest.approx(obama["video"]["duration_s"])
    assert sum(t["face"] is not None for t in tl) >= 18
    assert sum(t["audio"] is not None for t in tl) >= 12
    assert all(t["fused"] is not None for t in tl)
    for t in tl:
        if t["face"]:
            assert sum(t["face"]["scores"].values()) == pytest.approx(1.0, abs=2e-3)
            assert t["face"]["n_faces"] >= 1 and t["face"]["faces"][0]["face_id"] >= 0


def test_run_records_models_versions_and_config(obama):
    for modality in ("face", "audio", "text"):
        assert len(obama["models"][modality]["sha256"]) == 64
    assert obama["models"]["face_detector"]["name"].startswith("yunet")
    assert obama["software"]["torch"] and obama["config"]["frames_per_second"] == 4.0
    assert obama["labels"] == list(LABELS)
    assert obama["modalities"]["text"]["status"] == "missing"
    assert "Whisper" in obama["modalities"]["text"]["reason"]
    assert all(t["text"] is None for t in obama["timeline"])   # never invented


@pytest.mark.parametrize("clip", sorted(MEAD.glob("*.mp4"))[:3], ids=lambda p: p.stem)
def test_clip_without_audio_track_marks_audio_missing(analyzer, clip):
    doc = analyzer.analyze(clip)
    writers.validate(doc)
    assert len(doc["timeline"]) == 4
    assert all(t["audio"] is None and t["text"] is None for t in doc["timeline"])
    assert doc["modalities"]["audio"] == {"status": "missing", "reason": "no audio track", "coverage": None}
    assert all(t["face"] is not None for t in doc["timeline"])


def test_speech_with_subtitles_gets_text_emotion_in_the_right_seconds(analyzer, speech_video):
    video, srt, cues = speech_video
    doc = analyzer.analyze(video, transcript_file=srt)
    writers.validate(doc)
    tl = doc["timeline"]
    assert doc["transcript"]["source"].startswith("file:") and len(doc["transcript"]["segments"]) == 2
    for start, end, label in cues:
        inside = [t for t in tl if start + 0.5 <= t["start_s"] + 0.5 < end]
        assert inside and all(t["text"] is not None for t in inside)
        votes = [t["text"]["label"] for t in inside]
        assert max(set(votes), key=votes.count) == label, (label, votes)
    spoken = [t for t in tl if any(a <= t["start_s"] + 0.5 < b for a, b, _ in cues)]
    assert sum(t["audio"] is not None for t in spoken) >= len(spoken) // 2


def test_non_english_transcript_is_marked_not_scored(analyzer, tmp_path):
    tr = tmp_path / "de.json"
    tr.write_text(json.dumps({"language": "de", "segments": [{"start_s": 0.5, "end_s": 3.0, "text": "Ich bin sehr glücklich"}]}))
    doc = analyzer.analyze(MEAD / "M030_front_happy_level3_001.mp4", transcript_file=tr)
    assert all(t["text"] is None for t in doc["timeline"])
    assert "English-only" in doc["modalities"]["text"]["reason"]


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "emotion_pipeline", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_batch_goes_past_bad_files_and_skips_done_ones(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "good.mp4").symlink_to(MEAD / "M030_front_sad_level3_001.mp4")
    (videos / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    common = ["--out", str(out), "--offline", "--no-progress", "--set", "whisper_model=none"]
    r = _cli("analyze", str(videos), *common, "--plot")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["batch_summary.csv", "good.json", "good.png"]  # nothing half-written
    writers.validate(json.loads((out / "good.json").read_text()))
    r2 = _cli("analyze", str(videos / "good.mp4"), *common)
    assert r2.returncode == 0 and "up to date" in r2.stderr


def test_cli_missing_file_is_one_line_error(tmp_path):
    r = _cli("analyze", str(tmp_path / "nope.mp4"), "--out", str(tmp_path), "--offline", "--no-progress")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"error: {tmp_path / 'nope.mp4'}: no such file" in r.stderr


def test_evaluate_clips_reports_each_modality_alone(tmp_path):
    from emotion_pipeline.data import data_path
    from emotion_pipeline.labels import ravdess_fields
    files = sorted(data_path("speech", "ravdess", "Actor_17").glob("*.flac"))[::20][:3]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    csv = tmp_path / "clips.csv"
    csv.write_text("path,label\n" + "".join(f"{f},{ravdess_fields(f.stem)['label']}\n" for f in files)
                   + f"{broken},happy\n")
    r = _cli("evaluate", "clips", "--data", str(csv), "--adapter", "csv", "--whisper", "none")
    assert r.returncode == 0, r.stderr[-1000:]
    out = json.loads(r.stdout)
    # the unreadable clip is listed with its reason, and the other three are still evaluated
    assert [s["clip"] for s in out["skipped"]] == [str(broken)] and "broken.mp4" in r.stderr
    assert out["n_clips"] == 3 and out["modality_alone"]["audio"]["clips"] == 3
    assert out["modality_alone"]["text"]["clips"] == 0 and out["modality_alone"]["face"]["clips"] == 0
    assert all(row["alone"]["audio"] for row in out["clips"])

"""What people look at: the Python API, and the CSV, SRT, PNG, MP4 and HTML made from a timeline.

Every check compares contents with the JSON (or the source video), not just that a file exists.
The HTML is loaded in a real headless Chromium when one is installed (skipped otherwise).
"""
from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emotion_pipeline import api, exports
from emotion_pipeline.labels import LABELS
from tests.conftest import TALKING, needs_data

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def speech_result(speech_video):
    """The speech fixture (a face, espeak-ng speech, an .srt) analysed through the API."""
    video, srt, _ = speech_video
    return api.analyze(video, transcript=srt, offline=True, device="cpu", progress=False)


@pytest.fixture(scope="module")
def speech_outputs(speech_result, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    return speech_result.save(out, formats="json,csv,srt,png,mp4,html")


# ------------------------------------------------------------------ API and table
def test_result_table_is_the_json(speech_result):
    doc = speech_result.document
    df = speech_result.to_pandas()
    assert len(df) == len(doc["timeline"]) == len(speech_result)
    for (_, row), entry in zip(df.iterrows(), doc["timeline"]):
        assert row["start_s"] == entry["start_s"] and row["end_s"] == entry["end_s"]
        for modality in ("face", "audio", "text", "fused"):
            pred = entry[modality]
            if pred is None:
                assert row[f"{modality}_label"] is None or row[f"{modality}_label"] != row[f"{modality}_label"]
            else:
                assert row[f"{modality}_label"] == pred["label"]
                assert [row[f"{modality}_{lab}"] for lab in LABELS] == [pred["scores"][lab] for lab in LABELS]
    per_face = speech_result.to_pandas(faces=True)
    assert len(per_face) == sum(max(1, len((e["face"] or {}).get("faces", []))) for e in doc["timeline"])
    # the words reached the table: the transcript's sentences were scored
    assert df["text_label"].notna().any()
    assert json.loads(speech_result.to_json())["timeline"] == doc["timeline"]


def test_every_fused_second_says_why(speech_result):
    for entry in speech_result.document["timeline"]:
        fused = entry["fused"]
        if fused is None:
            continue
        weights = fused["weights"]
        assert list(weights) == fused["modalities"]
        assert sum(weights.values()) == pytest.approx(1.0, abs=2e-3)
        assert all(0 <= w <= 1 for w in weights.values())
        if len(weights) == 1:
            assert list(weights.values()) == [1.0]


def test_average_weights_are_confidence_times_setting():
    from emotion_pipeline import fuse
    from emotion_pipeline.records import ModalityScores

    face = ModalityScores(np.array([0.8, 0.2, 0, 0, 0, 0, 0], dtype=np.float32))
    audio = ModalityScores(np.array([0.4, 0.6, 0, 0, 0, 0, 0], dtype=np.float32))
    out = fuse.average((face, audio, None), (1.0, 2.0, 1.0))
    # face: 1.0 x 0.8, audio: 2.0 x 0.6 -> shares 0.4 and 0.6
    assert out.details["weights"] == {"face": 0.4, "audio": 0.6}
    assert out.details["modalities"] == ["face", "audio"]


@needs_data
def test_session_loads_models_once_for_many_videos(analyzer, tmp_path):
    session = api.Session.from_analyzer(analyzer)   # the suite's loaded analyzer (whisper off)
    missing = tmp_path / "missing.mp4"
    results = list(session.analyze_many([TALKING, missing, TALKING], skip_errors=True))
    assert len(results) == 2 and results[0].document["timeline"] == results[1].document["timeline"]
    with pytest.raises(Exception, match="missing.mp4"):
        list(session.analyze_many([missing]))
    saved = results[0].save(tmp_path / "o", formats=["csv"])
    back = api.Result.load(saved["json"])
    assert back.video == TALKING and back.to_pandas().equals(results[0].to_pandas())


# ------------------------------------------------------------------ CSV
def test_csv_rows_match_the_json(speech_outputs):
    import pandas as pd

    doc = json.loads(speech_outputs["json"].read_text())
    df = pd.read_csv(speech_outputs["csv"])
    expected_rows = sum(max(1, len((e["face"] or {}).get("faces", []))) for e in doc["timeline"])
    assert len(df) == expected_rows
    assert (df["settings_key"] == doc["settings_key"]).all()
    for entry in doc["timeline"]:
        rows = df[df["start_s"] == entry["start_s"]]
        assert len(rows) >= 1
        for _, row in rows.iterrows():
            for modality in ("audio", "text", "fused"):
                pred = entry[modality]
                if pred is None:
                    assert pd.isna(row[f"{modality}_label"])
                    continue
                assert row[f"{modality}_label"] == pred["label"]
                assert np.allclose([row[f"{modality}_{lab}"] for lab in LABELS], [pred["scores"][lab] for lab in LABELS])
            if entry["fused"]:
                for m, w in entry["fused"]["weights"].items():
                    assert row[f"weight_{m}"] == pytest.approx(w)
        if entry["face"]:
            by_id = {f["face_id"]: f for f in entry["face"]["faces"]}
            assert sorted(rows["face_id"].astype(int)) == sorted(by_id)
            for _, row in rows.iterrows():
                face = by_id[int(row["face_id"])]
                assert row["face_label"] == face["label"]
                assert bool(row["face_primary"]) == (face["face_id"] == entry["face"]["face_id"])
        else:
            assert rows["face_label"].isna().all()
        if entry["text"]:
            assert rows.iloc[0]["words"] == entry["text"]["words"]


# ------------------------------------------------------------------ SRT
def _parse_srt(text: str) -> list[tuple[float, float, str]]:
    def sec(stamp: str) -> float:
        h, m, rest = stamp.split(":")
        s, ms = rest.split(",")
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        assert lines[0].isdigit()
        a, b = lines[1].split(" --> ")
        cues.append((sec(a), sec(b), "\n".join(lines[2:])))
    return cues


def test_srt_cues_are_the_transcript_with_emotions(speech_outputs, speech_video):
    _, srt, spoken = speech_video
    doc = json.loads(speech_outputs["json"].read_text())
    segments = doc["transcript"]["segments"]
    cues = _parse_srt(speech_outputs["srt"].read_text())
    assert len(cues) == len(segments) == len(spoken)
    for (a, b, text), seg in zip(cues, segments):
        assert a == pytest.approx(seg["start_s"], abs=1e-3) and b == pytest.approx(seg["end_s"], abs=1e-3)
        m = re.fullmatch(r"\[(\w+) (\d+)%\] (.*)", text)
        assert m and m.group(3) == " ".join(seg["text"].split())
        # the tag: fused scores averaged over the cue's span, weighted by overlap with each second
        total = np.zeros(len(LABELS))
        for e in doc["timeline"]:
            overlap = min(b, e["end_s"]) - max(a, e["start_s"])
            if overlap > 0 and e["fused"]:
                total += overlap * np.array([e["fused"]["scores"][lab] for lab in LABELS])
        mean = total / total.sum()
        assert m.group(1) == LABELS[int(np.argmax(mean))]
        assert int(m.group(2)) == pytest.approx(100 * mean.max(), abs=1)


def test_srt_without_transcript_lists_emotion_runs():
    doc = {"transcript": None, "timeline": [
        {"start_s": 0.0, "end_s": 1.0, "fused": {"label": "happy", "scores": dict.fromkeys(LABELS, 0.0) | {"happy": 0.9}}},
        {"start_s": 1.0, "end_s": 2.0, "fused": {"label": "happy", "scores": dict.fromkeys(LABELS, 0.0) | {"happy": 0.7}}},
        {"start_s": 2.0, "end_s": 3.0, "fused": None},
        {"start_s": 3.0, "end_s": 3.5, "fused": {"label": "sad", "scores": dict.fromkeys(LABELS, 0.0) | {"sad": 0.6}}}]}
    assert _parse_srt(exports.srt_text(doc)) == [(0.0, 2.0, "[happy 80%]"), (3.0, 3.5, "[sad 60%]")]


# ------------------------------------------------------------------ PNG
def test_png_shows_the_fused_scores(speech_outputs):
    from PIL import Image

    from emotion_pipeline.plots import LABEL_COLOUR

    doc = json.loads(speech_outputs["json"].read_text())
    img = np.asarray(Image.open(speech_outputs["png"]).convert("RGB")).astype(int)
    assert img.shape[0] > 300 and img.shape[1] > 600
    dominant = doc["summary"]["dominant_label"]
    colour = np.array([int(LABEL_COLOUR[dominant][i:i + 2], 16) for i in (1, 3, 5)])
    share = (np.abs(img - colour).sum(-1) < 12).mean()
    assert share > 0.02, f"the dominant label's colour covers only {share:.1%} of the plot"


# ------------------------------------------------------------------ MP4
def _stream_facts(path: Path) -> dict:
    import av
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
    with av.open(str(path)) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        audio_s = (sum(f.samples for f in c.decode(a)) / a.codec_context.sample_rate) if a else None
        return {"frames": frames, "duration_s": c.duration / 1e6, "audio_s": audio_s,
                "audio_codec": a.codec_context.name if a else None,
                "size": (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height)}


def test_mp4_has_every_frame_and_the_audio(speech_outputs, speech_video):
    video, _, _ = speech_video
    src, out = _stream_facts(video), _stream_facts(speech_outputs["mp4"])
    assert out["frames"] == src["frames"]
    assert out["duration_s"] == pytest.approx(src["duration_s"], abs=0.1)
    assert out["audio_codec"] == src["audio_codec"] == "aac"
    assert out["audio_s"] == pytest.approx(src["audio_s"], abs=0.05)
    assert out["size"][0] >= 480 and out["size"][1] > out["size"][0]   # scaled up, strip beneath


def test_mp4_frames_carry_boxes_and_the_strip(speech_outputs):
    import av

    from emotion_pipeline.plots import LABEL_COLOUR

    doc = json.loads(speech_outputs["json"].read_text())
    second = next(i for i, e in enumerate(doc["timeline"]) if e["face"] and e["fused"])
    face_colour = np.array([int(LABEL_COLOUR[doc["timeline"][second]["face"]["label"]][i:i + 2], 16) for i in (1, 3, 5)])
    with av.open(str(speech_outputs["mp4"])) as c:
        frame = next(f for f in c.decode(video=0) if f.time >= second + 0.5).to_ndarray(format="rgb24").astype(int)
    h, w = frame.shape[:2]
    video_h = w   # the fixture's video is square
    picture, strip = frame[:video_h], frame[video_h:]
    # the face box and its label are drawn in the colour of the face's label
    assert (np.abs(picture - face_colour).sum(-1) < 40).sum() > 200
    # the strip under the playhead holds the fused scores' colours
    fused_colour = np.array([int(LABEL_COLOUR[doc["timeline"][second]["fused"]["label"]][i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(strip - fused_colour).sum(-1) < 40).sum() > 100


# ------------------------------------------------------------------ HTML in a real browser
def _chromium_dom(html: Path, tmp_path: Path) -> tuple[str, str]:
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000", "--dump-dom", html.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return done.stdout, done.stderr


def _body_state(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', body))


@needs_chromium
def test_html_report_plays_in_chromium(speech_outputs, tmp_path):
    html = speech_outputs["html"]
    text = html.read_text()
    assert "http://" not in text and "https://" not in text      # no network: everything inline
    dom, log = _chromium_dom(html, tmp_path)
    state = _body_state(dom)
    assert state.get("video-state") == "playable", (state, log[-2000:])
    assert state.get("plot-state") == "loaded"
    assert state.get("errors") == ""
    assert "Uncaught" not in log
    assert float(state["video-duration"]) == pytest.approx(_stream_facts(speech_outputs["mp4"])["duration_s"], abs=0.1)
    png = re.search(r'id="plot" alt="[^"]*" src="data:image/png;base64,([^"]+)"', dom) or \
        re.search(r'src="data:image/png;base64,([^"]+)"', dom)
    assert base64.b64decode(png.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(speech_outputs["json"].read_text())
    for seg in doc["transcript"]["segments"]:   # the transcript, each line with its emotion
        assert seg["text"].strip().split()[0] in dom
    assert doc["settings_key"] in dom and doc["summary"]["dominant_label"] in dom


@needs_chromium
def test_html_references_a_large_video_relatively(speech_result, speech_video, tmp_path, monkeypatch):
    video, _, _ = speech_video
    monkeypatch.setattr(exports, "EMBED_VIDEO_MAX_BYTES", 0)
    copy = tmp_path / "media" / "talk.mp4"
    copy.parent.mkdir()
    shutil.copy(video, copy)
    html = exports.write_html(speech_result.document, tmp_path / "report" / "talk.html", copy)
    text = html.read_text()
    assert 'src="../media/talk.mp4"' in text and "data:video" not in text
    state = _body_state(_chromium_dom(html, tmp_path)[0])
    assert state.get("video-state") == "playable" and state.get("errors") == ""


# ------------------------------------------------------------------ command line
def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emotion_pipeline", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def test_formats_on_the_command_line(speech_video, tmp_path):
    video, srt, _ = speech_video
    out = tmp_path / "out"
    done = _cli("analyze", str(video), "--transcript", str(srt), "--out", str(out), "--offline",
                "--formats", "csv,srt", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""                      # --quiet, and no progress bar in a pipe
    stem = video.stem
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.{x}" for x in ("csv", "json", "srt")]
    # a second run is up to date, and makes the formats asked for now from the JSON, without analysing
    done = _cli("analyze", str(video), "--transcript", str(srt), "--out", str(out), "--offline",
                "--formats", "json,png,csv")
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stderr and f"{stem}.png" in done.stderr
    assert (out / f"{stem}.png").stat().st_size > 10_000
    assert "%|" not in done.stderr                         # no tqdm bars when stderr is not a terminal


def test_unknown_format_is_one_line():
    done = _cli("analyze", str(TALKING), "--formats", "csv,gif", timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --formats: unknown format(s) gif; choose from json, csv, png, mp4, html, srt"]


# ------------------------------------------------------------------ predictions for dataset files
def _read_predictions(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        scores = [float(row[lab]) for lab in LABELS]
        assert sum(scores) == pytest.approx(1.0, abs=1e-3)
        assert row["label"] == LABELS[int(np.argmax(scores))]
    return rows


@needs_data
def test_predict_face_rows_follow_the_file(tmp_path):
    from emotion_pipeline.data import data_path
    fer = data_path("faces", "fer2013", "fer2013_publictest_3589.npz")
    with np.load(fer) as d:
        small = {k: (d[k][:25] if d[k].ndim and len(d[k]) == len(d["labels"]) else d[k]) for k in d.files}
    np.savez(tmp_path / "faces.npz", **small)
    done = _cli("predict", "face", "--data", str(tmp_path / "faces.npz"), "--out", str(tmp_path / "p.csv"))
    assert done.returncode == 0, done.stderr
    rows = _read_predictions(tmp_path / "p.csv")
    assert [r["id"] for r in rows] == [str(f) for f in small["filenames"]]
    assert all(r["model"].startswith("face-cnn ") and "tta=flip" in r["model"] for r in rows)


@needs_data
def test_predict_text_and_audio(tmp_path):
    from emotion_pipeline.data import data_path
    dair = tmp_path / "dair.txt"
    lines = data_path("text", "dair_emotion", "val.txt").read_text().splitlines()[:21]
    dair.write_text("\n".join(lines) + "\n")
    done = _cli("predict", "text", "--data", str(dair), "--out", str(tmp_path / "t.csv"))
    assert done.returncode == 0, done.stderr
    rows = _read_predictions(tmp_path / "t.csv")
    assert [r["id"] for r in rows] == [str(i) for i in range(20)]
    assert sum(r["label"] == r["true_label"] for r in rows) >= 10   # the text model is right on most
    flacs = sorted(data_path("speech", "ravdess").rglob("03-01-0[15]-*.flac"))[:4]
    manifest = tmp_path / "audio.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{'neutral' if '-01-0' in p.name[:8] else 'happy'}\n"
                                                 for p in flacs) + "missing.wav,sad\n")
    done = _cli("predict", "audio", "--data", str(manifest), "--out", str(tmp_path / "a.csv"))
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "a.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(flacs) + 1 and rows[-1]["label"] == "" and "missing.wav" in done.stderr
    assert sum(bool(r["label"]) for r in rows) == len(flacs)


def test_predict_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("nothing we know\n")
    done = _cli("predict", "text", "--data", str(bad), "--out", str(tmp_path / "p.csv"), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {bad}: unrecognised format (expected a MELD CSV, a "
                                                f"GoEmotions TSV or a dair-ai 'text;label' file)"]
    assert not (tmp_path / "p.csv").exists()


def test_schema_describes_every_field():
    from emotion_pipeline.writers import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$id"].startswith("urn:emotion-pipeline:schema:timeline:")
    undescribed = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for name, sub in (node.get("properties") or {}).items():
            if "description" not in sub:
                undescribed.append(f"{path}/{name}")
            walk(sub, f"{path}/{name}")
        for key in ("items", "additionalProperties"):
            walk(node.get(key), f"{path}/{key}")
        for key in ("oneOf", "allOf"):
            for i, sub in enumerate(node.get(key) or []):
                walk(sub, f"{path}/{key}/{i}")
        for name, sub in (node.get("$defs") or {}).items():
            walk(sub, f"#/$defs/{name}")
    walk(schema, "")
    assert not undescribed, undescribed


@needs_data
def test_csv_has_a_row_per_face_when_there_are_several(analyzer, tmp_path):
    import pandas as pd

    from tests.conftest import EDGE
    photo = EDGE / "multi_face.jpg"
    result = api.Session.from_analyzer(analyzer).analyze(photo)
    faces = result.document["timeline"][0]["face"]["faces"]
    assert len(faces) >= 3
    df = pd.read_csv(result.save(tmp_path, formats="csv")["csv"])
    assert sorted(df["face_id"]) == sorted(f["face_id"] for f in faces)
    assert df["face_primary"].sum() == 1
    assert list(df["face_label"]) == [next(f["label"] for f in faces if f["face_id"] == i) for i in df["face_id"]]


def test_api_bad_setting_names_the_key():
    from emotion_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"setting frames_per_second=-1: frames_per_second: must be > 0"):
        api.Session(frames_per_second=-1)
    with pytest.raises(ConfigError, match="unknown key"):
        api.analyze(TALKING, no_such_setting=1)

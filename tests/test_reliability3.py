"""Round 3 (issue 22): never lose the user's files, never trust what an output or a config says.

Inputs are made at test time from the shared clips (copies, and PyAV where a frame is needed) and
small generated files. Each case asserts the exit code, the one-line message naming the file, no
traceback, and that nothing was overwritten or left half-written. ``python -m bench.robustness``
prints the same cases with the behaviour before and after.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emotion_pipeline import api, config, exports, jobs, plots
from emotion_pipeline.errors import ConfigError, InputError, PipelineError, one_line
from tests.conftest import MEAD, needs_data, require_data

REPO = Path(__file__).resolve().parent.parent
FAST = ["--offline", "--no-progress", "--set", "whisper_model=none"]
HAPPY = MEAD / "M030_front_happy_level3_001.mp4"
ANGRY = MEAD / "M030_front_angry_level3_001.mp4"


def cli(*args: str, timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emotion_pipeline", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=timeout)


def told(r: subprocess.CompletedProcess) -> list[str]:
    """What the user is told: stderr lines that are not log lines (nor OpenCV's native ``[ WARN:`` log)."""
    assert "Traceback" not in r.stderr, r.stderr
    return [ln for ln in r.stderr.splitlines() if not ln.startswith(("INFO ", "DEBUG ", "WARNING ", "[ WARN:"))]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)    # (not copy: the shared files are read-only)
    return dst


def srt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(s: float) -> str:
        ms = int(round(s * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
    return "".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{t}\n\n" for i, (a, b, t) in enumerate(cues, 1))


def no_parts(folder: Path) -> None:
    assert not list(folder.rglob("*.part")), "a temporary file was left behind"


# ------------------------------------------------------------------ 1. outputs never replace inputs
@needs_data
def test_annotated_mp4_never_replaces_the_input_video(tmp_path):
    video = copy(HAPPY, tmp_path / "dir" / "talk.mp4")
    before = digest(video)
    r = cli("analyze", video, "--out", tmp_path / "dir", "--formats", "json,mp4", *FAST)
    lines = told(r)
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert str(video) in lines[0] and "would replace the input video" in lines[0]
    assert digest(video) == before and not (tmp_path / "dir" / "talk.json").exists()
    no_parts(tmp_path)


@needs_data
def test_png_output_never_replaces_a_png_input(tmp_path):
    import av
    import cv2

    with av.open(str(HAPPY)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="bgr24")
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), frame)
    before = digest(image)
    r = cli("analyze", image, "--out", tmp_path, "--formats", "png", *FAST)
    lines = told(r)
    assert r.returncode == 1 and len(lines) == 1 and "face.png" in lines[0] and "would replace" in lines[0]
    assert digest(image) == before


@needs_data
def test_srt_output_never_replaces_the_transcript(tmp_path):
    video = copy(HAPPY, tmp_path / "talk.mp4")
    subs = tmp_path / "talk.srt"
    subs.write_text(srt([(0.2, 1.5, "hello there")]))
    before = digest(subs)
    r = cli("analyze", video, "--transcript", subs, "--out", tmp_path, "--formats", "srt", *FAST)
    lines = told(r)
    assert r.returncode == 1 and len(lines) == 1 and "talk.srt" in lines[0] and "would replace" in lines[0]
    assert digest(subs) == before


def test_predict_never_replaces_its_dataset(tmp_path):
    data = tmp_path / "dev.csv"
    data.write_text("Utterance,Emotion\nhello,joy\n")
    before = digest(data)
    r = cli("predict", "text", "--data", data, "--out", data)
    lines = told(r)
    assert r.returncode == 2 and len(lines) == 1 and "dev.csv" in lines[0] and "would replace" in lines[0]
    assert digest(data) == before


def test_api_save_never_replaces_the_video(tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"not really a video")
    doc = {"video": {"path": str(video)}}
    with pytest.raises(InputError, match="would replace the input"):
        exports.check_not_source(video, tmp_path / "talk.json", ("json", "mp4"))
    with pytest.raises(InputError, match="would replace the input"):
        api.Result(doc, video).save(tmp_path, formats="mp4")
    assert video.read_bytes() == b"not really a video"


def test_a_results_folder_inside_the_input_folder_is_not_analysed_again(tmp_path):
    nest = tmp_path / "nest"
    (nest / "results").mkdir(parents=True)
    (nest / "a.mp4").write_bytes(b"a")
    (nest / "results" / "a.mp4").write_bytes(b"annotated")
    (nest / "results" / "results" / "a.mp4").parent.mkdir()
    (nest / "results" / "results" / "a.mp4").write_bytes(b"annotated twice")
    found = jobs.collect([str(nest)], out_dir=nest / "results")
    assert [v for v, _ in found] == [nest / "a.mp4"]


def test_our_annotated_outputs_beside_their_json_are_not_inputs(tmp_path):
    (tmp_path / "talk.mov").write_bytes(b"the input")
    (tmp_path / "talk.mp4").write_bytes(b"annotated")   # written by --formats mp4 into the input folder
    (tmp_path / "talk.png").write_bytes(b"plot")
    (tmp_path / "talk.json").write_text(json.dumps({"schema_version": "1.1", "timeline": [],
                                                    "input": {"path": str(tmp_path / "talk.mov")}}))
    (tmp_path / "other.mp4").write_bytes(b"a user's video")
    found = [v.name for v, _ in jobs.collect([str(tmp_path)], out_dir=tmp_path)]
    assert found == ["other.mp4", "talk.mov"]


def test_the_same_file_named_twice_is_analysed_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.mp4").write_bytes(b"x")
    found = jobs.collect([str(tmp_path / "a" / ".." / "b" / "x.mp4"), str((tmp_path / "b" / "x.mp4").resolve())])
    assert len(found) == 1


def test_playlists_and_raw_streams_in_a_folder_are_named_not_dropped_silently(tmp_path, caplog):
    for name in ("talk.m3u8", "cam.h264", "voice.opus", "clip.y4m"):
        (tmp_path / name).write_bytes(b"x")
    found = sorted(v.name for v, _ in jobs.collect([str(tmp_path)]))
    assert found == ["clip.y4m", "voice.opus"]
    assert any("cam.h264" in r.getMessage() and "talk.m3u8" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ 2. CSV formula injection
def test_csv_cells_that_look_like_formulas_are_neutralised():
    from emotion_pipeline.fileio import csv_cell

    for bad in ('=HYPERLINK("http://evil/","x")', "@SUM(A1)", "+cmd", "-2+3", "\t=1", "\r=1"):
        assert csv_cell(bad) == "'" + bad
    assert csv_cell("hello") == "hello" and csv_cell(-0.5) == -0.5 and csv_cell(None) is None


@needs_data
def test_batch_summary_neutralises_file_names(tmp_path):
    for name in ("=evil.mp4", "@sum.mp4"):
        (tmp_path / name).write_bytes(b"")   # empty: fails fast, still a summary row
    r = cli("analyze", "=evil.mp4", "@sum.mp4", "--out", "o", *FAST, cwd=tmp_path)   # named as given: =evil.mp4
    assert r.returncode == 1 and len(told(r)) == 2
    import csv
    rows = list(csv.DictReader((tmp_path / "o" / "batch_summary.csv").open()))
    assert [row["video"] for row in rows] == ["'=evil.mp4", "'@sum.mp4"]
    assert not any(cell.startswith(("=", "@", "+", "-")) for row in rows for cell in row.values())


# ------------------------------------------------------------------ one real run (words with = @ and $)
WORDS = [(0.1, 1.4, '=HYPERLINK("http://evil/","x")'), (1.5, 2.4, "@SUM(A1) we raised $20 from 10% of $30"),
         (2.5, 3.5, "cost $20.10 off, down from $30.")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    require_data(MEAD)
    w = tmp_path_factory.mktemp("run3")
    video = copy(HAPPY, w / "budget $$ Q1.mp4")
    subs = w / "words.srt"
    subs.write_text(srt(WORDS))
    r = cli("analyze", video, "--transcript", subs, "--out", w / "out", "--formats", "json,csv,png,html,srt", *FAST)
    assert r.returncode == 0, r.stderr
    return w


def test_words_with_formula_starts_are_neutralised_in_the_csv(run_dir):
    import pandas as pd

    df = pd.read_csv(run_dir / "out" / "budget $$ Q1.csv")
    words = [w for w in df["words"].dropna()]
    assert words and all(not w.startswith(("=", "@", "+", "-")) for w in words)
    assert any(w.startswith("'=HYPERLINK") for w in words)
    assert df["fused_happy"].dtype.kind == "f"      # numbers stay numbers


def test_dollars_in_words_and_names_draw_as_text(run_dir):
    png = run_dir / "out" / "budget $$ Q1.png"
    html = (run_dir / "out" / "budget $$ Q1.html").read_text()
    assert png.stat().st_size > 1000 and "$20 from 10% of $30" in html
    doc = json.loads((run_dir / "out" / "budget $$ Q1.json").read_text())
    fig = plots.timeline_figure(doc)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]
    import matplotlib.pyplot as plt
    plt.close(fig)
    assert any("cost $20.10 off, down from $30." in t or t.startswith("cost $20") for t in texts)
    assert any("budget $$ Q1.mp4" in t for t in texts)


# ------------------------------------------------------------------ 3. a JSON cannot make the report embed a file
def test_a_crafted_json_cannot_embed_another_file(run_dir, tmp_path):
    doc = json.loads((run_dir / "out" / "budget $$ Q1.json").read_text())
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    st = secret.stat()
    for recorded in ({"path": "/etc/passwd", "size_bytes": 1, "mtime_ns": 0},
                     {"path": str(secret), "size_bytes": st.st_size + 1, "mtime_ns": st.st_mtime_ns}):
        crafted = tmp_path / "crafted.json"
        crafted.write_text(json.dumps({**doc, "input": recorded}))
        result = api.Result.load(crafted)
        assert result.video is None
        html = result.save(tmp_path / "o", formats="html")["html"].read_text()
        assert base64.b64encode(secret.read_bytes()).decode()[:20] not in html and "video none" in html


def test_the_analysed_video_is_embedded_when_it_is_the_recorded_one(run_dir, tmp_path):
    result = api.Result.load(run_dir / "out" / "budget $$ Q1.json")
    assert result.video is not None and result.video.name == "budget $$ Q1.mp4"
    html = result.save(tmp_path, formats="html")["html"].read_text()
    assert "video embedded" in html


def test_a_referenced_video_path_is_url_encoded(tmp_path):
    big = tmp_path / "talk #1 100%.mp4"
    with open(big, "wb") as fh:            # sparse: larger than the embedding limit, no real bytes
        fh.truncate(exports.EMBED_VIDEO_MAX_BYTES + 1)
    tag, how = exports._video_tag(big, tmp_path / "report.html")
    assert how == "referenced" and 'src="talk%20%231%20100%25.mp4"' in tag


# ------------------------------------------------------------------ 4. bounded reads
ALIAS_BOMB = "\n".join(['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
                       + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefg", "bcdefgh")]
                       + [f"language: [{','.join(['*h'] * 9)}]"]) + "\n"


@pytest.mark.parametrize("body, problem", [(ALIAS_BOMB, "alias bomb"), ("x: &x [*x]\n", "recursive")])
def test_yaml_alias_bombs_are_refused_fast(tmp_path, body, problem):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(body)
    t0 = time.perf_counter()
    r = cli("analyze", tmp_path / "none.mp4", "--config", cfg, "--out", tmp_path / "o", timeout=60)
    lines = told(r)
    assert r.returncode == 2 and len(lines) == 1 and "bomb.yaml" in lines[0] and problem in lines[0]
    assert time.perf_counter() - t0 < 20
    with pytest.raises(ConfigError, match="alias"):
        config.load(config.AnalyzeConfig, None, ["language=" + "[&a [1,1,1,1,1,1,1,1,1,1], &b [" + ",".join(["*a"] * 10)
                                                 + "], &c [" + ",".join(["*b"] * 10) + "], &d ["
                                                 + ",".join(["*c"] * 10) + "], [" + ",".join(["*d"] * 10) + "]]"])


def test_a_huge_config_file_is_refused(tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("# padding\n" * (config.MAX_CONFIG_BYTES // 10 + 10))
    with pytest.raises(ConfigError, match="big.yaml.*is not a config"):
        config.load(config.AnalyzeConfig, cfg)


@needs_data
@pytest.mark.parametrize("make, problem", [
    (lambda: "1\n00:00:00,000 --> 00:00:01,000\n" + "word " * 600_000 + "\n", "more than a transcript for 4 s"),
    (lambda: srt([(i * 0.01, i * 0.01 + 0.005, "hi") for i in range(400)]), "segments for 4 s"),
    (lambda: srt([(60.0, 61.0, "long after the end")]), "after the video's end"),
], ids=["10MB-for-4s", "400-segments-for-4s", "all-after-the-end"])
def test_a_transcript_is_bounded_by_what_the_video_can_hold(tmp_path, make, problem):
    video = copy(HAPPY, tmp_path / "talk.mp4")     # 3.8 s
    subs = tmp_path / "words.srt"
    subs.write_text(make())
    t0 = time.perf_counter()
    r = cli("analyze", video, "--transcript", subs, "--out", tmp_path / "o", *FAST, timeout=60)
    lines = told(r)
    assert r.returncode == 2 and len(lines) == 1 and "words.srt" in lines[0] and problem in lines[0], r.stderr
    assert time.perf_counter() - t0 < 20 and not (tmp_path / "o" / "talk.json").exists()


def test_a_tampered_or_impossible_timeline_is_one_line(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"schema_version": "1.1", "timeline": "nope"}))
    with pytest.raises(PipelineError, match="t.json: not a valid timeline") as e:
        api.Result.load(bad)
    assert type(e.value).__module__.startswith("emotion_pipeline")


@needs_data
def test_a_timeline_with_a_second_that_ends_before_it_starts_is_refused(run_dir, tmp_path):
    doc = json.loads((run_dir / "out" / "budget $$ Q1.json").read_text())
    doc["timeline"][0]["start_s"], doc["timeline"][0]["end_s"] = 50, 1
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(PipelineError, match="t.json: not a valid timeline: timeline/0 ends before it starts"):
        api.Result.load(bad)
    bad.write_text(json.dumps(doc).replace('"end_s": 1,', '"end_s": 1' + "0" * 400 + ",", 1))
    with pytest.raises(PipelineError, match="t.json"):
        api.Result.load(bad)


# ------------------------------------------------------------------ half-written outputs
@needs_data
def test_a_format_that_fails_leaves_none_of_the_others(run_dir, tmp_path):
    doc = json.loads((run_dir / "out" / "budget $$ Q1.json").read_text())
    with pytest.raises(Exception):
        exports.write_formats(doc, tmp_path / "gone.mp4", tmp_path / "x.json", ("csv", "srt", "mp4"))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ 6. language codes
@pytest.mark.parametrize("written", ["en", "EN", "en-US", "en_GB", "eng", "English", " english "])
def test_language_codes_and_names_mean_english(written):
    from emotion_pipeline.languages import normalise_language
    from emotion_pipeline.records import Transcript
    from emotion_pipeline.seconds import text_status

    assert normalise_language(written) == "en"
    assert config.load(config.AnalyzeConfig, None, [f"language={written}"]).language == "en"
    status = text_status(transcript=Transcript((), written, "file:x"), english_only=True, words_seen=True)
    assert status.ok, status


def test_other_languages_are_still_named():
    from emotion_pipeline.languages import normalise_language
    from emotion_pipeline.records import Transcript
    from emotion_pipeline.seconds import text_status

    assert [normalise_language(x) for x in ("de-DE", "ger", "German", "zh_Hans", "Klingon")] == ["de", "de", "de",
                                                                                                "zh", None]
    assert not text_status(transcript=Transcript((), "de-DE", "file:x"), english_only=True, words_seen=True).ok
    with pytest.raises(ConfigError, match="language.*Klingon"):
        config.load(config.AnalyzeConfig, None, ["language=Klingon"])


# ------------------------------------------------------------------ 11. settings trusted too far
@pytest.mark.parametrize("setting", ["fusion_head=/missing.safetensors", "face_model=./nope.safetensors",
                                     "whisper_model=/no/such/folder"])
def test_a_model_named_by_a_missing_path_is_refused(tmp_path, setting):
    r = cli("analyze", tmp_path / "x.mp4", "--out", tmp_path / "o", "--offline", "--set", setting, timeout=60)
    lines = told(r)
    assert r.returncode == 2 and lines == [f"error: {setting}: no such file or folder"]


# ------------------------------------------------------------------ 15, 16: clear one-line messages
def test_a_file_name_with_a_newline_stays_one_line():
    line = one_line("bad\nname.mp4", InputError("bad\nname.mp4: no such file"))
    assert "\n" not in line and "bad\\nname.mp4" in line
    assert "\n" not in one_line("a\nb.mp4", ValueError("boom\nmore"))


def test_a_glob_with_dotdot_after_the_wildcard_is_one_line(tmp_path):
    r = cli("analyze", str(tmp_path / "*" / ".." / "x.mp4"), "--out", tmp_path / "o", *FAST, timeout=60)
    lines = told(r)
    assert r.returncode == 2 and len(lines) == 1 and "'..' after a wildcard" in lines[0]


def test_a_manifest_alone_is_enough(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("missing.mp4\n")
    r = cli("analyze", "--manifest", listing, "--out", tmp_path / "o", *FAST, timeout=60)
    lines = told(r)
    assert r.returncode == 1 and len(lines) == 1 and "missing.mp4: no such file" in lines[0]


@pytest.mark.parametrize("body, problem", [(None, "config file not found"), ("a: [1,\n", "invalid YAML"),
                                           ("- 1\n", "must be a mapping")])
def test_train_with_a_missing_or_broken_yaml_says_so(tmp_path, body, problem):
    cfg = tmp_path / "t.yaml"
    if body is not None:
        cfg.write_text(body)
    r = cli("train", "face", cfg, timeout=60)
    lines = told(r)
    assert r.returncode == 2 and len(lines) == 1 and "t.yaml" in lines[0] and problem in lines[0]


@pytest.mark.parametrize("value", ["nan", "0", "-1"])
def test_live_max_seconds_must_be_positive(tmp_path, value):
    r = cli("live", "--source", tmp_path / "x.mp4", "--max-seconds", value, "--out", tmp_path, "--offline", timeout=60)
    lines = told(r)
    assert r.returncode == 2 and len(lines) == 1 and f"--max-seconds {float(value)}" in lines[0]


# ------------------------------------------------------------------ issue 24: one job layer, one set of defaults
def test_the_shipped_defaults_are_the_dataclass_defaults():
    import yaml

    listed = yaml.safe_load((REPO / "configs" / "analyze.yaml").read_text())
    assert config.load(config.AnalyzeConfig, REPO / "configs" / "analyze.yaml") == config.AnalyzeConfig()
    assert set(listed) <= {f for f in config.AnalyzeConfig.__dataclass_fields__}
    assert jobs.analysis_config(None) == config.AnalyzeConfig()


@needs_data
def test_session_and_command_line_share_skip_and_ownership(analyzer, tmp_path):
    a = copy(HAPPY, tmp_path / "a" / "clip.mp4")
    b = copy(ANGRY, tmp_path / "b" / "clip.mp4")
    out = tmp_path / "out"
    session = api.Session.from_analyzer(analyzer)      # whisper off, offline: the settings of FAST

    first = list(session.analyze_many([a], out=out, formats="json,csv"))
    assert len(first) == 1 and not first[0].skipped and (out / "clip.json").exists() and (out / "clip.csv").exists()
    made = (out / "clip.json").stat().st_mtime_ns

    again = list(session.analyze_many([a], out=out, formats="json,csv,srt"))   # up to date: read back
    assert again[0].skipped and (out / "clip.json").stat().st_mtime_ns == made and (out / "clip.srt").exists()
    r = cli("analyze", a, "--out", out, *FAST, timeout=60)
    assert r.returncode == 0 and "up to date" in r.stderr and (out / "clip.json").stat().st_mtime_ns == made

    r = cli("analyze", b, "--out", out, *FAST, timeout=60)        # another video's output: refused
    lines = told(r)
    assert r.returncode == 1 and len(lines) == 1 and "holds the result of another video" in lines[0]
    with pytest.raises(PipelineError) as refused:
        list(session.analyze_many([b], out=out))
    assert lines[0] == f"error: {refused.value}"
    assert list(session.analyze_many([b], out=out, skip_errors=True)) == []
    assert (out / "clip.json").stat().st_mtime_ns == made


@needs_data
def test_a_named_whisper_model_that_cannot_load_is_in_the_json_warnings(tmp_path, monkeypatch):
    video = copy(HAPPY, tmp_path / "talk.mp4")
    empty_cache = tmp_path / "cache"
    empty_cache.mkdir()
    r = subprocess.run([sys.executable, "-m", "emotion_pipeline", "analyze", str(video), "--out", str(tmp_path / "o"),
                        "--offline", "--no-progress", "--set", "whisper_model=small"], capture_output=True, text=True,
                       cwd=REPO, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO),
                                                   "EMOTION_CACHE_DIR": str(empty_cache),
                                                   "HF_HOME": str(tmp_path / "hf")})
    lines = told(r)
    assert r.returncode == 3 and len(lines) == 1 and lines[0].startswith(f"warning: {video}: no Whisper model 'small'")
    doc = json.loads((tmp_path / "o" / "talk.json").read_text())
    assert not doc["complete"] and any("no Whisper model 'small'" in w for w in doc["warnings"])


@pytest.mark.parametrize("body, problem", [
    ({"segments": [{"start_s": 0, "end_s": 1, "text": {"evil": 1}}]}, "segment 0 text must be a string, got dict"),
    ({"segments": [{"start_s": 0, "end_s": 1, "text": "hi", "words": [{"start_s": 30, "end_s": 31, "text": "hi"}]}]},
     "has a word outside it"),
    ('{"segments": [{"start_s": 0, "end_s": 1' + "0" * 400 + ', "text": "hi"}]}', "words.json"),
], ids=["text-object", "word-outside-segment", "401-digit-end"])
def test_a_transcript_that_cannot_be_what_it_says_is_one_line(tmp_path, body, problem):
    subs = tmp_path / "words.json"
    subs.write_text(body if isinstance(body, str) else json.dumps(body))
    with pytest.raises(InputError, match=problem):
        jobs.check_transcript(subs)


# ------------------------------------------------------------------ 13. --jobs and signals
def _batch_with_workers(tmp_path: Path, copies: int):
    """``analyze --jobs 2`` on ``copies`` copies of the 20 s talking clip; returns (process, out, worker pids)
    once the first result is written."""
    from tests.conftest import TALKING

    require_data(TALKING)
    folder = tmp_path / "in"
    for i in range(copies):
        copy(TALKING, folder / f"t{i}.mp4")
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "emotion_pipeline", "analyze", str(folder), "--out", str(out),
                          "--jobs", "2", *FAST], stderr=subprocess.PIPE, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    t0 = time.time()
    while time.time() - t0 < 240 and not list(out.glob("*.json")) and p.poll() is None:
        time.sleep(0.2)
    ps = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout
    return p, out, [int(ln.split()[0]) for ln in ps.splitlines() if "spawn_main" in ln]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_killed_worker_fails_no_other_video(tmp_path):
    import signal

    p, out, workers = _batch_with_workers(tmp_path, 4)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)          # as the OOM killer does
    err = p.communicate(timeout=600)[1]
    assert p.returncode == 0, err
    assert "BrokenProcessPool" not in err and "a worker process died" in err
    assert sorted(f.name for f in out.glob("t*.json")) == [f"t{i}.json" for i in range(4)]


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_leaves_no_partial_file(tmp_path):
    import signal

    p, out, workers = _batch_with_workers(tmp_path, 4)
    assert len(workers) == 2
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 143 and "error: terminated" in err
    time.sleep(1.0)
    assert not [w for w in workers if _alive(w)], "a worker outlived the command"
    written = sorted(out.rglob("*"))
    time.sleep(3.0)
    assert sorted(out.rglob("*")) == written and not list(out.rglob("*.part"))

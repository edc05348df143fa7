import json

import numpy as np
import pytest

from emotion_pipeline.encoders import words_per_second
from emotion_pipeline.errors import InputError
from emotion_pipeline.transcribe import load_whisper, parse_subtitles, spread_words, transcribe

SRT = """1
00:00:00,500 --> 00:00:02,000
Hello there <i>friend</i>

2
00:00:03,000 --> 00:00:04,250
I am so happy
"""
VTT = """WEBVTT

00:00.500 --> 00:02.000 align:start
Hello there friend

00:03.000 --> 00:04.250
I am so happy
"""


@pytest.mark.parametrize("name, text", [("a.srt", SRT), ("a.vtt", VTT)])
def test_subtitles_parse_with_times_and_words(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    tr = parse_subtitles(path)
    assert [s.text for s in tr.segments] == ["Hello there friend", "I am so happy"]
    assert tr.segments[1].start_s == 3.0 and tr.segments[1].end_s == 4.25
    words = tr.segments[1].words
    assert [w.text for w in words] == ["I", "am", "so", "happy"]
    assert words[0].start_s == 3.0 and words[-1].end_s == pytest.approx(4.25)
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(words, words[1:]))


def test_project_json_and_timeline_json(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"transcript": {"language": "en", "source": "x", "segments": [
        {"start_s": 1.0, "end_s": 2.0, "text": "good news"}]}}))
    tr = parse_subtitles(path)
    assert tr.language == "en" and tr.segments[0].words[1].text == "news"


@pytest.mark.parametrize("content, message", [
    ("1\nnot a time --> x\nhello\n", "bad cue timing"),
    ("just some text without cues", "no subtitle cues"),
])
def test_bad_subtitles(tmp_path, content, message):
    path = tmp_path / "bad.srt"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        parse_subtitles(path)


def test_words_land_in_the_second_of_their_midpoint():
    from emotion_pipeline.records import Segment, Transcript
    words = spread_words(0.9, 3.1, "one two three four")
    grid = words_per_second(Transcript((Segment(0.9, 3.1, "one two three four", words),), "en", "t"), 5)
    assert sum(len(g) for g in grid) == 4
    assert grid[4] == [] and grid[0] == []  # the first word's midpoint is past 1.0 s


def test_random_tiny_whisper_runs_through_the_loader_and_decoder(tiny_whisper):
    model, info = load_whisper(str(tiny_whisper), device="cpu")
    assert info.path == str(tiny_whisper) and len(info.sha256) == 64
    t = np.arange(16000 * 2) / 16000
    tr = transcribe(model, (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), language="en", name="tiny-random",
                    temperature=0.0, sample_len=8)  # a random model never says end-of-text: keep it short
    assert tr.source == "whisper:tiny-random" and tr.language == "en"
    for seg in tr.segments:   # a random model says nonsense, but the records must be well formed
        assert 0 <= seg.start_s <= seg.end_s
        assert all(w.start_s <= w.end_s for w in seg.words)


def test_missing_whisper_offline_says_how_to_get_it(tmp_path, monkeypatch):
    from emotion_pipeline.models.registry import ModelUnavailableError
    from emotion_pipeline.transcribe import load_asr
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="make models|openai-whisper"):
        load_asr("openai:tiny", offline=True)


def test_openai_checkpoint_through_load_asr(tiny_whisper):
    from emotion_pipeline.transcribe import load_asr, transcribe_audio
    asr = load_asr(str(tiny_whisper))
    assert asr.info.backend == "openai-whisper" and asr.info.sha256 == load_whisper(str(tiny_whisper))[1].sha256
    # silence: the Silero gate leaves nothing for the (random) model to decode
    tr = transcribe_audio(asr, np.zeros(16000 * 3, np.float32), language="en")
    assert tr.segments == () and tr.language == "en"


def test_transcribe_is_split_by_job_and_the_backends_share_one_protocol():
    """Subtitles, backends, the choice of model and the streaming session are modules of their own;
    the package still offers what callers import from it."""
    import importlib

    from emotion_pipeline import transcribe as facade
    from emotion_pipeline.transcribe import backends, choice, session, subtitles

    assert facade.parse_subtitles is subtitles.parse_subtitles and facade.load_asr is choice.load_asr
    assert facade.TranscriptionSession is session.TranscriptionSession and facade.ASR is backends.ASR
    for name in ("subtitles", "backends", "choice", "session"):     # each stands alone
        assert importlib.import_module(f"emotion_pipeline.transcribe.{name}")
    asr = choice.load_asr("tiny.en", offline=True)                 # found and verified, built on first use
    assert isinstance(asr, backends.ASR) and not asr.multilingual and asr.info.compute_type == "int8"
    for cls in (backends.FasterWhisperASR, backends.OpenAIWhisperASR, backends.DeferredASR):
        assert all(callable(getattr(cls, m, None)) for m in ("transcribe", "identify")), cls

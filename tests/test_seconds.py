"""The per-second core (pipeline/seconds.py) that the file analysis and the live stream both feed."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from emotion_pipeline import live, seconds, writers
from emotion_pipeline.audio_windows import SecondCutter
from emotion_pipeline.labels import LABEL_INDEX, NUM_LABELS
from emotion_pipeline.models import SAMPLE_RATE_HZ
from emotion_pipeline.records import ModalityScores
from tests.conftest import VIDEO, needs_data, sine

TALKING_CLIPS = sorted((VIDEO / "talking").glob("*.mp4"))


def _speechlike(seconds_: float, seed: int = 0) -> np.ndarray:
    """A voiced tone with syllable-like loudness swings and pauses, over faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds_ * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, 1) * (np.sin(2 * np.pi * 0.3 * t) > -0.3)
    return (0.3 * envelope * np.sin(2 * np.pi * 180 * t) + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("piece", [1024, 7919, SAMPLE_RATE_HZ * 30])
def test_voice_windows_and_speech_fractions_do_not_depend_on_chunking(piece):
    wave = _speechlike(23.4)

    def cut(size):
        c = SecondCutter(3.0, vad_context_s=seconds.VAD_CONTEXT_S)
        out = [w for i in range(0, len(wave), size) for w in c.push(wave[i:i + size])]
        return out + c.finish(), c

    whole, _ = cut(len(wave))
    pieces, cutter = cut(piece)
    assert [w.second for w in pieces] == list(range(24))
    for a, b in zip(whole, pieces):
        assert a.start_sample == b.start_sample and np.array_equal(a.window, b.window)
        assert a.speech_fraction == b.speech_fraction and a.own_samples == b.own_samples
    assert all(len(w.window) == 3 * SAMPLE_RATE_HZ for w in pieces[1:])           # shifted back at the end
    assert max(w.speech_fraction for w in pieces) > 0.3
    assert len(cutter.buf) <= (seconds.VAD_CONTEXT_S + 2) * SAMPLE_RATE_HZ          # bounded by the context


def test_a_steady_tone_is_never_speech():
    c = SecondCutter(3.0, vad_context_s=seconds.VAD_CONTEXT_S)
    windows = c.push(sine(12.0)) + c.finish()
    assert max(w.speech_fraction for w in windows) < 0.05


def _one_hot(label: str, p: float = 0.9) -> ModalityScores:
    probs = np.full(NUM_LABELS, (1 - p) / (NUM_LABELS - 1), np.float32)
    probs[LABEL_INDEX[label]] = p
    return ModalityScores(probs=probs, embedding=np.ones(4, np.float32))


def test_causal_timeline_holds_a_window_and_hands_on_final_seconds():
    final = []
    tl = seconds.Timeline(seconds.Fuser("average", (1.0, 1.0, 1.0)), 3, causal=True, keep_s=10, on_final=final.append)
    for s in range(1000):
        tl.add(s, face=_one_hot("happy" if s % 50 else "sad"))
        entry = tl.entry(s)
        assert entry.fused.details["smoothing"] == "causal"
    assert len(tl.rows) <= 10 + 3 and len(tl.raw) <= 10 + 3                # a window, not the stream
    assert [e.start_s for e in final] == [float(s) for s in range(990)]
    assert all(e.face.embedding is None for e in final)                      # final seconds are light
    # a one-second blip is smoothed with the two seconds before it, never with one after
    assert np.argmax(final[100].fused.probs) == LABEL_INDEX["happy"]
    assert np.argmax(final[100].fused_raw.probs) == LABEL_INDEX["sad"]
    assert not tl.set_text(5, _one_hot("angry"))                              # final: no amendment
    assert tl.set_text(995, _one_hot("angry")) and tl.row(995)[2] is not None
    with pytest.raises(ValueError):
        tl.add(3, face=None)


def test_centred_timeline_matches_the_whole_list_smoothing():
    from emotion_pipeline import fuse
    fuser = seconds.Fuser("average", (1.0, 0.5, 1.0))
    rows = [(_one_hot("happy") if s % 4 else None, _one_hot("sad", 0.6) if s % 3 else None, None) for s in range(30)]
    tl = seconds.Timeline(fuser, 5, causal=False)
    for s, (f, a, t) in enumerate(rows):
        tl.add(s, face=f, audio=a, text=t)
    raw = fuser.fuse(rows)
    expected = fuse.smooth(raw, 5)
    for e, want in zip(tl.entries(), expected):
        assert (e.fused is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(e.fused.probs, want.probs, rtol=1e-6)


def test_statuses_are_worded_in_one_place():
    assert seconds.audio_status(has_audio=False, voice_seen=False).reason == "no audio track"
    assert seconds.face_status(has_video=True, faces_seen=False, frames_sampled=12).reason == \
        "no face found in 12 sampled frames"
    from emotion_pipeline.records import Transcript
    de = Transcript((), "de", "whisper:tiny")
    assert "English-only" in seconds.text_status(transcript=de, english_only=True, words_seen=False).reason
    failed = seconds.text_status(transcript=Transcript((), "en", "whisper:tiny"), english_only=True, words_seen=True,
                                 failure="transcription failed (RuntimeError: boom)")
    assert not failed.ok and failed.reason.startswith("transcription failed")


# ---------------------------------------------------------------------------- live and file agree
def _live_lines(analyzer, clip: Path, **options) -> tuple[list[dict], dict]:
    buf = io.StringIO()
    doc = live.run(analyzer, str(clip), live.LiveOptions(**options), buf, None)
    return [json.loads(ln) for ln in buf.getvalue().splitlines()], doc


def _label(entry: dict, modality: str) -> str | None:
    return (entry[modality] or {}).get("label")


@needs_data
@pytest.mark.parametrize("clip", TALKING_CLIPS, ids=lambda p: p.stem)
def test_live_and_the_file_analysis_give_identical_face_and_voice_labels(analyzer, clip):
    offline = analyzer.analyze(clip)
    lines, doc = _live_lines(analyzer, clip)
    writers.validate(doc)
    seconds_ = [r for r in lines if r["type"] == "second"]
    assert len(seconds_) == len(offline["timeline"]) == len(doc["timeline"])
    for modality in ("face", "audio"):
        assert [_label(r, modality) for r in seconds_] == [_label(t, modality) for t in offline["timeline"]], modality
    assert sum(1 for r in seconds_ if r["audio"]) >= len(seconds_) // 2
    assert doc["modalities"]["face"] == offline["modalities"]["face"]
    assert doc["modalities"]["audio"] == offline["modalities"]["audio"]
    assert doc["coverage"]["video"]["lost_total_s"] == 0 and doc["complete"]


# ---------------------------------------------------------------------------- a transcriber that fails
class _FailingASR:
    """A real transcriber's interface (transcribe.ASR); the first ``good`` calls give words, then it fails."""

    def __init__(self, good: int):
        from emotion_pipeline.transcribe import ASRInfo
        self.info = ASRInfo("failing", "test", "test", None, "0" * 64, "", False)
        self.good, self.calls = good, 0

    @property
    def multilingual(self) -> bool:
        return False

    def transcribe(self, audio, language):
        from emotion_pipeline.records import Segment, Word
        self.calls += 1
        if self.calls > self.good:
            raise RuntimeError("decoder crashed")
        n = len(audio) / SAMPLE_RATE_HZ
        return [Segment(0.0, n, "I am so happy", (Word(0.1, 0.5, "happy", 0.9),))], "en"

    def identify(self, audio):
        raise AssertionError("an English-only model is not asked for the language")


@needs_data
@pytest.mark.parametrize("good", [0, 1], ids=["fails-at-once", "fails-after-words"])
def test_a_live_transcription_that_fails_says_so(analyzer, monkeypatch, good):
    monkeypatch.setattr(analyzer, "whisper", _FailingASR(good))
    monkeypatch.setattr(analyzer, "language_id", None)
    lines, doc = _live_lines(analyzer, TALKING_CLIPS[1])
    text = doc["modalities"]["text"]
    assert text["status"] == "missing" and text["reason"] == "transcription failed (RuntimeError: decoder crashed)"
    assert "English-only" not in text["reason"]
    amended = [r for r in lines if r["type"] == "amend"]
    assert bool(amended) == bool(good)                      # words before the failure still came
    assert doc["modalities"]["face"]["status"] == "ok"      # faces and voice went on


class _ScriptedASR(_FailingASR):
    """Words for every stretch of speech, never failing."""

    def __init__(self):
        super().__init__(good=10 ** 9)


@needs_data
def test_words_amend_past_seconds_while_the_stream_still_runs(analyzer, monkeypatch):
    from emotion_pipeline import demux
    monkeypatch.setattr(analyzer, "whisper", _ScriptedASR())
    monkeypatch.setattr(analyzer, "language_id", None)
    lines: list[dict] = []
    session = live.LiveSession(analyzer, live.LiveOptions(), lines.append, clock=lambda: 0.0)
    clip = TALKING_CLIPS[1]
    frames = [f for f in demux.iter_frames(clip, sample_fps=analyzer.cfg.frames_per_second)]
    chunks = list(demux.iter_audio(clip, chunk_s=0.25))
    items = sorted([(f.t_s, 0, f) for f in frames] + [(c.end_s, 1, c) for c in chunks], key=lambda x: x[:2])
    first_amend_at = None
    for t, kind, item in items:
        if kind == 0:
            session.on_video(item, wall=0.0)
        else:
            session.on_audio(item.samples, item.end_s, wall=0.0)
        while session.ready(session.next_second):
            session.process(session.next_second)
            session.next_second += 1
            session.asr_queue.join()                # the transcriber has had what the stream gave so far
            session.amend_text()
            if first_amend_at is None and any(ln["type"] == "amend" for ln in lines):
                first_amend_at = session.next_second
    # the language is settled on the first LIVE_LID_SPEECH_S of speech (held back till then), then
    # words come block by block: the first ones while the 20 s stream still has seconds to go
    assert first_amend_at is not None and first_amend_at <= 18, first_amend_at
    amends = [ln for ln in lines if ln["type"] == "amend"]
    assert amends[0]["text"]["words"] and amends[0]["start_s"] < first_amend_at

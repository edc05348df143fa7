"""pipeline.vad: silence, noise and tones are not speech; RAVDESS speech is, its silent ends are not."""
from __future__ import annotations

import numpy as np
import pytest

from emotion_pipeline.data import data_path
from emotion_pipeline.vad import speech_fraction_per_second, speech_mask
from tests.conftest import require_data

SR = 16000
FRAME_S = 0.03
RAVDESS = data_path("speech", "ravdess")
# A spread of actors (odd = male), emotions and intensities; all have ~1 s of silence at each end.
RAVDESS_CLIPS = ["Actor_01/03-01-01-01-01-01-01.flac", "Actor_04/03-01-05-02-02-01-04.flac",
                 "Actor_09/03-01-03-01-01-02-09.flac", "Actor_14/03-01-04-02-01-01-14.flac",
                 "Actor_19/03-01-08-01-02-02-19.flac"]


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = _t(5.0)
    burst = lambda x: np.concatenate([np.zeros(SR), x[: 3 * SR], np.zeros(SR)])  # noqa: E731
    return {
        "digital silence": np.zeros(5 * SR),
        "dither": 1e-4 * rng.standard_normal(5 * SR),
        "white noise": 0.1 * rng.standard_normal(5 * SR),
        "noise burst after silence": burst(0.1 * rng.standard_normal(5 * SR)),
        "440 Hz tone": 0.3 * np.sin(2 * np.pi * 440 * t),
        "tone burst after silence": burst(0.3 * np.sin(2 * np.pi * 440 * t)),
        "sustained chord": sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220, 277, 330, 440)),
        "2 Hz amplitude-modulated noise": 0.1 * np.sin(np.pi * 2 * t) ** 2 * rng.standard_normal(5 * SR),
    }


@pytest.mark.parametrize("name", list(_synthetic()))
def test_synthetic_non_speech(name):
    wave = _synthetic()[name].astype(np.float32)
    mask = speech_mask(wave, SR, FRAME_S)
    assert mask.dtype == bool and mask.shape == (int(np.ceil(len(wave) / (FRAME_S * SR))),)
    assert mask.mean() < 0.02, f"{name}: {mask.mean():.2%} of frames called speech"
    assert speech_fraction_per_second(wave, SR, 5.0).max() < 0.05


def test_empty_and_short_inputs():
    assert speech_mask(np.zeros(0, np.float32), SR).shape == (0,)
    assert speech_fraction_per_second(np.zeros(0, np.float32), SR, 3.0).tolist() == [0, 0, 0]
    assert speech_mask(np.zeros(100, np.float32), SR).tolist() == [False]
    assert not np.isnan(speech_fraction_per_second(np.full(SR, np.nan, np.float32), SR, 1.0)).any()


def _load(rel: str) -> np.ndarray:
    sf = pytest.importorskip("soundfile")
    path = RAVDESS / rel
    require_data(path)
    wave, sr = sf.read(str(path), dtype="float32")
    assert sr == SR
    return wave


@pytest.mark.parametrize("rel", RAVDESS_CLIPS)
def test_ravdess_speech_and_silent_ends(rel):
    wave = _load(rel)
    mask = speech_mask(wave, SR, FRAME_S)
    edge = int(0.6 / FRAME_S)  # the first and last 0.6 s are inside RAVDESS's ~1 s of silence
    assert not mask[:edge].any() and not mask[-edge:].any()
    assert mask[edge:-edge].mean() > 0.4  # the sentence (~1.5-2 s) is mostly speech
    frac = speech_fraction_per_second(wave, SR, len(wave) / SR)
    assert frac.shape == (int(np.ceil(len(wave) / SR)),)
    assert frac[0] < 0.1 and frac[1:].max() > 0.5


def test_ravdess_robust_to_gain_and_noise():
    wave = _load(RAVDESS_CLIPS[1])
    rng = np.random.default_rng(1)
    speech_rms = float(np.sqrt(np.mean(wave[SR:-SR] ** 2)))
    clean = speech_mask(wave, SR).mean()
    for variant in (wave * 0.1, np.clip(wave * 8, -1, 1),
                    wave + rng.standard_normal(len(wave)).astype(np.float32) * speech_rms / 10,  # 20 dB SNR
                    wave + 0.3 * speech_rms * np.sin(2 * np.pi * 50 * _t(len(wave) / SR)).astype(np.float32)):
        assert speech_mask(variant.astype(np.float32), SR).mean() > 0.6 * clean


def test_fraction_bins_past_the_audio_are_zero():
    wave = _load(RAVDESS_CLIPS[0])
    duration = len(wave) / SR
    frac = speech_fraction_per_second(wave, SR, duration + 3.0)
    assert len(frac) == int(np.ceil(duration + 3.0))
    assert (frac[-3:] == 0).all() and frac.max() > 0.5


# ------------------------------------------------------------------ Silero (what gates Whisper)

@pytest.mark.parametrize("name", list(_synthetic()))
def test_silero_finds_no_speech_in_synthetic_non_speech(name):
    from emotion_pipeline.vad import silero_regions
    wave = _synthetic()[name].astype(np.float32)
    assert sum(b - a for a, b in silero_regions(wave, SR)) < 0.3 * SR, name


@pytest.mark.parametrize("rel", RAVDESS_CLIPS)
def test_silero_regions_cover_the_ravdess_sentence_not_its_silent_ends(rel):
    from emotion_pipeline.vad import silero_regions
    wave = _load(rel)
    regions = silero_regions(wave, SR, pad_s=0.0, min_silence_s=0.1)   # tight regions: a region only closes
    # after min_silence_s, and RAVDESS's trailing silence is shorter than the pipeline's 1 s
    assert regions, rel
    first, last = regions[0][0] / SR, regions[-1][1] / SR
    assert first > 0.6 and last < len(wave) / SR - 0.6
    assert sum(b - a for a, b in regions) / SR > 0.8


def test_silero_needs_16_khz():
    from emotion_pipeline.vad import silero_regions
    with pytest.raises(ValueError, match="16 kHz"):
        silero_regions(np.zeros(8000, np.float32), 8000)
    assert silero_regions(np.zeros(100, np.float32), SR) == []

"""Voice activity from energy, spectral flatness, zero crossings and energy dynamics (no model).

Per frame (``frame_s``, non-overlapping) a frame is speech when
1. it is loud enough: above an absolute floor (-75 dBFS), within 40 dB of the track's peaks,
   and ``ENERGY_MARGIN_DB`` above the
   track's own noise floor (its 10th-percentile frame energy), so a silent or constant-noise
   track yields no speech at all;
2. it is voiced-like: low spectral flatness and a zero-crossing rate below that of noise
   (unvoiced consonants next to voiced frames are recovered by the hangover below);
3. its neighbourhood (``DYNAMICS_WINDOW_S``) has the energy ups and downs of syllables: the
   standard deviation of active frames' energy is at least ``MIN_DYNAMICS_DB``. Steady tones,
   hum and much sustained music fail this test; speech (4-5 syllables a second) passes.
The mask is then closed over short gaps (hangover) and runs shorter than ``MIN_SPEECH_S`` dropped.

Limits: singing and rhythmic or percussive music can pass as speech (they are voiced and have
syllable-like dynamics); whispered speech is unvoiced and is missed; speech over loud music or
babble is decided by whichever dominates. Use it as a gate ("is anyone talking here?"), not as
a transcript-grade segmenter.
"""
from __future__ import annotations

import numpy as np

from emotion_pipeline.models import SAMPLE_RATE_HZ

ABS_FLOOR_DBFS = -75.0      # quieter than this is silence whatever the track; RAVDESS speech
                            # frames sit at -40..-65 dBFS, its silence at -90..-120 (16-bit floor)
PEAK_RANGE_DB = 40.0        # frames > 40 dB below the loud end (99th pct) are background
NOISE_PERCENTILE = 10.0     # the track's noise floor: its quietest 10% of frames
ENERGY_MARGIN_DB = 6.0      # stationary noise frames stay within ~3 dB of their 10th percentile
MAX_FLATNESS = 0.35         # white noise ~0.5-0.6 (periodogram), voiced speech mostly < 0.2
MAX_ZCR = 0.25              # crossings per sample; white noise ~0.5, voiced speech < 0.15 at 16 kHz
DYNAMICS_WINDOW_S = 1.0     # look at a second around each frame (4-5 syllables of speech)
MIN_DYNAMICS_DB = 3.0       # speech energy swings 6-15 dB between syllables; a tone ~0
HANGOVER_S = 0.20           # close gaps up to 200 ms (unvoiced consonants, stop closures)
MIN_SPEECH_S = 0.10         # drop isolated voiced blips shorter than 100 ms
BAND_HZ = (100.0, 4000.0)   # where voiced speech energy lies; flatness is measured here


def _frames(wave: np.ndarray, frame: int) -> np.ndarray:
    n = int(np.ceil(len(wave) / frame)) if len(wave) else 0
    padded = np.zeros(n * frame, dtype=np.float32)
    padded[:len(wave)] = wave
    return padded.reshape(n, frame)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of True runs."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def frame_features(wave: np.ndarray, sample_rate_hz: int, frame_s: float = 0.03) -> dict[str, np.ndarray]:
    """Per-frame in-band energy (dBFS), spectral flatness in BAND_HZ and zero-crossing rate."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    wave = np.nan_to_num(wave - (wave.mean() if len(wave) else 0.0))
    frame = max(16, int(round(frame_s * sample_rate_hz)))
    frames = _frames(wave, frame)
    window = np.hanning(frame).astype(np.float32)
    spec = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate_hz)
    band = spec[:, (freqs >= BAND_HZ[0]) & (freqs <= min(BAND_HZ[1], sample_rate_hz / 2))] + 1e-12
    # in-band energy as the mean square of a band-limited frame (Parseval), so hum and rumble
    # below 100 Hz neither count as speech nor raise the noise floor
    energy_db = 10 * np.log10(2 * band.sum(axis=1) / (frame * np.sum(window ** 2)) + 1e-12)
    flatness = np.exp(np.mean(np.log(band), axis=1)) / np.mean(band, axis=1)
    signs = np.signbit(frames)
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
    return {"energy_db": energy_db, "flatness": flatness, "zcr": zcr, "frame": np.array(frame)}


def speech_mask(wave: np.ndarray, sample_rate_hz: int, frame_s: float = 0.03) -> np.ndarray:
    """One bool per ``frame_s`` frame (the last one partial): True where someone is speaking."""
    f = frame_features(wave, sample_rate_hz, frame_s)
    e = f["energy_db"]
    if len(e) == 0:
        return np.zeros(0, dtype=bool)
    threshold = max(ABS_FLOOR_DBFS, float(np.percentile(e, NOISE_PERCENTILE)) + ENERGY_MARGIN_DB,
                    float(np.percentile(e, 99)) - PEAK_RANGE_DB)
    active = e > threshold
    voiced = active & (f["flatness"] < MAX_FLATNESS) & (f["zcr"] < MAX_ZCR)

    # energy dynamics of the active frames around each frame
    # (running sums over the window: the standard deviation of each neighbourhood at once)
    half = max(1, int(round(DYNAMICS_WINDOW_S / frame_s / 2)))
    idx = np.arange(len(e))
    lo, hi = np.maximum(0, idx - half), np.minimum(len(e), idx + half + 1)
    ea = np.where(active, e, 0.0).astype(np.float64)
    sums = [np.concatenate([[0.0], np.cumsum(x)]) for x in (active.astype(np.float64), ea, ea * ea)]
    count, s1, s2 = (c[hi] - c[lo] for c in sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.maximum(s2 / count - (s1 / count) ** 2, 0.0))
    mask = voiced & (count >= 3) & (std >= MIN_DYNAMICS_DB)

    # hangover: close short gaps, but only over frames that are themselves active
    gap = int(round(HANGOVER_S / frame_s))
    for start, end in _runs(~mask):
        if 0 < start and end < len(mask) and end - start <= gap:
            mask[start:end] = active[start:end].any() or end - start <= 2
    min_len = max(1, int(round(MIN_SPEECH_S / frame_s)))
    for start, end in _runs(mask):
        if end - start < min_len:
            mask[start:end] = False
    return mask


def speech_fraction_per_second(wave: np.ndarray, sample_rate_hz: int, duration_s: float,
                               frame_s: float = 0.03) -> np.ndarray:
    """Fraction of each 1-s bin [k, k+1) covered by speech, for ceil(duration_s) bins.

    Bins past the end of the audio (a track shorter than the video) are 0.
    """
    n_bins = int(np.ceil(max(0.0, duration_s) - 1e-9))
    out = np.zeros(n_bins, dtype=np.float32)
    mask = speech_mask(wave, sample_rate_hz, frame_s)
    if n_bins == 0 or mask.size == 0:
        return out
    frame = max(16, int(round(frame_s * sample_rate_hz)))
    centres_s = (np.arange(mask.size) * frame + frame / 2) / sample_rate_hz
    bins = np.floor(centres_s).astype(np.int64)
    keep = bins < n_bins
    speech = np.bincount(bins[keep], weights=mask[keep].astype(np.float64), minlength=n_bins)
    # the denominator is a full second's worth of frames, so missing audio counts as no speech
    out[:] = np.clip(speech / (1.0 / (frame / sample_rate_hz)), 0, 1)
    return out


# ------------------------------------------------------------------ Silero (a model, via faster-whisper)
# Silero VAD v6 (MIT) ships inside faster-whisper as an ONNX file run by onnxruntime; it gates
# what Whisper transcribes. Its options, and why:
SILERO_THRESHOLD = 0.5          # speech probability above which a 32 ms frame starts speech (Silero default)
SILERO_MIN_SILENCE_S = 1.0      # a pause must last 1 s to end a region (faster-whisper uses 2 s; 1 s
                                # cuts long talks into more, shorter regions without splitting sentences)
SILERO_PAD_S = 0.3              # regions padded by 0.3 s each side, so word edges are not clipped


def silero_regions(wave: np.ndarray, sample_rate_hz: int, *, min_silence_s: float = SILERO_MIN_SILENCE_S,
                   pad_s: float = SILERO_PAD_S) -> list[tuple[int, int]]:
    """Speech regions as [start, end) sample indices (16 kHz audio only: Silero's rate)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if sample_rate_hz != SAMPLE_RATE_HZ:
        raise ValueError(f"Silero VAD needs 16 kHz audio, got {sample_rate_hz} Hz")
    wave = np.ascontiguousarray(wave, dtype=np.float32).reshape(-1)
    if wave.size < 512:   # one Silero frame
        return []
    opts = VadOptions(threshold=SILERO_THRESHOLD, min_silence_duration_ms=int(min_silence_s * 1000),
                      speech_pad_ms=int(pad_s * 1000))
    return [(int(r["start"]), int(r["end"])) for r in get_speech_timestamps(wave, opts, sampling_rate=sample_rate_hz)]


def speech_fraction_in(wave: np.ndarray, sample_rate_hz: int, lo_s: float, hi_s: float,
                       frame_s: float = 0.03) -> float:
    """Fraction of the span [lo_s, hi_s) (seconds from ``wave``'s first sample) covered by speech,
    the mask judged over the whole of ``wave`` (its context: noise floor, peaks). The denominator is
    the span's full length, so audio missing from it counts as no speech."""
    if hi_s <= lo_s:
        return 0.0
    mask = speech_mask(wave, sample_rate_hz, frame_s)
    if mask.size == 0:
        return 0.0
    frame = max(16, int(round(frame_s * sample_rate_hz)))
    centres_s = (np.arange(mask.size) * frame + frame / 2) / sample_rate_hz
    inside = (centres_s >= lo_s) & (centres_s < hi_s)
    return float(np.clip(mask[inside].sum() * frame / sample_rate_hz / (hi_s - lo_s), 0, 1))

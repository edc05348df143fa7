"""Loading speech audio and scoring it with the audio CNN over windows.

Emotion in speech needs a few seconds of context, so a long input is cut into windows of the
model's ``window_s`` (3 s) every ``hop_s`` (1 s by default), each window is scored, and clip-level
probabilities are the mean of the windows' softmax outputs. The last window is aligned to the end
of the input so no tail is left unscored; an input shorter than one window is scored whole.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from emotion_pipeline.errors import InputError

DEFAULT_HOP_S = 1.0   # one score per second matches the pipeline's per-second timeline
BATCH_WINDOWS = 32    # windows per forward pass: 32 x 3 s x 16 kHz floats is ~6 MB of input


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling with soxr (a librosa dependency; librosa.resample's first call
    costs ~5 s of set-up here, soxr's ~1 ms)."""
    if orig_sr == target_sr:
        return wave
    try:
        import soxr
        return soxr.resample(wave, orig_sr, target_sr, quality="HQ").astype(np.float32)
    except ImportError:
        import librosa
        return librosa.resample(wave, orig_sr=orig_sr, target_sr=target_sr)


def load_audio_file(path: str | Path, sample_rate_hz: int = 16000) -> np.ndarray:
    """Any file soundfile (or librosa's fallback) can read -> mono float32 at ``sample_rate_hz``."""
    import soundfile as sf

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
    except (RuntimeError, sf.LibsndfileError):  # formats libsndfile lacks (mp3/m4a via audioread)
        import librosa
        try:
            wave, sr = librosa.load(str(path), sr=None, mono=True)
        except Exception as e:  # audioread raises NoBackendError with an empty message
            raise InputError(f"{path}: not a readable audio file ({type(e).__name__})") from e
    wave = resample(wave, sr, sample_rate_hz)
    return np.ascontiguousarray(wave, dtype=np.float32)


def _module(model) -> torch.nn.Module:
    """Accept an AudioCNN or a models.registry.LoadedModel wrapping one."""
    return getattr(model, "module", model)


def _to_model_rate(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:  # (samples, channels) or (channels, samples): average the shorter axis
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    return resample(wave, sr, target)


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start samples of windows covering [0, n_samples); the last one ends at n_samples."""
    if n_samples <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - window + 1, hop, dtype=np.int64)
    if starts[-1] + window < n_samples:
        starts = np.append(starts, n_samples - window)
    return starts


@torch.no_grad()
def score_windows(model, wave: np.ndarray, sr: int, window_s: float | None = None,
                  hop_s: float = DEFAULT_HOP_S) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score windows of a wave: (starts_s (W,), probs (W, 7), embeddings (W, D)).

    ``window_s`` defaults to the model's own ``config.window_s``.
    """
    net = _module(model)
    cfg = net.config
    rate = cfg.sample_rate_hz
    wave = _to_model_rate(wave, sr, rate)
    window = int(round((window_s or cfg.window_s) * rate))
    hop = max(1, int(round(hop_s * rate)))
    starts = window_starts(len(wave), window, hop)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    probs, embs = [], []
    try:
        for i in range(0, len(starts), BATCH_WINDOWS):
            batch = np.stack([wave[s:s + window] for s in starts[i:i + BATCH_WINDOWS]])
            logits, emb = net.forward_with_embedding(torch.from_numpy(batch).to(device))
            probs.append(torch.softmax(logits, dim=-1).cpu().numpy())
            embs.append(emb.cpu().numpy())
    finally:
        net.train(was_training)
    return (starts / rate).astype(np.float64), np.concatenate(probs).astype(np.float32), \
        np.concatenate(embs).astype(np.float32)


def score_clip(model, wave: np.ndarray, sr: int, hop_s: float = DEFAULT_HOP_S) -> np.ndarray:
    """Clip-level probabilities (7,): the mean of the per-window probabilities."""
    _, probs, _ = score_windows(model, wave, sr, hop_s=hop_s)
    return probs.mean(axis=0)

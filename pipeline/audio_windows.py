"""Loading speech audio and cutting it into the windows an audio model scores.

Emotion in speech needs a few seconds of context, so audio is scored on windows of the model's
``window_s`` (3 s), never zero-padded (that would shift the model's per-window normalisation):

- a clip (``predict_windows``, ``score_windows``, ``score_clip``): windows every ``hop_s`` (1 s
  by default), the last one aligned to the end of the input so no tail is left unscored; an
  input shorter than one window is scored whole. Clip-level probabilities are the mean of the
  windows' softmax outputs (evaluation, training, the fusion head's features);
- a stream (``second_windows``): one window centred on each second of the timeline, cut from
  chunks as they come with a bounded buffer (the analyzer and the live mode).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from emotion_pipeline.errors import InputError
from emotion_pipeline.models import SAMPLE_RATE_HZ
from emotion_pipeline.records import AudioChunk

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


def load_audio_file(path: str | Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
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


def predict_windows(predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], wave: np.ndarray,
                    window: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A clip's windows of ``window`` samples every ``hop`` (``window_starts``) through ``predict``
    ((B, window) float32 -> (probs (B, 7), embeddings (B, D))), BATCH_WINDOWS at a time:
    (start samples (W,), probs (W, 7), embeddings (W, D))."""
    starts = window_starts(len(wave), window, hop)
    probs, embs = zip(*(predict(np.stack([wave[s:s + window] for s in starts[i:i + BATCH_WINDOWS]]))
                        for i in range(0, len(starts), BATCH_WINDOWS)))
    return starts, np.concatenate(probs), np.concatenate(embs)


@torch.no_grad()
def score_windows(model, wave: np.ndarray, sr: int, window_s: float | None = None,
                  hop_s: float = DEFAULT_HOP_S) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score windows of a wave with an audio CNN: (starts_s (W,), probs (W, 7), embeddings (W, D)).

    ``window_s`` defaults to the model's own ``config.window_s``.
    """
    net = _module(model)
    cfg = net.config
    rate = cfg.sample_rate_hz
    device = next(net.parameters()).device

    def predict(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = net.forward_with_embedding(torch.from_numpy(batch).to(device))
        return torch.softmax(logits, dim=-1).cpu().numpy(), emb.cpu().numpy()

    was_training = net.training
    net.eval()
    try:
        starts, probs, embs = predict_windows(predict, _to_model_rate(wave, sr, rate),
                                              int(round((window_s or cfg.window_s) * rate)),
                                              max(1, int(round(hop_s * rate))))
    finally:
        net.train(was_training)
    return (starts / rate).astype(np.float64), probs.astype(np.float32), embs.astype(np.float32)


def score_clip(model, wave: np.ndarray, sr: int, hop_s: float = DEFAULT_HOP_S) -> np.ndarray:
    """Clip-level probabilities (7,): the mean of the per-window probabilities."""
    _, probs, _ = score_windows(model, wave, sr, hop_s=hop_s)
    return probs.mean(axis=0)


def second_windows(chunks: Iterable[AudioChunk], n_seconds: int,
                   window_s: float) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(second, the window of ``window_s`` centred on it, the second's own samples) for each second
    of a stream of chunks, with a bounded buffer. Near the start the window is cut at sample 0; at
    the end of the stream it is shifted back so that it stays ``window_s`` long where it can."""
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0            # sample index of buf[0]
    sr = None
    second = 0
    half = window_s / 2

    def cut(sec: int, end_of_stream_at: int | None):
        lo = max(0, int(round((sec + 0.5 - half) * sr)))
        hi = int(round((sec + 0.5 + half) * sr))
        if end_of_stream_at is not None:
            hi = min(hi, end_of_stream_at)
            lo = max(0, min(lo, hi - int(window_s * sr)))  # keep a full window at the end of the clip
        own = buf[max(0, sec * sr - buf_start): max(0, (sec + 1) * sr - buf_start)]
        return buf[lo - buf_start: hi - buf_start], own

    for chunk in chunks:
        sr = chunk.sample_rate_hz
        buf = np.concatenate([buf, chunk.samples])
        while second < n_seconds and buf_start + len(buf) >= int(round((second + 0.5 + half) * sr)):
            window, own = cut(second, None)
            yield second, window, own
            second += 1
            keep_from = max(0, int(round((second + 0.5 - half) * sr)) - int(window_s * sr))
            if keep_from > buf_start:
                buf, buf_start = buf[keep_from - buf_start:], keep_from
    if sr is None:
        return
    end = buf_start + len(buf)
    while second < n_seconds and second * sr < end:
        window, own = cut(second, end)
        yield second, window, own
        second += 1

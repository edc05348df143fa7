"""Loading speech audio and cutting it into the windows an audio model scores.

Emotion in speech needs a few seconds of context, so audio is scored on windows of the model's
``window_s`` (3 s), never zero-padded (that would shift the model's per-window normalisation):

- a clip (``predict_windows``, ``score_windows``, ``score_clip``): windows every ``hop_s`` (1 s
  by default), the last one aligned to the end of the input so no tail is left unscored; an
  input shorter than one window is scored whole. Clip-level probabilities are the mean of the
  windows' softmax outputs (evaluation, training, the fusion head's features);
- a stream (``SecondCutter``): one window centred on each second of the timeline, cut from
  chunks as they come with a bounded buffer (``seconds.VoiceSeconds``: the analyzer and live).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from emotion_pipeline.errors import InputError
from emotion_pipeline.models import SAMPLE_RATE_HZ

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


@dataclass(frozen=True)
class VoiceWindow:
    """The audio behind one second of the timeline."""
    second: int
    window: np.ndarray               # (n,) float32: ``window_s`` centred on the second (cut at 0, shifted back at the end)
    start_sample: int                # where the window starts in the stream
    own_samples: int                 # samples of the second itself that arrived
    speech_fraction: float | None    # share of the second that is speech (``vad.speech_fraction_in``); None without VAD


class SecondCutter:
    """16 kHz samples as they come (any chunking: a 30 s chunk or a 64 ms AAC frame give the same
    result) -> one ``VoiceWindow`` per second once the audio up to its window's end has arrived.

    With ``vad_context_s`` the second's speech fraction is judged by the VAD over the
    ``vad_context_s`` of audio ending where the second's window ends, the same slice whether a
    file or a stream feeds it. Memory: that context (or twice the window) plus one chunk."""

    def __init__(self, window_s: float, sample_rate_hz: int = SAMPLE_RATE_HZ, *, vad_context_s: float | None = None):
        self.window_s, self.sr, self.vad_context_s = window_s, sample_rate_hz, vad_context_s
        self.buf = np.zeros(0, dtype=np.float32)
        self.buf_start = 0          # sample index of buf[0]
        self.next_second = 0        # the next second to cut

    @property
    def end(self) -> int:
        """Samples received so far."""
        return self.buf_start + len(self.buf)

    def _hi(self, sec: int) -> int:
        return int(round((sec + 0.5 + self.window_s / 2) * self.sr))

    def _cut(self, sec: int, end_of_stream_at: int | None) -> VoiceWindow:
        sr = self.sr
        lo = max(0, int(round((sec + 0.5 - self.window_s / 2) * sr)))
        hi = self._hi(sec)
        if end_of_stream_at is not None:
            hi = min(hi, end_of_stream_at)
            lo = max(0, min(lo, hi - int(self.window_s * sr)))  # keep a full window at the end of the clip
        b = self.buf_start
        assert lo >= b, (sec, lo, b)
        own = max(0, min((sec + 1) * sr, self.end) - max(sec * sr, b))
        fraction = None
        if self.vad_context_s is not None:
            from emotion_pipeline.vad import speech_fraction_in
            ctx_lo = max(0, hi - int(round(self.vad_context_s * sr)))
            assert ctx_lo >= b, (sec, ctx_lo, b)
            fraction = speech_fraction_in(self.buf[ctx_lo - b: hi - b], sr, sec - ctx_lo / sr, sec + 1 - ctx_lo / sr)
        return VoiceWindow(sec, self.buf[lo - b: hi - b].copy(), lo, int(own), fraction)

    def _keep_from(self, sec: int) -> int:
        keep = int(round((sec + 0.5 - self.window_s / 2) * self.sr)) - int(self.window_s * self.sr)
        if self.vad_context_s is not None:   # at the end a window ends early, never before the last cut one's end
            keep = min(keep, self._hi(sec - 1) - int(round(self.vad_context_s * self.sr)))
        return max(0, keep)

    def push(self, samples: np.ndarray) -> list[VoiceWindow]:
        self.buf = np.concatenate([self.buf, np.asarray(samples, dtype=np.float32).reshape(-1)])
        out = []
        while self.end >= self._hi(self.next_second):
            out.append(self._cut(self.next_second, None))
            self.next_second += 1
            keep_from = self._keep_from(self.next_second)
            if keep_from > self.buf_start:
                self.buf, self.buf_start = self.buf[keep_from - self.buf_start:], keep_from
        return out

    def finish(self) -> list[VoiceWindow]:
        """The seconds still open at the end of the stream (their windows shifted back)."""
        out = []
        end = self.end
        while self.next_second * self.sr < end:
            out.append(self._cut(self.next_second, end))
            self.next_second += 1
        return out



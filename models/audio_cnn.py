"""Speech emotion CNN that takes raw 16 kHz waveform and returns logits over pipeline.labels.LABELS.

The log-mel front end lives inside the module (plain torch: ``torch.stft`` + a librosa mel
filterbank kept as a non-persistent buffer), so callers only hand over samples:

    wave (N, samples) float32 at 16 kHz  ->  log-mel (N, 1, n_mels, frames)  ->  CNN  ->  logits (N, 7)

Per-utterance normalisation (the log-mel's mean removed, then divided by its standard deviation)
makes the model insensitive to input gain.
The CNN ends in global pooling over time and frequency, so any input length works; inputs shorter
than ``min_input_s`` are zero-padded to it. Clip-level scoring over windows of ``window_s`` is in
``pipeline.audio_windows``. The constructor never downloads anything. Training-time augmentation of
these inputs (``AudioAugment``: crops, gain and noise of the wave; SpecAugment of the log-mel) is here too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from emotion_pipeline.labels import NUM_LABELS
from emotion_pipeline.models import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class AudioCNNConfig:
    sample_rate_hz: int = SAMPLE_RATE_HZ   # the shared speech data is 16 kHz mono (shared/data/README.md)
    n_fft: int = 512              # 32 ms analysis frame at 16 kHz, the usual speech STFT size
    hop: int = 160                # 10 ms hop: 100 frames per second
    n_mels: int = 64              # 64 bands up to 8 kHz: common for small speech-emotion CNNs
    f_min_hz: float = 50.0        # below the lowest male F0 (~80 Hz); cuts mains hum
    f_max_hz: float = 8000.0      # Nyquist at 16 kHz
    window_s: float = 3.0         # analysis window the model was trained on; RAVDESS clips are
                                  # 2.9-5.3 s with ~1 s silence each end, so 3 s holds the sentence
    min_input_s: float = 0.5      # shorter inputs are zero-padded to this (4 poolings need >= 16 frames)
    channels: tuple[int, ...] = (16, 32, 64, 128)  # conv widths, one 2x2 max-pool after each; 4x
                                  # cheaper than (32..256) and as good per epoch in trials here
    embedding_dim: int = 128      # size of the vector forward_with_embedding returns
    dropout: float = 0.3
    norm: str = "global"          # "global": remove the spectrogram's single mean; "band": remove
                                  # each band's mean over time (cancels channel colouring but also
                                  # the spectral tilt emotion shows in; val UAR after 6 epochs here
                                  # 0.37 global vs 0.33 band). Both then divide by the std.
    num_labels: int = NUM_LABELS
    pool: str = "max"             # max: 2x2 max-pools (audio-cnn 1.0.0); blur: anti-aliased (_BlurMaxPool),
                                  # less sensitive to where a window falls (bench/audio_shift.py)

    def __post_init__(self):
        # JSON metadata gives a list back; keep the frozen dataclass hashable-ish and comparable.
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.pool not in ("max", "blur"):
            raise ValueError(f"pool must be max or blur, got {self.pool!r}")


@dataclass(frozen=True)
class AudioAugment:
    """Training-time augmentation of the model's inputs (``augment_waves``, ``spec_augment``)."""
    gain_db: float = 6.0            # random gain +-6 dB
    noise_prob: float = 0.3         # white noise on 30% of the crops ...
    snr_db: tuple[float, float] = (10.0, 35.0)  # ... at 10-35 dB SNR
    freq_masks: int = 2             # SpecAugment: 2 masks of <= 8 mel bands and 2 of <= 20 frames
    freq_mask_width: int = 8
    time_masks: int = 2
    time_mask_width: int = 20


def augment_waves(waves: Sequence[np.ndarray], config: AudioCNNConfig, aug: AudioAugment,
                  rng: np.random.Generator) -> torch.Tensor:
    """Random crops of the model's ``window_s`` (time shift), gain and additive noise: (N, window samples)."""
    window = int(config.window_s * config.sample_rate_hz)
    out = np.zeros((len(waves), window), dtype=np.float32)
    for i, w in enumerate(waves):
        if len(w) >= window:
            s = rng.integers(0, len(w) - window + 1)
            out[i] = w[s:s + window]
        else:  # shorter clip: place it at a random offset in the window
            s = rng.integers(0, window - len(w) + 1)
            out[i, s:s + len(w)] = w
        out[i] *= 10 ** (rng.uniform(-aug.gain_db, aug.gain_db) / 20)
        if rng.random() < aug.noise_prob:
            rms = float(np.sqrt(np.mean(out[i] ** 2)) + 1e-8)
            out[i] += rng.standard_normal(window).astype(np.float32) * rms / (10 ** (rng.uniform(*aug.snr_db) / 20))
    return torch.from_numpy(out)


def spec_augment(feats: torch.Tensor, aug: AudioAugment) -> torch.Tensor:
    """SpecAugment with torch's RNG: zero (= the mean after normalisation) random mel bands and frame
    ranges of ``features``' output (N, 1, mels, frames), per example."""
    n, _, mels, frames = feats.shape
    feats = feats.clone()
    for i in range(n):
        for _ in range(aug.freq_masks):
            w = int(torch.randint(0, aug.freq_mask_width + 1, (1,)))
            f0 = int(torch.randint(0, max(1, mels - w), (1,)))
            feats[i, :, f0:f0 + w, :] = 0
        for _ in range(aug.time_masks):
            w = int(torch.randint(0, aug.time_mask_width + 1, (1,)))
            t0 = int(torch.randint(0, max(1, frames - w), (1,)))
            feats[i, :, :, t0:t0 + w] = 0
    return feats


class _BlurMaxPool(nn.Module):
    """Anti-aliased 2x2 max-pool (Zhang, "Making convolutional networks shift-invariant again",
    ICML 2019): the max over 2x2 at stride 1, then a 3x3 binomial low-pass at stride 2. No weights."""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).expand(channels, 1, 3, 3).contiguous(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=x.shape[1])


class _ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, pool: str = "max"):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True) if pool == "max" else _BlurMaxPool(c_out),
        )


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear to 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mels = f / (200.0 / 3)
    log_region = f >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters, Slaney-normalised: the same matrix as
    ``librosa.filters.mel`` with its defaults (tests compare them), without importing librosa
    (whose scipy.signal import costs over a second of start-up)."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


class AudioCNN(nn.Module):
    def __init__(self, config: AudioCNNConfig = AudioCNNConfig()):
        super().__init__()
        self.config = config
        mel = mel_filterbank(config.sample_rate_hz, config.n_fft, config.n_mels,
                             config.f_min_hz, config.f_max_hz)  # (n_mels, n_fft//2+1)
        # Non-persistent: rebuilt from the config, never stored in weight files.
        self.register_buffer("mel_fb", torch.from_numpy(mel.astype(np.float32)), persistent=False)
        self.register_buffer("stft_window", torch.hann_window(config.n_fft), persistent=False)
        blocks, c_in = [], 1
        for c_out in config.channels:
            blocks.append(_ConvBlock(c_in, c_out, config.pool))
            c_in = c_out
        self.cnn = nn.Sequential(*blocks)
        self.embed = nn.Sequential(nn.Linear(2 * c_in, config.embedding_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.embedding_dim, config.num_labels)

    # --- front end -----------------------------------------------------------------------
    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Raw wave (N, samples) or (samples,) -> normalised log-mel (N, 1, n_mels, frames)."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        wave = wave.to(self.mel_fb.dtype)
        min_len = max(int(self.config.min_input_s * self.config.sample_rate_hz), self.config.n_fft)
        if wave.shape[-1] < min_len:
            wave = F.pad(wave, (0, min_len - wave.shape[-1]))
        wave = wave - wave.mean(dim=-1, keepdim=True)  # DC offset
        spec = torch.stft(wave, n_fft=self.config.n_fft, hop_length=self.config.hop,
                          window=self.stft_window, center=True, return_complex=True)
        power = spec.real.square() + spec.imag.square()           # (N, freq, frames)
        logmel = torch.log(torch.matmul(self.mel_fb, power) + 1e-8)
        if self.config.norm == "band":
            logmel = logmel - logmel.mean(dim=-1, keepdim=True)    # per-band mean over time
        else:
            logmel = logmel - logmel.mean(dim=(-2, -1), keepdim=True)
        std = logmel.flatten(1).std(dim=1).clamp_min(1e-3)          # silence -> all zeros, not NaN
        return (logmel / std[:, None, None]).unsqueeze(1)

    # --- classifier ----------------------------------------------------------------------
    def classify(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised log-mel (N, 1, mels, frames) -> (logits (N, 7), embedding (N, D))."""
        x = self.cnn(feats).mean(dim=2)                 # average over frequency -> (N, C, T')
        x = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)  # global pooling over time
        emb = self.embed(x)
        return self.classifier(self.dropout(emb)), emb

    def forward_with_embedding(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classify(self.features(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(wave)[0]

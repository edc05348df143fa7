"""The three modality encoders behind one interface.

Each model is wrapped in a ``Predictor``: ``predict(batch) -> (probs (N,7) over LABELS,
embeddings (N,D))`` plus ``describe()`` for the run record. The encoders turn a modality's
stream into per-second ``ModalityScores`` (or None where the modality is missing):

- FaceEncoder: sampled frames -> detection -> tracking -> aligned crops -> CNN, per identity;
- AudioEncoder: 16 kHz chunks -> a window of context centred on each second -> model, VAD-gated;
- TextEncoder: transcript words on the grid -> the words around each second -> text model.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

import numpy as np
import torch

from emotion_pipeline.audio_windows import second_windows
from emotion_pipeline.models import SAMPLE_RATE_HZ, face_cnn, registry
from emotion_pipeline.models.contract import InputContract
from emotion_pipeline.faces import FACE_CROP_PX, FaceDetector, FaceTracker, aligned_crop
from emotion_pipeline.labels import LABELS
from emotion_pipeline.records import AudioChunk, FaceObservation, Frame, ModalityScores, Transcript

log = logging.getLogger(__name__)


class Predictor(Protocol):
    def predict(self, batch: Any) -> tuple[np.ndarray, np.ndarray]: ...
    def describe(self) -> dict[str, Any]: ...


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float32)


@dataclass
class _Shipped:
    """A model loaded through models.registry, with the input contract it carries."""
    loaded: registry.LoadedModel
    device: torch.device

    @property
    def contract(self) -> InputContract:
        return self.loaded.contract

    def describe(self) -> dict[str, Any]:
        return self.loaded.describe()


@dataclass
class ShippedFace(_Shipped):
    """The face CNN through ``models.face_cnn.predict`` (grey conversion, 48 px, centre crop, and
    the test-time augmentation ``tta``: by default ``DEFAULT_TTA``, the crop and its mirror)."""
    tta: str | None = face_cnn.DEFAULT_TTA

    def __post_init__(self):
        self.tta = face_cnn.tta_mode(self.tta)

    def describe(self) -> dict[str, Any]:
        return {**self.loaded.describe(), "tta": self.tta}

    def predict(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = face_cnn.predict(self.loaded.module, crops_bgr, tta=self.tta)
        return _softmax(logits), emb.float().numpy()


DEFAULT_AUDIO_WINDOW_S = 3.0  # speech emotion needs a few seconds of context (a sentence)


def audio_window_s(predictor: Predictor, configured: float | None = None) -> float:
    """Seconds of audio per scored window: the configured value, else the model's own input
    contract (our audio CNN states one), else DEFAULT_AUDIO_WINDOW_S (hub models state none)."""
    contract = getattr(predictor, "contract", None)
    return configured or getattr(contract, "window_s", None) or DEFAULT_AUDIO_WINDOW_S


class ShippedAudio(_Shipped):
    @property
    def window_s(self) -> float:
        return float(self.contract.window_s or DEFAULT_AUDIO_WINDOW_S)

    def predict(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            logits, emb = self.loaded.module.forward_with_embedding(x)
        return _softmax(logits), emb.float().cpu().numpy()


class ShippedText(_Shipped):
    def predict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.loaded.module.predict(list(texts))


class HubClassifier(_Shipped):
    """A Hugging Face classifier of models.hf_* (arch ``hf_face``, ``hf_audio``, ``hf_text``): its
    ``predict`` already reads its checkpoint's processor config and maps its classes onto LABELS."""

    def predict(self, batch):
        return self.loaded.module.predict(batch)


# LoadedModel.arch -> its predictor: what the model is is data in the record, not a type to test
PREDICTORS: dict[str, type[_Shipped]] = {"face_cnn": ShippedFace, "audio_cnn": ShippedAudio, "text_minilm": ShippedText,
                                         **{arch: HubClassifier for arch in registry.HUB_ARCH.values()}}


def load_predictor(modality: str, name: str, *, device: torch.device, offline: bool) -> Predictor:
    """The ``modality`` model ``name`` (a registry name, a .safetensors file, a Hugging Face repo id
    or folder) through ``models.registry.load`` (which checks its contract), behind the Predictor
    interface."""
    if modality not in registry.HUB_ARCH:
        raise ValueError(f"modality {modality!r}: choose from {', '.join(registry.HUB_ARCH)}")
    loaded = registry.load(name, kind=modality, device=device, offline=offline)
    return PREDICTORS[loaded.arch](loaded, device)


def _entry(probs: np.ndarray, emb: np.ndarray | None, **details) -> ModalityScores:
    probs = np.asarray(probs, dtype=np.float32)
    return ModalityScores(probs=probs / max(float(probs.sum()), 1e-8), embedding=emb, details=details)


class FaceEncoder:
    def __init__(self, predictor: Predictor, detector: FaceDetector, *, batch_size: int = 64,
                 primary_face: str = "dominant"):
        self.predictor, self.detector = predictor, detector
        self.batch_size, self.primary_face = batch_size, primary_face

    def observe(self, frames: Iterable[Frame], tracker: FaceTracker | None = None) -> tuple[list[FaceObservation], FaceTracker, int]:
        """Detect, track and classify every face in the frames; crops go through the CNN in batches.
        ``tracker``: carry identities over from earlier frames (the live mode feeds a second at a time)."""
        tracker = tracker if tracker is not None else FaceTracker()
        pending: list[tuple[float, int, Any, np.ndarray]] = []
        observations: list[FaceObservation] = []
        n_frames = 0

        def flush():
            if not pending:
                return
            probs, embs = self.predictor.predict(np.stack([p[3] for p in pending]))
            for (t, fid, box, _), p, e in zip(pending, probs, embs):
                observations.append(FaceObservation(t, fid, box, p, e))
            pending.clear()

        for frame in frames:
            n_frames += 1
            boxes = self.detector.detect(frame.image)
            for box, fid in zip(boxes, tracker.update(frame.t_s, boxes)):
                pending.append((frame.t_s, fid, box, aligned_crop(frame.image, box, FACE_CROP_PX)))
            if len(pending) >= self.batch_size:
                flush()
        flush()
        return observations, tracker, n_frames

    def _primary(self, tracker: FaceTracker, observations: list[FaceObservation]) -> int | None:
        if self.primary_face == "dominant":
            return tracker.dominant_id()
        if self.primary_face == "largest":
            return max(observations, key=lambda o: o.box.area).face_id if observations else None
        return int(self.primary_face)

    def per_second(self, observations: list[FaceObservation], tracker: FaceTracker, n_seconds: int) -> list[ModalityScores | None]:
        primary = self._primary(tracker, observations)
        by_second: dict[int, list[FaceObservation]] = defaultdict(list)
        for obs in observations:
            by_second[min(int(obs.t_s), n_seconds - 1)].append(obs)
        out: list[ModalityScores | None] = []
        for second in range(n_seconds):
            obs = by_second.get(second, [])
            if not obs:
                out.append(None)
                continue
            ids = sorted({o.face_id for o in obs})
            per_id = {}
            for fid in ids:
                mine = [o for o in obs if o.face_id == fid]
                p = np.mean([o.probs for o in mine], axis=0)
                per_id[fid] = (p, np.mean([o.embedding for o in mine], axis=0), mine)
            # the configured face when it is on screen, else the largest one this second
            chosen = primary if primary in per_id else max(ids, key=lambda f: np.mean([o.box.area for o in per_id[f][2]]))
            p, emb, _ = per_id[chosen]
            n_faces = max(sum(1 for o in obs if o.t_s == t) for t in {o.t_s for o in obs})
            faces = [{"face_id": fid, "label": LABELS[int(np.argmax(v[0]))],
                      "scores": {l: round(float(x), 4) for l, x in zip(LABELS, v[0])},
                      "frames": len(v[2])} for fid, v in per_id.items()]
            out.append(_entry(p, emb, n_faces=int(n_faces), face_id=int(chosen), faces=faces))
        return out


class AudioEncoder:
    """Per-second audio scores: VAD over each streamed chunk (its statistics need seconds of
    context, so it never judges one second alone), then the model on a window centred on
    every second with enough speech. Windows of equal length are batched together: zero-padding
    would shift the model's per-window normalisation."""

    def __init__(self, predictor: Predictor, *, window_s: float, min_speech_fraction: float, batch_size: int = 16):
        self.predictor, self.window_s = predictor, window_s
        self.min_speech_fraction, self.batch_size = min_speech_fraction, batch_size

    def per_second(self, chunks: Iterable[AudioChunk], n_seconds: int) -> list[ModalityScores | None]:
        from emotion_pipeline.vad import speech_fraction_per_second

        out: list[ModalityScores | None] = [None] * n_seconds
        fractions = np.zeros(n_seconds, dtype=np.float32)
        pending: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)   # window length -> items

        def with_vad(stream: Iterable[AudioChunk]) -> Iterator[AudioChunk]:
            for chunk in stream:
                first = int(round(chunk.start_s))
                frac = speech_fraction_per_second(chunk.samples, chunk.sample_rate_hz,
                                                  len(chunk.samples) / chunk.sample_rate_hz)
                frac = frac[:max(0, n_seconds - first)]
                fractions[first:first + len(frac)] = frac
                yield chunk

        def flush(length: int):
            items = pending.pop(length, [])
            if not items:
                return
            probs, embs = self.predictor.predict(np.stack([w for _, w in items]))
            for (sec, _), p, e in zip(items, probs, embs):
                out[sec] = _entry(p, e, speech_fraction=round(float(fractions[sec]), 3))

        for second, window, own in second_windows(with_vad(chunks), n_seconds, self.window_s):
            if len(own) < SAMPLE_RATE_HZ // 10 or fractions[second] < self.min_speech_fraction:
                continue  # silence, music, noise, or a sliver of a second: audio stays null
            pending[len(window)].append((second, window))
            if len(pending[len(window)]) >= self.batch_size:
                flush(len(window))
        for length in list(pending):
            flush(length)
        return out


def words_per_second(transcript: Transcript, n_seconds: int) -> list[list[str]]:
    """Each word lands in the second that holds its midpoint."""
    grid: list[list[str]] = [[] for _ in range(n_seconds)]
    for seg in transcript.segments:
        for w in seg.words:
            sec = int((w.start_s + w.end_s) / 2)
            if 0 <= sec < n_seconds:
                grid[sec].append(w.text)
    return grid


class TextEncoder:
    def __init__(self, predictor: Predictor, *, context_s: float, english_only: bool = True):
        self.predictor, self.context_s, self.english_only = predictor, context_s, english_only

    def per_second(self, transcript: Transcript, n_seconds: int) -> list[ModalityScores | None]:
        grid = words_per_second(transcript, n_seconds)
        ctx = int(round(self.context_s))
        contexts: dict[int, str] = {}
        for sec, words in enumerate(grid):
            if words:
                lo, hi = max(0, sec - ctx), min(n_seconds, sec + ctx + 1)
                contexts[sec] = " ".join(w for s in range(lo, hi) for w in grid[s]).strip()
        unique = sorted(set(contexts.values()))
        out: list[ModalityScores | None] = [None] * n_seconds
        if not unique:
            return out
        probs, embs = self.predictor.predict(unique)
        index = {t: i for i, t in enumerate(unique)}
        for sec, text in contexts.items():
            i = index[text]
            out[sec] = _entry(probs[i], embs[i], words=" ".join(grid[sec]), context=text)
        return out

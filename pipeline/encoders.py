"""The three modality encoders behind one interface.

Each model is wrapped in a ``Predictor``: ``predict(batch) -> (probs (N,7) over LABELS,
embeddings (N,D))`` plus ``describe()`` for the run record. The encoders turn a modality's
stream into per-second ``ModalityScores`` (or None where the modality is missing):

- FaceEncoder: sampled frames -> detection -> tracking -> aligned crops -> CNN, per identity; with
  ``FaceExpressions``, the face landmarker on the same crops (per-second mean blendshapes per face)
  and the blendshape expert's probabilities combined with the CNN's;
- AudioEncoder: 16 kHz chunks -> a window of context centred on each second -> model, VAD-gated;
- TextEncoder: transcript words on the grid -> the words around each second -> text model.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

import numpy as np
import torch

from emotion_pipeline.models import face_cnn, registry
from emotion_pipeline.models.contract import InputContract
from emotion_pipeline.faces import DETECT_FACE_PX, FACE_CROP_PX, FaceDetector, FaceTracker, ScaledDetection, aligned_crop
from emotion_pipeline.labels import LABELS
from emotion_pipeline.records import FaceObservation, Frame, ModalityScores, Transcript

if TYPE_CHECKING:
    from emotion_pipeline.landmarks import FaceLandmarker

log = logging.getLogger(__name__)


class Predictor(Protocol):
    def predict(self, batch: Any) -> tuple[np.ndarray, np.ndarray]: ...
    def describe(self) -> dict[str, Any]: ...


def probabilities(predictor: Predictor, batch: Any, batch_size: int = 256) -> np.ndarray:
    """float32 (N, 7): ``predictor``'s probabilities for every item of ``batch`` (face crops,
    windows, texts), ``batch_size`` at a time (the evaluators', trainers' and benches' one loop)."""
    return np.concatenate([predictor.predict(batch[i:i + batch_size])[0] for i in range(0, len(batch), batch_size)])


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
    precision: str = "auto"    # face_cnn.PRECISIONS setting; face_cnn.predict resolves "auto", describe() records the result

    def __post_init__(self):
        self.tta = face_cnn.tta_mode(self.tta)
        face_cnn.resolve_precision(self.precision)   # an unknown setting fails here, not at the first face

    def describe(self) -> dict[str, Any]:
        return {**self.loaded.describe(), "tta": self.tta,
                "precision": face_cnn.resolve_precision(self.precision, self.device)}

    def predict(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, emb = face_cnn.predict(self.loaded.module, crops_bgr, tta=self.tta, precision=self.precision)
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


EXPRESSION_DECIMALS = 4


class FaceExpressions:
    """The face landmarker (``pipeline.landmarks``) on the face CNN's crops and, with ``expert``,
    the blendshape expert (``models.blendshape_expert``), whose probabilities the face modality
    combines with the CNN's: ``(1 - weight) * CNN + weight * expert`` per face and second, over the
    frames the landmarker read. ``every``: the landmarker reads the 1st, (1 + every)th, ... sampled
    frame of each face in a second (``face_expression_per_second``: at its ~9 ms of CPU per crop the
    face stage's budget allows 2 of the 4 sampled frames a second; README "Speed")."""

    def __init__(self, landmarker: "FaceLandmarker", expert: registry.LoadedModel | None = None,
                 weight: float = 0.0, every: int = 1):
        self.landmarker, self.expert, self.weight, self.every = landmarker, expert, float(weight), int(every)

    def read(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(blendshapes (N, 52), expert probabilities (N, 7) or None without an expert, found (N,) bool)."""
        from emotion_pipeline.landmarks import readings
        from emotion_pipeline.models.blendshape_expert import probs_of_readings

        r = readings(self.landmarker.read(crops_bgr))
        probs = None if self.expert is None else probs_of_readings(self.expert.module, r.blendshapes, r.landmarks, r.found)
        return r.blendshapes, probs, r.found

    def describe(self) -> dict[str, Any]:
        from emotion_pipeline.models import sources

        out: dict[str, Any] = {"name": "face-landmarker" + (f" + {self.expert.name}" if self.expert else ""),
                               "landmarker": {"name": self.landmarker.name,
                                              "sha256": sources.sha256_file(self.landmarker.path)},
                               "every": self.every}
        if self.expert is not None:
            out["version"] = self.expert.meta.get("version")
            out["expert"] = {**self.expert.describe(), "weight": self.weight}
        return out


def load_expressions(setting: str, expert: str, weight: float | None, every: int, *,
                     offline: bool) -> tuple[FaceExpressions | None, str | None]:
    """(FaceExpressions, None), or (None, why not) for the ``face_expression`` setting ``setting``:
    off; on (a landmarker that cannot be had is an error); auto (then it is said why, and the face
    modality is the CNN's alone). ``expert``: a blendshape expert's registry name or file, or none;
    ``weight``: its weight in the combination, None for the one recorded in its file. A tampered
    file (ChecksumError) stops the run in every setting."""
    if setting == "off":
        return None, "face_expression: off"
    from emotion_pipeline.landmarks import load_landmarker

    try:
        landmarker = load_landmarker(offline=offline)
    except registry.ModelUnavailableError as e:
        if setting == "on":
            raise
        why = " ".join(str(e).split())
        log.warning("face expressions off: %s", why)
        return None, why
    loaded = None
    if expert.lower() != "none":
        loaded = registry.load(expert, kind="expression", offline=offline)
        if weight is None:
            weight = float((loaded.meta.get("combination") or {}).get("weight", 0.0))
    return FaceExpressions(landmarker, loaded, weight or 0.0, every), None


class FaceEncoder:
    def __init__(self, predictor: Predictor, detector: FaceDetector, *, batch_size: int = 64,
                 primary_face: str = "dominant", expressions: FaceExpressions | None = None,
                 detect_face_px: int = DETECT_FACE_PX):
        self.predictor, self.detector = predictor, detector
        self.batch_size, self.primary_face = batch_size, primary_face
        self.expressions = expressions
        self.detect_face_px = detect_face_px     # faces.ScaledDetection; 0: every frame searched at full size

    def observe(self, frames: Iterable[Frame], tracker: FaceTracker | None = None, *,
                watchers: Iterable[Callable[[Frame, list, list[int]], None]] = ()
                ) -> tuple[list[FaceObservation], FaceTracker, int]:
        """Detect, track and classify every face in the frames; crops go through the CNN in batches.
        ``tracker``: carry identities over from earlier frames (the live mode feeds a second at a time).
        ``watchers``: called with each frame, its boxes and their face_ids (people.IdentitySampler)."""
        watchers = tuple(watchers)
        tracker = tracker if tracker is not None else FaceTracker()
        pending: list[tuple[float, int, Any, np.ndarray, Future | None]] = []
        observations: list[FaceObservation] = []
        n_frames = 0
        expressions = self.expressions
        second, seen = None, {}    # sampled frames of each face so far in the current second
        detection = ScaledDetection(self.detector, self.detect_face_px)
        # The landmarker reads each chosen crop on a thread of its own as soon as the crop exists:
        # MediaPipe's graph computes while this thread decodes and detects the next frames (on
        # Obama_clip1 the main thread had waited 16 ms per read, README "Speed").
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landmarker") if expressions is not None else None

        def flush():
            if not pending:
                return
            probs, embs = self.predictor.predict(np.stack([p[3] for p in pending]))
            for (t, fid, box, _, read), p, e in zip(pending, probs, embs):
                b = x = None
                if read is not None:
                    bs, ep, found = read.result()
                    if found[0]:
                        b, x = bs[0], (None if ep is None else ep[0])
                observations.append(FaceObservation(t, fid, box, p, e, b, x))
            pending.clear()

        try:
            for frame in frames:
                n_frames += 1
                if int(frame.t_s) != second:
                    second, seen = int(frame.t_s), {}
                boxes = detection.detect(frame.image, frame.t_s)
                ids = tracker.update(frame.t_s, boxes, image=frame.image)
                for watch in watchers:
                    watch(frame, boxes, ids)
                for box, fid in zip(boxes, ids):
                    k = seen[fid] = seen.get(fid, -1) + 1
                    crop = aligned_crop(frame.image, box, FACE_CROP_PX)
                    read = (reader.submit(expressions.read, crop[None])
                            if reader is not None and k % expressions.every == 0 else None)
                    pending.append((frame.t_s, fid, box, crop, read))
                if len(pending) >= self.batch_size:
                    flush()
            flush()
        finally:
            if reader is not None:
                reader.shutdown(wait=True, cancel_futures=True)
        return observations, tracker, n_frames

    def _face_scores(self, mine: list[FaceObservation]) -> tuple[np.ndarray, np.ndarray | None, int]:
        """One face's second: (probabilities: the CNN's mean, combined with the expert's where it
        read the face; mean blendshapes or None; frames the landmarker read)."""
        p = np.mean([o.probs for o in mine], axis=0)
        read = [o for o in mine if o.blendshapes is not None]
        if not read:
            return p, None, 0
        experts = [o.expert_probs for o in read if o.expert_probs is not None]
        if experts and self.expressions is not None and self.expressions.weight > 0:
            w = self.expressions.weight
            p = (1 - w) * p + w * np.mean(experts, axis=0)
        return p, np.mean([o.blendshapes for o in read], axis=0), len(read)

    def _primary(self, tracker: FaceTracker, observations: list[FaceObservation]) -> int | None:
        if self.primary_face == "dominant":
            return tracker.dominant_id()
        if self.primary_face == "largest":
            return max(observations, key=lambda o: o.box.area).face_id if observations else None
        return int(self.primary_face)

    def per_second(self, observations: list[FaceObservation], tracker: FaceTracker, n_seconds: int,
                   chosen: dict[int, int] | None = None) -> list[ModalityScores | None]:
        """Per second: the primary face's scores, every face in ``faces``; ``chosen``: second ->
        the face_id to use instead of the primary (the speaker's, pipeline/cast.py)."""
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
            per_id, shapes = {}, {}
            for fid in ids:
                mine = [o for o in obs if o.face_id == fid]
                p, mean_shapes, n_read = self._face_scores(mine)
                per_id[fid] = (p, np.mean([o.embedding for o in mine], axis=0), mine)
                shapes[fid] = (mean_shapes, n_read)
            # the configured face when it is on screen, else the largest one this second
            pick = (chosen or {}).get(second)
            pick = pick if pick in per_id else primary if primary in per_id else max(
                ids, key=lambda f: np.mean([o.box.area for o in per_id[f][2]]))
            p, emb, _ = per_id[pick]
            n_faces = max(sum(1 for o in obs if o.t_s == t) for t in {o.t_s for o in obs})
            faces = [{"face_id": fid, "label": LABELS[int(np.argmax(v[0]))],
                      "scores": {l: round(float(x), 4) for l, x in zip(LABELS, v[0])},
                      "frames": len(v[2])} for fid, v in per_id.items()]
            if self.expressions is not None:
                from emotion_pipeline.landmarks import BLENDSHAPES

                for f in faces:
                    mean, n_read = shapes[f["face_id"]]
                    f["expression"] = None if mean is None else {
                        name: round(float(v), EXPRESSION_DECIMALS) for name, v in zip(BLENDSHAPES, mean)}
                    f["expression_frames"] = n_read
            out.append(_entry(p, emb, n_faces=int(n_faces), face_id=int(pick), faces=faces))
        return out


class AudioEncoder:
    """The voice model with its window and speech threshold; ``seconds.VoiceSeconds`` scores the
    seconds (VAD over streamed chunks, one window centred on each second with enough speech)."""

    def __init__(self, predictor: Predictor, *, window_s: float, min_speech_fraction: float, batch_size: int = 16):
        self.predictor, self.window_s = predictor, window_s
        self.min_speech_fraction, self.batch_size = min_speech_fraction, batch_size


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

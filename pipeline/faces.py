"""Face detection (YuNet, or OpenCV's Haar cascade as the offline fallback), aligned crops, tracking.

Crops are grey, eyes levelled (when the detector gives keypoints), square around the face box
with a margin, at the size the expression model asks for. The tracker gives each face a stable
``face_id`` across frames by box overlap, so a user can follow one face; given the frames, it ends
every track at a shot cut (``ShotCuts``), so two people filmed in turn at the same place are two
tracks (pipeline/people.py joins the tracks of one person again by their face embeddings).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from emotion_pipeline.records import FaceBox

log = logging.getLogger(__name__)

# YuNet thresholds: OpenCV model-zoo demo defaults (score 0.9 is strict; 0.7 keeps profile faces).
YUNET_SCORE_THRESHOLD = 0.7
YUNET_NMS_THRESHOLD = 0.3
YUNET_TOP_K = 5000
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
CROP_MARGIN = 0.05   # fraction of the box added on each side; on the MEAD clips 0-0.06 matched the
                     # FER-trained CNN best (4/8 clips right vs 3/8 at 0.12, 2/8 at 0.2)
MIN_FACE_PX = 24     # smaller boxes carry no usable expression at 48 px input
FACE_CROP_PX = 96    # crops handed to face models; each model's prepare() resizes (ours: 48)


SHRUNK_STEP_PX = 32     # shrunk detection sizes (long side) are the nearest multiple of this ...
SHRUNK_SIZES_KEPT = 4   # ... and a YuNet is kept for each of the last few


class FaceDetector:
    """YuNet when a model file is given, Haar cascade otherwise. ``name`` says which ran."""

    def __init__(self, yunet_model: str | Path | None = None, *, score_threshold: float = YUNET_SCORE_THRESHOLD):
        self._yunet = None
        self._haar = None
        self._shrunk: dict[tuple[int, int], cv2.FaceDetectorYN] = {}   # one YuNet per input size (see detect)
        if yunet_model is not None:
            self._make = lambda: cv2.FaceDetectorYN.create(str(yunet_model), "", (320, 320), score_threshold,
                                                           YUNET_NMS_THRESHOLD, YUNET_TOP_K)
            self._yunet = self._make()
            self.name = f"yunet:{Path(yunet_model).name}"
        else:
            cascade = Path(cv2.data.haarcascades) / HAAR_CASCADE
            self._haar = cv2.CascadeClassifier(str(cascade))
            if self._haar.empty():
                raise RuntimeError(f"{cascade}: OpenCV Haar cascade could not be loaded")
            self.name = f"haar:{HAAR_CASCADE}"

    @property
    def scalable(self) -> bool:
        """True when ``detect(image, scale=...)`` below 1 is worth it (YuNet; Haar searches every scale anyway)."""
        return self._yunet is not None

    def detect(self, image_bgr: np.ndarray, scale: float = 1.0) -> list[FaceBox]:
        """The faces in ``image_bgr``, boxes and keypoints in its pixels; ``scale`` < 1: YuNet looks
        at the image shrunk by that factor (cheaper; see ScaledDetection), boxes mapped back."""
        h, w = image_bgr.shape[:2]
        boxes: list[FaceBox] = []
        if self._yunet is not None:
            yunet = self._yunet
            if scale < 1.0:
                # the shrunk size in steps of SHRUNK_STEP_PX, each with its own YuNet: a YuNet told a new
                # input size rebuilds itself (alternating two sizes on one cost 4.1 ms a frame, two 2.7)
                side = min(max(w, h), max(SHRUNK_STEP_PX, round(max(w, h) * scale / SHRUNK_STEP_PX) * SHRUNK_STEP_PX))
                sw, sh = max(1, round(w * side / max(w, h))), max(1, round(h * side / max(w, h)))
                image_bgr = cv2.resize(image_bgr, (sw, sh), interpolation=cv2.INTER_AREA)
                kx, ky = w / sw, h / sh
                if (sw, sh) not in self._shrunk:
                    if len(self._shrunk) >= SHRUNK_SIZES_KEPT:
                        self._shrunk.pop(next(iter(self._shrunk)))
                    self._shrunk[(sw, sh)] = self._make()
                yunet = self._shrunk[(sw, sh)]
            else:
                sw, sh, kx, ky = w, h, 1.0, 1.0
            yunet.setInputSize((sw, sh))
            _, faces = yunet.detect(image_bgr)
            for row in (faces if faces is not None else []):
                x, y, bw, bh = (float(v) for v in row[:4])
                points = row[4:14].reshape(5, 2).astype(np.float32) * np.float32([kx, ky])
                boxes.append(FaceBox(x * kx, y * ky, bw * kx, bh * ky, float(row[14]), points))
        else:
            grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
            found, _, weights = self._haar.detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=5,
                                                              minSize=(MIN_FACE_PX, MIN_FACE_PX), outputRejectLevels=True)
            for (x, y, bw, bh), wgt in zip(found, np.ravel(weights) if len(found) else []):
                boxes.append(FaceBox(float(x), float(y), float(bw), float(bh), float(min(1.0, wgt / 10.0))))
        return [b for b in boxes if min(b.w, b.h) >= MIN_FACE_PX]


# Detection between full-size passes at a smaller scale. YuNet's cost grows with the pixels it
# scans (5.9 / 3.7 / 2.5 / 1.9 ms for a 256 / 192 / 160 / 128 px frame on the 2-core machine;
# a 640x360 frame about 19 ms), while a face the CNN reads at 48 px needs far fewer pixels than a
# close-up gives it. So one sampled frame a second (DETECT_FULL_EVERY_S), and any frame after one
# without a face, is searched at full size; the others are shrunk so that the smallest face of the
# frame before is DETECT_FACE_PX high, and searched again at full size whenever the shrunk search
# finds fewer faces than that frame had. A face that appears small between two full passes is
# found at the next (at most a second late). Measured against full-size detection on every frame:
# models/weights/face_cnn.md, "Detection scale" (bench.face_stage --detect-face-px).
DETECT_FACE_PX = 64
DETECT_FULL_EVERY_S = 1.0
DETECT_MIN_GAIN = 0.8        # a scale above this is not worth the resize: search at full size


class ScaledDetection:
    """``detect(image, t_s)``: one video's frames in time order through ``detector`` (see
    DETECT_FACE_PX); ``face_px=0`` searches every frame at full size. ``full``/``shrunk``: counts."""

    def __init__(self, detector: FaceDetector, face_px: int = DETECT_FACE_PX, full_every_s: float = DETECT_FULL_EVERY_S):
        self.detector, self.face_px, self.full_every_s = detector, int(face_px), float(full_every_s)
        self._last_full: float | None = None
        self._previous: list[FaceBox] = []
        self.full = self.shrunk = 0

    def _scale(self, t_s: float) -> float:
        if (not self.face_px or not self.detector.scalable or not self._previous or self._last_full is None
                or t_s - self._last_full >= self.full_every_s - 1e-6 or t_s < self._last_full):
            return 1.0
        scale = self.face_px / min(min(b.w, b.h) for b in self._previous)
        return 1.0 if scale > DETECT_MIN_GAIN else scale

    def detect(self, image_bgr: np.ndarray, t_s: float) -> list[FaceBox]:
        scale = self._scale(t_s)
        boxes = self.detector.detect(image_bgr, scale) if scale < 1.0 else []
        if scale < 1.0 and len(boxes) >= len(self._previous):
            self.shrunk += 1
        else:
            boxes = self.detector.detect(image_bgr)
            self._last_full = t_s
            self.full += 1
        self._previous = boxes
        return boxes


def aligned_crop(image_bgr: np.ndarray, box: FaceBox, size_px: int) -> np.ndarray:
    """(size_px, size_px, 3) uint8 BGR crop, rotated so the eyes are level when keypoints exist.

    Colour is kept: each face model's own ``prepare`` converts (our CNN to grey 48 px)."""
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    side = max(box.w, box.h) * (1 + 2 * CROP_MARGIN)
    angle = 0.0
    if box.landmarks is not None:
        (rx, ry), (lx, ly) = box.landmarks[0], box.landmarks[1]
        angle = float(np.degrees(np.arctan2(ly - ry, lx - rx)))
    scale = size_px / side
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    matrix[0, 2] += size_px / 2 - cx
    matrix[1, 2] += size_px / 2 - cy
    return cv2.warpAffine(image_bgr, matrix, (size_px, size_px), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def iou(a: FaceBox, b: FaceBox) -> float:
    x1, y1 = max(a.x, b.x), max(a.y, b.y)
    x2, y2 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


# A shot cut between two sampled frames (250 ms apart at 4 frames/s): their colour histograms
# (HSV 8x4x4 of a 64 px thumbnail, Bhattacharyya distance) or their grey 32 px thumbnails (1 -
# correlation) are far apart. Measured on the shared videos at 4 frames/s: consecutive frames of one
# shot reach 0.20 (histogram, 99.9th percentile without the two edge-case clips that do cut) and
# 0.26 (thumbnail, the worst of 593 pairs); the last and first frames of two different talking
# clips are at 0.3 and more on one of the two. A cut missed between two shots of one person is
# harmless (the track goes on); a false cut only splits a track, which re-identification joins.
CUT_HISTOGRAM_DISTANCE = 0.40
CUT_THUMBNAIL_DISTANCE = 0.55


class ShotCuts:
    """``cut(image)``: True when ``image`` starts a new shot (compared with the previous one given)."""

    def __init__(self):
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _signature(image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        small = cv2.resize(image_bgr, (64, 64), interpolation=cv2.INTER_AREA)
        hist = cv2.calcHist([cv2.cvtColor(small, cv2.COLOR_BGR2HSV)], [0, 1, 2], None, [8, 4, 4],
                            [0, 180, 0, 256, 0, 256])
        grey = cv2.cvtColor(cv2.resize(small, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        grey = grey.astype(np.float32)
        flat = grey.std() < 2.0   # a blank frame has no structure to compare: the histogram alone decides
        return cv2.normalize(hist, hist).flatten(), None if flat else (grey - grey.mean()) / grey.std()

    def cut(self, image_bgr: np.ndarray) -> bool:
        sig, prev = self._signature(image_bgr), self._prev
        self._prev = sig
        if prev is None:
            return False
        if cv2.compareHist(prev[0], sig[0], cv2.HISTCMP_BHATTACHARYYA) > CUT_HISTOGRAM_DISTANCE:
            return True
        return prev[1] is not None and sig[1] is not None and float(1.0 - (prev[1] * sig[1]).mean()) > CUT_THUMBNAIL_DISTANCE


@dataclass
class _Track:
    face_id: int
    box: FaceBox
    last_t_s: float
    n_seen: int = 1
    area_sum: float = field(default=0.0)


class FaceTracker:
    """Greedy IoU (then centre-distance) association; a track ends after ``max_gap_s`` unseen, and
    at a shot cut when ``update`` is given the frame (``cuts_s``: where cuts were found)."""

    def __init__(self, *, iou_threshold: float = 0.3, max_gap_s: float = 2.0, max_centre_shift: float = 0.6):
        self.iou_threshold = iou_threshold
        self.max_gap_s = max_gap_s
        self.max_centre_shift = max_centre_shift  # in units of the track box's size
        self._tracks: list[_Track] = []
        self._next_id = 0
        self.presence: dict[int, float] = {}      # face_id -> sum of box areas seen (size x time)
        self._cuts = ShotCuts()
        self.cuts_s: list[float] = []

    def _match_cost(self, track: _Track, box: FaceBox) -> float | None:
        overlap = iou(track.box, box)
        if overlap >= self.iou_threshold:
            return 1.0 - overlap
        dx = (track.box.x + track.box.w / 2) - (box.x + box.w / 2)
        dy = (track.box.y + track.box.h / 2) - (box.y + box.h / 2)
        shift = np.hypot(dx, dy) / max(track.box.w, track.box.h)
        size_ratio = box.area / max(track.box.area, 1e-6)
        if shift <= self.max_centre_shift and 0.5 <= size_ratio <= 2.0:
            return 1.0 + shift
        return None

    def update(self, t_s: float, boxes: list[FaceBox], image: np.ndarray | None = None) -> list[int]:
        """Assign a face_id to each box (same order as ``boxes``); ``image``: the frame, for cuts."""
        if image is not None and self._cuts.cut(image):
            self._tracks = []
            self.cuts_s.append(t_s)
        self._tracks = [tr for tr in self._tracks if t_s - tr.last_t_s <= self.max_gap_s]
        pairs = []
        for ti, track in enumerate(self._tracks):
            for bi, box in enumerate(boxes):
                cost = self._match_cost(track, box)
                if cost is not None:
                    pairs.append((cost, ti, bi))
        ids: list[int | None] = [None] * len(boxes)
        used_tracks: set[int] = set()
        for cost, ti, bi in sorted(pairs):
            if ti in used_tracks or ids[bi] is not None:
                continue
            track = self._tracks[ti]
            track.box, track.last_t_s, track.n_seen = boxes[bi], t_s, track.n_seen + 1
            ids[bi] = track.face_id
            used_tracks.add(ti)
        for bi, box in enumerate(boxes):
            if ids[bi] is None:
                self._tracks.append(_Track(self._next_id, box, t_s))
                ids[bi] = self._next_id
                self._next_id += 1
        for box, fid in zip(boxes, ids):
            self.presence[fid] = self.presence.get(fid, 0.0) + box.area
        return [int(i) for i in ids]

    def dominant_id(self) -> int | None:
        """The face seen largest and longest (sum of box areas over frames)."""
        return max(self.presence, key=self.presence.get) if self.presence else None


# Still photos (evaluate faces, training on posed / in-the-wild sets). A photo is detected and
# cropped exactly as a video frame is (detect, largest face, ``aligned_crop``); a small photo that
# is already a face crop (CK+48's 48 px, FER2013's) holds no face a detector can see at that
# size, so it is first enlarged to STILL_MIN_PX on a STILL_BORDER frame of its own edge pixels.
STILL_MIN_PX = 192   # 48 px crops enlarged 4x: YuNet then finds most faces (measured in evaluate faces)
STILL_BORDER = 0.25  # fraction of the side added on each side before detection


@dataclass(frozen=True)
class StillCrop:
    crop: np.ndarray             # (size_px, size_px, 3) uint8 BGR, as the video pipeline crops it
    detected: bool               # False: no face found, ``crop`` is the whole photo resized (a fallback)
    box: FaceBox | None          # the face in the (enlarged) photo, None when not detected


def crop_still(image_bgr: np.ndarray, detector: FaceDetector, size_px: int) -> StillCrop:
    """The largest face of a photo as the video pipeline crops it (see STILL_MIN_PX); the whole
    photo, resized, with ``detected=False`` where no face is found."""
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    frame = image_bgr
    if min(frame.shape[:2]) < STILL_MIN_PX:
        k = STILL_MIN_PX / min(frame.shape[:2])
        frame = cv2.resize(frame, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
        pad = int(round(STILL_BORDER * min(frame.shape[:2])))
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    boxes = detector.detect(frame)
    if boxes:
        box = max(boxes, key=lambda b: b.area)
        return StillCrop(aligned_crop(frame, box, size_px), True, box)
    side = min(image_bgr.shape[:2])
    top, left = (image_bgr.shape[0] - side) // 2, (image_bgr.shape[1] - side) // 2
    square = image_bgr[top:top + side, left:left + side]
    interp = cv2.INTER_AREA if side > size_px else cv2.INTER_LINEAR
    return StillCrop(cv2.resize(square, (size_px, size_px), interpolation=interp), False, None)

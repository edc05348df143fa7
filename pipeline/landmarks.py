"""Face landmarks and expression coefficients of face crops: MediaPipe FaceLandmarker.

``FaceLandmarker(path).read(crops)`` takes the pipeline's face crops (``faces.aligned_crop`` /
``faces.crop_still``: FACE_CROP_PX square, BGR uint8) and returns, per crop, a ``FaceExpression``
(52 blendshapes in ``BLENDSHAPES`` order and 478 landmarks in the crop's normalised coordinates)
or None where the landmarker finds no face in it. The crop is tight (CROP_MARGIN 0.05) and small,
so it is first enlarged to LANDMARKER_PX and framed by LANDMARKER_BORDER of its own edge pixels:
the landmarker's own face detector wants context around the face (see the constants).

The model is the shipped ``face-landmarker`` (``models/weights/mediapipe_face_landmarker.task``,
loaded through ``models.registry`` with its checksum verified); ``mediapipe`` is imported when a
landmarker is built, so the rest of the pipeline runs without it.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emotion_pipeline.errors import ModelUnavailableError
from emotion_pipeline.fileio import atomic_write

log = logging.getLogger(__name__)

# The 52 blendshapes of the FaceLandmarker model bundle (float16 v1), in the model's output order
# ("_neutral" first); each in [0, 1]. Names as MediaPipe gives them (ARKit's names).
BLENDSHAPES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
N_LANDMARKS = 478

# A 96 px crop with a 5% margin: the landmarker finds 89% of FER2013's 48 px faces once they are
# enlarged to 192 px with a border (shared data README). Faces read of 200 SFEW crops (the
# pipeline's) + 200 FER2013 PublicTest faces, border 0 / 0.25 / 0.5 of the side: 173+155 /
# 169+164 / 157+162 (2026-12-02); on KDEF frontal / half-profile and CK+ crops 0.25 reads all.
LANDMARKER_PX = 192        # the crop is enlarged to this side ...
LANDMARKER_BORDER = 0.25   # ... then framed by this fraction of the side on each side
MIN_DETECTION_CONFIDENCE = 0.5   # MediaPipe's default
# MediaPipe's Python API has no thread setting; its CPU graph ran on one core here (8.9 ms of CPU
# per crop, of which ~2 ms is the Python conversion of 478 landmarks; 2-core machine, 2026-12-02).


@dataclass(frozen=True)
class FaceExpression:
    """What the landmarker reads in one face crop."""
    blendshapes: np.ndarray      # float32 (52,) in BLENDSHAPES order, each in [0, 1]
    landmarks: np.ndarray        # float32 (478, 3): x, y in [0, 1] of the crop (x right, y down), z relative depth


def landmarker_input(crop_bgr: np.ndarray) -> np.ndarray:
    """The RGB image handed to the landmarker for one crop (see LANDMARKER_PX), and the crop's
    place in it is ``pad / side`` .. ``1 - pad / side`` on both axes."""
    if crop_bgr.ndim == 2:
        crop_bgr = cv2.cvtColor(crop_bgr, cv2.COLOR_GRAY2BGR)
    big = cv2.resize(crop_bgr, (LANDMARKER_PX, LANDMARKER_PX),
                     interpolation=cv2.INTER_CUBIC if crop_bgr.shape[0] < LANDMARKER_PX else cv2.INTER_AREA)
    pad = int(round(LANDMARKER_BORDER * LANDMARKER_PX))
    big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(cv2.cvtColor(big, cv2.COLOR_BGR2RGB))


@contextlib.contextmanager
def _native_stderr_quiet():
    """MediaPipe's C++ side (glog, TensorFlow Lite) writes start-up lines straight to file
    descriptor 2 ("Logging before InitGoogle", "Created TensorFlow Lite XNNPACK delegate", feedback
    manager warnings), past Python's logging: they would break the one-line error contract of the
    command line. They are sent to /dev/null while the task is built and first run; what MediaPipe
    says there that matters raises (and is reported) instead."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):   # no real descriptor 2 (an embedding host): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceLandmarker:
    """MediaPipe FaceLandmarker in IMAGE mode with blendshapes, one face per crop."""

    def __init__(self, model_path: str | Path):
        self.path = Path(model_path)
        os.environ.setdefault("GLOG_minloglevel", "2")   # before the import: glog reads it once
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as e:
            raise ModelUnavailableError(f"{self.path}: the face landmarker needs mediapipe "
                                        f"(pip install mediapipe==1.2.3; Debian: apt-get install libegl1 libgles2)") from e
        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.path), delegate=BaseOptions.Delegate.CPU),
            running_mode=vision.RunningMode.IMAGE, num_faces=1, output_face_blendshapes=True,
            min_face_detection_confidence=MIN_DETECTION_CONFIDENCE)
        try:
            with _native_stderr_quiet():
                self._task = vision.FaceLandmarker.create_from_options(options)
                # the first inference builds the delegates (more start-up lines)
                self._task.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                           data=np.zeros((LANDMARKER_PX, LANDMARKER_PX, 3), np.uint8)))
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelUnavailableError(" ".join(f"{self.path}: MediaPipe cannot build a face landmarker "
                                                 f"from it ({e})".split())) from e
        self.name = f"mediapipe-face-landmarker ({self.path.name})"
        _OPEN.add(self)

    def read_one(self, crop_bgr: np.ndarray) -> FaceExpression | None:
        image = landmarker_input(crop_bgr)
        result = self._task.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image))
        if not result.face_landmarks or not result.face_blendshapes:
            return None
        shapes = np.asarray([c.score for c in result.face_blendshapes[0]], dtype=np.float32)
        points = np.asarray([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32)
        pad = LANDMARKER_BORDER * LANDMARKER_PX / image.shape[0]
        points[:, :2] = (points[:, :2] - pad) / (1 - 2 * pad)     # into the crop's own coordinates
        return FaceExpression(np.clip(shapes, 0.0, 1.0), points)

    def read(self, crops_bgr: np.ndarray) -> list[FaceExpression | None]:
        """One ``FaceExpression`` (or None: no face found) per crop of ``crops_bgr`` (N, S, S, 3)."""
        return [self.read_one(c) for c in crops_bgr]

    def close(self) -> None:
        task, self._task = getattr(self, "_task", None), None
        if task is not None:
            task.close()

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):   # MediaPipe's own finaliser fails at interpreter exit; close while it still can
        try:
            self.close()
        except Exception:   # noqa: BLE001 - nothing can be reported from a finaliser
            pass


_OPEN: "weakref.WeakSet[FaceLandmarker]" = weakref.WeakSet()


@atexit.register
def _close_open() -> None:
    """MediaPipe's own finaliser fails once the interpreter is shutting down: close them before."""
    for lm in list(_OPEN):
        lm.close()


@dataclass(frozen=True)
class Readings:
    """What the landmarker read in N crops (rows where no face was found are zeros)."""
    blendshapes: np.ndarray      # float32 (N, 52) in BLENDSHAPES order
    landmarks: np.ndarray        # float32 (N, 478, 3), as FaceExpression.landmarks
    found: np.ndarray            # bool (N,)

    def __len__(self) -> int:
        return len(self.found)


def readings(expressions: list[FaceExpression | None]) -> Readings:
    n = len(expressions)
    shapes = np.zeros((n, len(BLENDSHAPES)), np.float32)
    points = np.zeros((n, N_LANDMARKS, 3), np.float32)
    found = np.zeros(n, bool)
    for i, e in enumerate(expressions):
        if e is not None:
            shapes[i], points[i], found[i] = e.blendshapes, e.landmarks, True
    return Readings(shapes, points, found)


def read_cached(landmarker: FaceLandmarker, crops: np.ndarray, *, cache_dir: Path | None = None,
                progress: bool = False) -> Readings:
    """``landmarker.read`` of every crop (uint8 (N,S,S,3) BGR or (N,S,S) grey), cached in
    ``cache_dir`` in an .npz keyed by the crops' bytes, the landmarker file and its settings."""
    cache = None
    if cache_dir is not None:
        h = hashlib.sha256(f"{landmarker.path.name}|{landmarker.path.stat().st_size}|{LANDMARKER_PX}|"
                           f"{LANDMARKER_BORDER}|{MIN_DETECTION_CONFIDENCE}|{crops.shape}".encode())
        h.update(np.ascontiguousarray(crops).data)
        cache = Path(cache_dir) / f"landmarks-{h.hexdigest()[:16]}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as data:
                return Readings(data["blendshapes"], data["landmarks"], data["found"])
    from tqdm import tqdm

    out = readings([landmarker.read_one(c) for c in tqdm(crops, desc="landmarks", unit="face", disable=not progress)])
    if cache is not None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, blendshapes=out.blendshapes, landmarks=out.landmarks, found=out.found)
        atomic_write(cache, write)
    log.info("the landmarker found a face in %d of %d crops", int(out.found.sum()), len(out))
    return out


def load_landmarker(offline: bool = True, name: str = "face-landmarker") -> FaceLandmarker:
    """The shipped landmarker, its file verified by the registry."""
    from emotion_pipeline.models import registry

    return FaceLandmarker(registry.load(name, kind="detector", offline=offline).path)

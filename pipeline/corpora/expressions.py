"""Labelled faces as the face landmarker reads them: what the blendshape expert trains and is scored on.

``photo_expressions(path, n_folds=)``: a labelled photo set (``face_images.labelled_images``: KDEF,
CK+, SFEW, your own) cropped exactly as the video pipeline crops faces (``face_images.face_crops``,
the same crops the face CNN trainer reads), each crop read by the landmarker
(``landmarks.read_cached``), with each photo's person fold (``face_images.person_folds``: the same
stable assignment the face trainer holds out).

``fer_expressions(npz, max_faces=)``: a seeded pick of a FER2013-format file's faces with usable
FER+ votes (the face trainer's ``targets: ferplus`` faces), read by the landmarker, with the vote
distributions as targets.

Both are cached under ``.cache/`` (crops by file, landmarks by crop bytes): the landmarker costs
about 9 ms of CPU per face, the rest is free on a second run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_pipeline.corpora.face_images import FaceImages, face_crops, labelled_images, person_folds, pipeline_detector
from emotion_pipeline.corpora.faces import fer_split
from emotion_pipeline.faces import FACE_CROP_PX, FaceDetector
from emotion_pipeline.landmarks import FaceLandmarker, Readings, read_cached
from emotion_pipeline.models.blendshape_expert import features

CROPS_CACHE = Path(".cache/face_crops")       # the face trainer's (corpora.face_images.photo_split)
LANDMARKS_CACHE = Path(".cache/landmarks")
# Web faces in the choice of the combination weight ("FER+ PublicTest being one set among them",
# issue 23): a seeded pick of PublicTest, its even rows choose, its odd rows are scored.
FER_SELECT_NPZ = "faces/fer2013/fer2013_publictest_3589.npz"
FER_SELECT_MAX = 2000


def choosing_rows(n: int) -> np.ndarray:
    """bool (n,): the rows of the PublicTest pick that choose the combination weight (the rest are scored)."""
    return np.arange(n) % 2 == 0


@dataclass(frozen=True)
class PhotoExpressions:
    """One labelled photo set, every photo: its crop, the landmarker's reading, its person fold."""
    name: str                    # the set's folder name (kdef, ckplus48, sfew, ...)
    images: FaceImages           # paths, labels (int64 (N,) LABELS index), person ids, angles
    crops: np.ndarray            # uint8 (N, 96, 96, 3) BGR, as the video pipeline crops faces
    detected: np.ndarray         # bool (N,): the pipeline's detector found the face (else the whole photo)
    readings: Readings           # the landmarker's reading of each crop (``found`` says where it read one)
    folds: np.ndarray            # int64 (N,) person fold, 0..n_folds-1

    @property
    def labels(self) -> np.ndarray:
        return self.images.labels

    def features(self) -> np.ndarray:
        """float32 (N, F) the expert's features (rows where nothing was found are meaningless)."""
        return features(self.readings.blendshapes, self.readings.landmarks)


def photo_expressions(path: str | Path, *, n_folds: int, landmarker: FaceLandmarker,
                      detector: FaceDetector | None = None, crops_cache: Path | None = CROPS_CACHE,
                      landmarks_cache: Path | None = LANDMARKS_CACHE, progress: bool = False) -> PhotoExpressions:
    images = labelled_images(path)
    crops = face_crops(images, detector or pipeline_detector(), FACE_CROP_PX, cache_dir=crops_cache, progress=progress)
    readings = read_cached(landmarker, crops.crops, cache_dir=landmarks_cache, progress=progress)
    return PhotoExpressions(Path(path).name, images, crops.crops, crops.detected, readings,
                            person_folds(images.person_ids, n_folds))


@dataclass(frozen=True)
class FerExpressions:
    """FER2013 faces with usable FER+ votes, as the landmarker reads them."""
    name: str
    images: np.ndarray           # uint8 (N, 48, 48) grey
    targets: np.ndarray          # float32 (N, 7) FER+ vote distributions over LABELS
    majority: np.ndarray         # int64 (N,) FER+ majority label, -1 where there is none
    readings: Readings

    def features(self) -> np.ndarray:
        return features(self.readings.blendshapes, self.readings.landmarks)


def fer_expressions(npz: str | Path, *, max_faces: int, seed: int, landmarker: FaceLandmarker,
                    landmarks_cache: Path | None = LANDMARKS_CACHE, progress: bool = False) -> FerExpressions:
    """A seeded pick of ``max_faces`` (0: all) of the file's faces with usable FER+ votes, in file order."""
    split = fer_split(npz, votes=True)
    split = split.take(split.votes.usable)
    if max_faces and max_faces < len(split.rows):
        split = split.take(np.sort(np.random.default_rng(seed).permutation(len(split.rows))[:max_faces]))
    readings = read_cached(landmarker, split.images, cache_dir=landmarks_cache, progress=progress)
    return FerExpressions(Path(npz).stem, split.images, split.votes.targets().astype(np.float32),
                          split.votes.majority(), readings)

"""Labelled face photos (KDEF, CK+, SFEW, JAFFE, your own) and their face crops.

``labelled_images(path)`` reads either
- a folder with a ``labels.csv`` (columns ``file`` relative to the folder, ``emotion``, and
  optionally ``person_id`` and ``angle``), as ../shared/data/faces/{kdef,ckplus48,sfew} are laid out;
- a folder of ``<emotion>/*.jpg|png|...`` sub-folders (no person ids: each photo its own person);
- a CSV file with those columns (``file`` or ``path``, relative to the CSV's folder or absolute).

Emotion names are mapped with ``labels.canonical``; a name without an Ekman class (CK+
"contempt") drops its rows. ``person_folds`` assigns whole people (or movies) to folds by a
stable hash, so a validation fold never holds a person of the training folds.

``face_crops(images, detector)`` detects and crops each photo as the video pipeline does
(``faces.crop_still``) and caches the crops in an ``.npz`` keyed by the files, their sizes and
mtimes, the detector and the crop settings.
"""
from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emotion_pipeline.errors import bad_file
from emotion_pipeline.faces import CROP_MARGIN, FACE_CROP_PX, STILL_BORDER, STILL_MIN_PX, FaceDetector, crop_still
from emotion_pipeline.fileio import atomic_write
from emotion_pipeline.labels import LABEL_INDEX, LABELS, UnknownLabelError, canonical

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm")
MAX_IMAGES = 1_000_000   # a CSV longer than this is refused (bounded read)


@dataclass(frozen=True)
class FaceImages:
    """Labelled photos of one set, in the order of its listing."""
    root: Path
    paths: tuple[Path, ...]
    labels: np.ndarray              # int64 (N,) LABELS index
    person_ids: tuple[str, ...]     # who is in the photo (KDEF actor, CK+ subject, SFEW movie); the file stem when unknown
    angles: tuple[str, ...]         # head angle where the set says ("frontal", "half_left", ...), else ""

    def take(self, rows: np.ndarray) -> FaceImages:
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        return FaceImages(self.root, tuple(self.paths[i] for i in rows), self.labels[rows],
                          tuple(self.person_ids[i] for i in rows), tuple(self.angles[i] for i in rows))

    def __len__(self) -> int:
        return len(self.paths)


def _rows_from_csv(csv_path: Path) -> list[dict[str, str]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = {c.strip().lower() for c in (reader.fieldnames or [])}
            if not ({"file", "path"} & fields and {"emotion", "label"} & fields):
                raise bad_file(csv_path, "expected columns file (or path) and emotion (or label)")
            rows = []
            for row in reader:
                rows.append({k.strip().lower(): (v or "").strip() for k, v in row.items() if k})
                if len(rows) > MAX_IMAGES:
                    raise bad_file(csv_path, f"more than {MAX_IMAGES:,} rows")
            return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise bad_file(csv_path, f"not a readable CSV ({exc})") from exc


def labelled_images(path: str | Path) -> FaceImages:
    """The labelled photos at ``path`` (see the module docstring); DataError naming the path when
    there are none or a listed file is missing."""
    path = Path(path)
    if path.is_dir() and (path / "labels.csv").is_file():
        csv_path, root = path / "labels.csv", path
    elif path.is_file():
        csv_path, root = path, path.parent
    elif path.is_dir():
        csv_path, root = None, path
    else:
        raise bad_file(path, "no such file or folder")
    entries: list[tuple[Path, str, str, str]] = []
    if csv_path is not None:
        for row in _rows_from_csv(csv_path):
            name = row.get("file") or row.get("path") or ""
            file = Path(name) if Path(name).is_absolute() else root / name
            entries.append((file, row.get("emotion") or row.get("label") or "", row.get("person_id", ""),
                            row.get("angle", "")))
    else:
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            for file in sorted(sub.iterdir()):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    entries.append((file, sub.name, "", ""))
    paths, labels, people, angles = [], [], [], []
    for file, emotion, person, angle in entries:
        try:
            label = canonical(emotion)
        except UnknownLabelError as exc:
            raise bad_file(csv_path or file.parent, str(exc)) from exc
        if label is None:
            continue                      # no Ekman class (contempt)
        if not file.is_file():
            raise bad_file(file, f"listed in {csv_path or path} but missing")
        paths.append(file)
        labels.append(LABEL_INDEX[label])
        people.append(person or file.stem)
        angles.append(angle)
    if not paths:
        raise bad_file(path, f"no labelled photos (folders or a labels.csv with emotions among {', '.join(LABELS)})")
    return FaceImages(root, tuple(paths), np.asarray(labels, dtype=np.int64), tuple(people), tuple(angles))


def person_folds(person_ids: tuple[str, ...] | list[str], n_folds: int) -> np.ndarray:
    """int64 (N,) fold of each photo, 0..n_folds-1, by a stable hash of its person id: the same
    person is always in the same fold, on any machine and in any listing order."""
    def fold(pid: str) -> int:
        return int.from_bytes(hashlib.sha1(pid.encode()).digest()[:4], "big") % n_folds
    return np.asarray([fold(p) for p in person_ids], dtype=np.int64)


@dataclass(frozen=True)
class FaceCrops:
    crops: np.ndarray        # uint8 (N,size,size,3) BGR, as the video pipeline crops faces
    detected: np.ndarray     # bool (N,): False where no face was found (the whole photo, resized)


def _cache_key(images: FaceImages, detector: FaceDetector, size_px: int) -> str:
    h = hashlib.sha256()
    h.update(f"{detector.name}|{size_px}|{CROP_MARGIN}|{STILL_MIN_PX}|{STILL_BORDER}".encode())
    for p in images.paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def read_image(path: Path) -> np.ndarray:
    """A photo as BGR uint8; DataError naming it when OpenCV cannot decode it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise bad_file(path, "not a readable image")
    return image


def face_crops(images: FaceImages, detector: FaceDetector, size_px: int, *,
               cache_dir: Path | None = None, progress: bool = False) -> FaceCrops:
    """Each photo's face cropped as the video pipeline crops it (``faces.crop_still``); cached in
    ``cache_dir`` (None: not cached)."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"crops-{_cache_key(images, detector, size_px)}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as data:
                if len(data["crops"]) == len(images):
                    return FaceCrops(data["crops"], data["detected"])
    from tqdm import tqdm

    crops = np.empty((len(images), size_px, size_px, 3), dtype=np.uint8)
    detected = np.zeros(len(images), dtype=bool)
    for i, p in enumerate(tqdm(images.paths, desc="faces", unit="photo", disable=not progress)):
        still = crop_still(read_image(p), detector, size_px)
        crops[i], detected[i] = still.crop, still.detected
    if cache is not None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, crops=crops, detected=detected)
        atomic_write(cache, write)
    log.info("%s: a face found in %d of %d photos", images.root, int(detected.sum()), len(images))
    return FaceCrops(crops, detected)


def pipeline_detector(offline: bool = True) -> FaceDetector:
    """The video pipeline's default face detector: the packaged YuNet (Haar where OpenCV cannot
    build it), so photos are detected as video frames are."""
    from emotion_pipeline.models import registry

    try:
        return FaceDetector(registry.load("yunet", kind="detector", offline=offline).path)
    except (registry.ModelUnavailableError, cv2.error) as exc:
        log.warning("YuNet unavailable (%s); using the Haar cascade", " ".join(str(exc).split()))
        return FaceDetector(None)


@dataclass(frozen=True)
class PhotoSplit:
    """One labelled photo set split by person for training and validation, crops at 48 px grey."""
    name: str                        # the set's folder name (kdef, ckplus48, sfew, ...)
    train_images: np.ndarray         # uint8 (N,48,48) grey
    train_labels: np.ndarray         # int64 (N,)
    val_images: np.ndarray
    val_labels: np.ndarray
    val_angles: tuple[str, ...]
    val_people: tuple[str, ...]


PROFILE_ANGLES = ("full_left", "full_right")   # full profiles: trained on, not scored (the held-out KDEF figures are frontal + half profile)


def photo_split(path: Path, *, n_folds: int, val_fold: int, source_size: int = 48,
                cache_dir: Path | None = Path(".cache/face_crops"), detector: FaceDetector | None = None,
                progress: bool = False) -> PhotoSplit:
    """A labelled photo set's face crops (as the pipeline crops them, then grey at ``source_size``),
    the people of fold ``val_fold`` of ``n_folds`` for validation, the rest for training."""
    images = labelled_images(path)
    crops = face_crops(images, detector or pipeline_detector(), FACE_CROP_PX, cache_dir=cache_dir, progress=progress)
    grey = np.stack([cv2.resize(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), (source_size, source_size),
                                interpolation=cv2.INTER_AREA) for c in crops.crops])
    val = person_folds(images.person_ids, n_folds) == val_fold
    rows = np.flatnonzero(val)
    return PhotoSplit(Path(path).name, grey[~val], images.labels[~val], grey[val], images.labels[val],
                      tuple(images.angles[i] for i in rows), tuple(images.person_ids[i] for i in rows))

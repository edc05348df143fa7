"""FER2013-format face crops and their FER+ crowd votes (../shared/data/faces/fer2013, README).

- ``fer_faces(path)`` / ``read_fer_npz(path)``: face crops in the FER2013 ``.npz`` format;
- ``ferplus_votes(path)``: FER+ crowd votes row-aligned to a FER2013 file
  (``ferplus_votes_path`` finds the one that belongs to a FER2013 file);
- ``fer_split(path, labels)``: a file's faces with their own or the FER+ majority labels and the
  votes beside it, as training and the fusion features read them.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_pipeline.errors import DataError, bad_file
from emotion_pipeline.labels import FER2013_CLASSES, FERPLUS_COLUMNS, FERPLUS_TO_OURS, LABEL_INDEX, LABELS, NUM_LABELS, canonical

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FerFaces:
    images: np.ndarray              # uint8 (N,H,W) grey crops
    labels: np.ndarray              # int64 (N,) in LABELS order; -1 where the file's class has no Ekman label
    filenames: np.ndarray | None    # (N,) str, the file's ``filenames`` when it has them (to align votes)


def _load_npz(path: Path, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """The ``required`` (and present ``optional``) arrays of a .npz, no pickle; DataError with a
    one-line message naming the file (missing file, missing keys, unreadable archive)."""
    if not path.is_file():
        raise bad_file(path, "no such file" if not path.exists() else f"not a file (expected a {what})")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(getattr(data, "files", []))
            if not set(required) <= files:
                raise bad_file(path, f"expected keys {', '.join(map(repr, required))}, found {sorted(files) or 'none'}")
            return {k: data[k] for k in (*required, *optional) if k in files}
    except DataError:
        raise
    except ValueError as exc:
        raise bad_file(path, f"not a readable {what} ({exc})") from exc
    except Exception as exc:  # zip / pickle / OS errors from np.load
        raise bad_file(path, f"not a readable npz ({type(exc).__name__}: {exc})") from exc


def fer_faces(path: str | Path) -> FerFaces:
    """Every row of a FER2013-format npz: ``images`` uint8 (N,H,W), ``labels`` int class indices,
    optional ``classes`` (names of the indices, mapped with ``canonical``; FER2013 order when
    absent) and optional ``filenames``. DataError with a one-line message naming the file."""
    path = Path(path)
    data = _load_npz(path, ("images", "labels"), ("classes", "filenames"), "FER2013-format npz")
    images, labels = data["images"], data["labels"]
    classes = [str(c) for c in data["classes"]] if "classes" in data else list(FER2013_CLASSES)
    filenames = data["filenames"].astype(str) if "filenames" in data else None
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise bad_file(path, f"images must be (N,H,W) with one label each, got {images.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise bad_file(path, f"labels must be integers, got {labels.dtype}")
    if filenames is not None and filenames.shape != labels.shape:
        filenames = None  # not one per row: unusable for alignment
    try:
        ours = [canonical(c) for c in classes]
    except ValueError as exc:
        raise bad_file(path, f"class names do not map onto {', '.join(LABELS)} ({exc})") from exc
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(ours)):
        raise bad_file(path, f"labels outside 0..{len(ours) - 1} (the file has {len(ours)} classes)")
    mapping = np.array([LABEL_INDEX[c] if c is not None else -1 for c in ours], dtype=np.int64)
    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    return FerFaces(np.ascontiguousarray(images), mapping[labels], filenames)


def read_fer_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,H,W), labels int64 in LABELS order) from a FER2013-format npz; rows whose
    class has no Ekman label are dropped."""
    faces = fer_faces(path)
    keep = faces.labels >= 0
    if not keep.any():
        raise bad_file(Path(path), "no rows with a label among " + ", ".join(LABELS))
    return np.ascontiguousarray(faces.images[keep]), faces.labels[keep]


@dataclass(frozen=True)
class FerPlusVotes:
    """FER+ crowd votes for the rows of one FER2013 file (Barsoum et al. 2016).

    ``counts``: votes per class in LABELS order; the contempt, unknown and NF ("not a face")
    columns are dropped (pipeline.labels.FERPLUS_TO_OURS); rows that could not be matched to the
    lossless originals are all zero. A row is ``usable`` when it is matched and keeps a vote.
    """
    votes: np.ndarray     # uint8 (N,10), FERPLUS_COLUMNS order, as in the file
    matched: np.ndarray   # bool (N,)
    counts: np.ndarray    # int64 (N,7), LABELS order

    def take(self, rows: np.ndarray) -> FerPlusVotes:
        """The votes of ``rows`` (indices or a boolean mask)."""
        return FerPlusVotes(self.votes[rows], self.matched[rows], self.counts[rows])

    @property
    def usable(self) -> np.ndarray:
        return self.matched & (self.counts.sum(1) > 0)

    def targets(self) -> np.ndarray:
        """float32 (N,7): each usable row's votes / sum over the seven classes (zeros elsewhere);
        the soft targets of the FER+ paper's cross-entropy mode."""
        tot = self.counts.sum(1, keepdims=True)
        return np.where(self.usable[:, None], self.counts / np.maximum(tot, 1), 0).astype(np.float32)

    def majority(self) -> np.ndarray:
        """int64 (N,): the majority label (LABELS index) by the FER+ paper's test protocol, -1 where
        there is none. As in microsoft/FERPlus (``ferplus.py``, mode "majority"): a single
        annotator's vote for a column is discarded as an outlier, and a face has a label when one
        of the ten columns then holds more than half of the remaining votes; a majority for
        contempt, unknown or NF (no Ekman class) and unmatched rows give -1."""
        v = self.votes.astype(np.int64)
        v = np.where(v <= 1, 0, v) * self.matched[:, None]
        top = v.argmax(1)
        has = v.max(1) * 2 > v.sum(1)
        to_ours = np.array([-1 if c is None else c for c in FERPLUS_TO_OURS], dtype=np.int64)
        return np.where(has, to_ours[top], -1)

    def plurality(self) -> np.ndarray:
        """int64 (N,): the class with the most votes among the seven (LABELS index), -1 where
        the row is not usable or the top is tied."""
        top = self.counts.max(1)
        unique = (self.counts == top[:, None]).sum(1) == 1
        return np.where(self.usable & unique, self.counts.argmax(1), -1)


def ferplus_votes(path: str | Path, *, filenames: np.ndarray | None = None, n_rows: int | None = None) -> FerPlusVotes:
    """Read a ``ferplus_votes_*.npz`` (keys ``votes`` uint8 (N,10) in ``vote_columns`` order,
    ``matched`` bool, ``fer2013_filenames``). ``filenames`` (the FER2013 file's, when it has them)
    must equal ``fer2013_filenames`` row by row; otherwise ``n_rows`` must equal N."""
    path = Path(path)
    data = _load_npz(path, ("votes", "matched"), ("vote_columns", "fer2013_filenames"), "FER+ votes npz")
    votes, matched = data["votes"], data["matched"].astype(bool)
    columns = tuple(str(c) for c in data["vote_columns"]) if "vote_columns" in data else FERPLUS_COLUMNS
    theirs = data["fer2013_filenames"].astype(str) if "fer2013_filenames" in data else None
    if votes.ndim != 2 or votes.shape[1] != len(FERPLUS_COLUMNS) or matched.shape != votes.shape[:1]:
        raise bad_file(path, f"votes must be (N,{len(FERPLUS_COLUMNS)}) with one 'matched' flag per row, "
                          f"got {votes.shape} and {matched.shape}")
    if tuple(c.lower() for c in columns) != tuple(c.lower() for c in FERPLUS_COLUMNS):
        raise bad_file(path, f"vote_columns must be {', '.join(FERPLUS_COLUMNS)}, got {', '.join(columns)}")
    if filenames is not None and theirs is not None:
        if len(theirs) != len(filenames) or not np.array_equal(theirs, np.asarray(filenames).astype(str)):
            raise bad_file(path, "not row-aligned with the FER2013 file: fer2013_filenames differ from its filenames")
    elif n_rows is not None and n_rows != len(votes):
        raise bad_file(path, f"{len(votes)} vote rows for {n_rows} faces")
    elif filenames is None and n_rows is None and theirs is None:
        log.warning("%s: alignment with the faces cannot be checked (no filenames)", path)
    counts = np.zeros((len(votes), NUM_LABELS), dtype=np.int64)
    for col, ours in enumerate(FERPLUS_TO_OURS):
        if ours is not None:
            counts[:, ours] += votes[:, col]
    counts *= matched[:, None]  # unmatched rows carry no votes (all zero in the file too)
    return FerPlusVotes(np.ascontiguousarray(votes.astype(np.uint8)), matched, counts)


_FER_NAME = re.compile(r"^fer2013_([a-z]+)(?:_\d+)?\.npz$", re.IGNORECASE)


def ferplus_votes_path(fer_npz: str | Path) -> Path | None:
    """The FER+ vote file that belongs to a FER2013 file, by the shared data's naming
    (``fer2013_<split>[_<n>].npz`` -> ``ferplus_votes_<split>.npz`` in the same folder), if present."""
    fer_npz = Path(fer_npz)
    m = _FER_NAME.match(fer_npz.name)
    if m is None:
        return None
    candidate = fer_npz.with_name(f"ferplus_votes_{m.group(1).lower()}.npz")
    return candidate if candidate.is_file() else None


FER_LABELS = ("fer2013", "ferplus")


@dataclass(frozen=True)
class FerSplit:
    """Faces of one FER2013-format file (all its rows, or a selection in file order)."""
    images: np.ndarray              # uint8 (N,H,W) grey crops
    labels: np.ndarray              # int64 (N,) in LABELS order, the file's own or the FER+ majority; -1: none
    votes: FerPlusVotes | None      # row-aligned FER+ votes; None when not read
    rows: np.ndarray                # int64 (N,) the faces' row numbers in the file

    def take(self, rows: np.ndarray) -> FerSplit:
        """The faces ``rows`` (indices or a boolean mask) of this selection."""
        votes = None if self.votes is None else self.votes.take(rows)
        return FerSplit(self.images[rows], self.labels[rows], votes, self.rows[rows])

    def labelled(self) -> FerSplit:
        return self.take(self.labels >= 0)


def fer_split(path: str | Path, labels: str = "fer2013", *, votes: bool = False) -> FerSplit:
    """Every face of a FER2013-format npz (``fer_faces``) with ``labels`` "fer2013" (the file's own)
    or "ferplus" (the FER+ crowd majority, ``FerPlusVotes.majority``). The FER+ votes come from the
    ``ferplus_votes_<split>.npz`` beside the file (``ferplus_votes_path``), read for ferplus labels
    or with ``votes``; DataError naming the file when there is none."""
    if labels not in FER_LABELS:
        raise ValueError(f"labels must be one of {', '.join(FER_LABELS)}, got {labels!r}")
    path = Path(path)
    faces, crowd = fer_faces(path), None
    if votes or labels == "ferplus":
        if (vote_file := ferplus_votes_path(path)) is None:
            raise bad_file(path, "no ferplus_votes_<split>.npz beside it")
        crowd = ferplus_votes(vote_file, filenames=faces.filenames, n_rows=len(faces.labels))
    chosen = faces.labels if labels == "fer2013" else crowd.majority()
    return FerSplit(faces.images, chosen, crowd, np.arange(len(chosen)))

"""How alike two SFace embeddings of one person are, and of two people: the re-identification
threshold (``pipeline/people.py`` REID_THRESHOLD) measured, not guessed.

    python -m bench.reid_threshold [--json out.json]

Sets (shared data; credit KDEF, MEAD, the talking clips' sources when quoting the figures):
- KDEF, frontal and half-profile photos of its 50 actors (7 expressions, sessions A and B): one
  embedding per photo, detected and aligned as a video frame is. The threshold is chosen on the
  actors F01-F12 and M01-M12; the other 26 actors are the held-out people it is checked on.
- tracks of the shared talking clips (5 people) and the MEAD clips (one actor in 8 takes): every
  clip cut into 2-s pieces, each piece a "track" whose embedding is the mean of its faces at
  1 frame/s, as a short track in a video is. Same clip (or MEAD take of the same actor) = same person.

Rule: the lowest threshold (in steps of 0.01) at which at most FALSE_JOIN_RATE of the
different-people photo pairs of the choosing actors, and none of the clip tracks of different people,
are joined (a video of 10 people has 45 pairs: about 1 in 200 such videos would join two people
once); the figures at that threshold are reported for every set.
"""
from __future__ import annotations

import argparse
import csv
import sys

import numpy as np

from bench import emit

FALSE_JOIN_RATE = 1e-4
CHOOSING = {f"{s}{i:02d}" for s in "FM" for i in range(1, 13)}
ANGLES = ("frontal", "half_left", "half_right")


def _kdef(embedder, detector) -> tuple[np.ndarray, list[str]]:
    import cv2

    from emotion_pipeline.data import data_path
    folder = data_path("faces", "kdef")
    embs, people = [], []
    with open(folder / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["angle"] in ANGLES]
    for row in rows:
        image = cv2.imread(str(folder / row["file"]))
        boxes = detector.detect(image) if image is not None else []
        if not boxes:
            continue
        box = max(boxes, key=lambda b: b.area)
        embs.append(embedder.embed([embedder.align(image, box)])[0])
        people.append(row["person_id"])
    return np.stack(embs), people


def _clip_tracks(embedder, detector, piece_s: float = 2.0) -> tuple[np.ndarray, list[str]]:
    from emotion_pipeline import demux
    from emotion_pipeline.data import data_path
    clips = sorted(data_path("video", "talking").glob("*.mp4")) + sorted(data_path("video", "mead").glob("*.mp4"))
    embs, people = [], []
    for clip in clips:
        pieces: dict[int, list[np.ndarray]] = {}
        for frame in demux.iter_frames(clip, sample_fps=1.0, max_side_px=640):
            boxes = detector.detect(frame.image)
            if not boxes:
                continue
            box = max(boxes, key=lambda b: b.area)
            pieces.setdefault(int(frame.t_s // piece_s), []).append(embedder.embed([embedder.align(frame.image, box)])[0])
        who = "M030" if clip.parent.name == "mead" else clip.stem
        for vecs in pieces.values():
            m = np.mean(vecs, axis=0)
            embs.append(m / np.linalg.norm(m))
            people.append(who)
    return np.stack(embs), people


def _pairs(embs: np.ndarray, people: list[str], keep=None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities of same-person pairs, of different-people pairs) among rows ``keep``."""
    idx = np.arange(len(people)) if keep is None else np.flatnonzero(keep)
    sims = embs[idx] @ embs[idx].T
    who = np.array(people)[idx]
    same = who[:, None] == who[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    return sims[upper & same], sims[upper & ~same]


def _rates(same: np.ndarray, diff: np.ndarray, t: float) -> dict:
    return {"same_pairs": int(len(same)), "same_joined": round(float((same >= t).mean()), 4),
            "different_pairs": int(len(diff)), "different_joined": int((diff >= t).sum()),
            "different_max": round(float(diff.max()), 4), "same_median": round(float(np.median(same)), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    from emotion_pipeline.faces import FaceDetector
    from emotion_pipeline.models import registry
    from emotion_pipeline.people import REID_THRESHOLD, load_embedder

    embedder = load_embedder()
    detector = FaceDetector(registry.load("yunet", kind="detector", offline=True).path)
    k_embs, k_people = _kdef(embedder, detector)
    c_embs, c_people = _clip_tracks(embedder, detector)
    choosing = np.array([p in CHOOSING for p in k_people])
    sets = {"kdef_choosing": _pairs(k_embs, k_people, choosing),
            "kdef_held_out": _pairs(k_embs, k_people, ~choosing),
            "clip_tracks": _pairs(c_embs, c_people)}
    diff_photos, diff_tracks = sets["kdef_choosing"][1], sets["clip_tracks"][1]
    chosen = next(t for t in np.round(np.arange(0.2, 1.0, 0.01), 2)
                  if (diff_photos >= t).mean() <= FALSE_JOIN_RATE and not (diff_tracks >= t).any())
    report = {"rule": f"lowest t: at most {FALSE_JOIN_RATE} of kdef_choosing's different-people pairs and none of "
                      f"clip_tracks' joined",
              "chosen": chosen, "in_code": REID_THRESHOLD,
              "sets": {name: _rates(same, diff, chosen) for name, (same, diff) in sets.items()},
              "photos": len(k_people), "clip_tracks": len(c_people)}
    # the same figures at the value in the code, and at OpenCV's 0.363
    for t in sorted({REID_THRESHOLD, 0.363, 0.5}):
        report[f"at_{t}"] = {name: _rates(same, diff, t) for name, (same, diff) in sets.items()}
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())

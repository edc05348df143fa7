"""What shrunk face detection (``detect_face_px``, pipeline/faces.py ScaledDetection) does to reading faces.

    python -m bench.detect_scale [--sets faces/kdef,faces/ckplus48,faces/sfew] [--folds 5 --fold 0]
                                 [--px 0,64,96,128] [--clips DIR_OR_MP4 ...] [--model face-cnn]

Photos: each labelled photo set (any folder or CSV ``evaluate faces`` reads; with ``--folds`` the
people of ``--fold``) is cropped as ``evaluate faces`` crops it, except that the face found at full
size is searched again in the photo shrunk so that it is PX high (as a shrunk video frame is), and
cropped from the full photo at the box found there; accuracy of the face model per PX (0: full size).

Clips: every .mp4 (default: the shared talking and MEAD clips) through the face pass with each
``detect_face_px``; per-second face labels (mean of the second's probabilities) compared with
full-size detection: how many seconds keep their label, mean L1 change, seconds that gain or lose
a face.
"""
from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from emotion_pipeline.data import data_path


class _Shrunk:
    """A detector for photos that searches each one as ScaledDetection searches a frame between two
    full-size passes: at full size first, then shrunk (with the same fallback to full size)."""

    def __init__(self, base, px: int):
        self.base, self.px, self.name = base, px, f"{base.name}@{px}"

    def detect(self, image):
        from emotion_pipeline.faces import ScaledDetection

        detection = ScaledDetection(self.base, self.px)
        boxes = detection.detect(image, 0.0)                  # the full-size pass of a second ...
        return detection.detect(image, 0.25) if self.px else boxes   # ... and the next sampled frame


def photos(sets: list[str], sizes: list[int], model: str, folds: int, fold: int) -> None:
    from bench.face_models import face_predictor, views
    from emotion_pipeline.corpora.face_images import face_crops, labelled_images, person_folds, pipeline_detector
    from emotion_pipeline.encoders import probabilities
    from emotion_pipeline.faces import FACE_CROP_PX

    base, predictor = pipeline_detector(), face_predictor(model)
    print(f"photos, {model}, accuracy % by detect_face_px (fold {fold} of {folds})")
    for name in sets:
        path = Path(name) if Path(name).exists() else data_path(name)
        images = labelled_images(path)
        if folds:
            images = images.take(person_folds(images.person_ids, folds) == fold)
        row = []
        for px in sizes:
            pred = probabilities(predictor, face_crops(images, _Shrunk(base, px), FACE_CROP_PX).crops).argmax(1)
            row.append(f"{px}: " + ", ".join(f"{v} {100 * (pred[m] == images.labels[m]).mean():.1f}"
                                             for v, m in views(images).items()))
        print(f"  {path.name:12s} " + " | ".join(row))


def clips(paths: list[Path], sizes: list[int], model: str) -> None:
    from emotion_pipeline import demux
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig

    sizes = [0] + [px for px in sizes if px]
    analyzers = {px: Analyzer(AnalyzeConfig(whisper_model="none", progress=False, face_model=model, detect_face_px=px))
                 for px in sizes}
    totals: dict[int, list[float]] = {px: [0, 0, 0.0, 0] for px in sizes[1:]}
    for clip in paths:
        per: dict[int, dict[int, np.ndarray]] = {}
        for px, an in analyzers.items():
            obs, _, _ = an.face.observe(demux.iter_frames(clip, sample_fps=an.cfg.frames_per_second,
                                                          max_side_px=an.cfg.max_frame_side_px))
            second = defaultdict(list)
            for o in obs:
                second[int(o.t_s)].append(o.probs)
            per[px] = {s: np.mean(v, 0) for s, v in second.items()}
        for px in sizes[1:]:
            both = sorted(set(per[0]) & set(per[px]))
            t = totals[px]
            t[0] += sum(per[0][s].argmax() == per[px][s].argmax() for s in both)
            t[1] += len(both)
            t[2] += sum(float(np.abs(per[0][s] - per[px][s]).sum()) for s in both)
            t[3] += len(set(per[0]) ^ set(per[px]))
    print(f"clips ({len(paths)}), {model}: per-second face labels against full-size detection")
    for px, (same, n, l1, odd) in totals.items():
        print(f"  detect_face_px={px}: same label {same} of {n} seconds, mean L1 {l1 / max(n, 1):.3f}, "
              f"seconds that gain or lose a face {odd}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="faces/kdef,faces/ckplus48,faces/sfew", help="comma-separated photo sets ('none' to skip)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--px", default="0,64,96,128", help="comma-separated detect_face_px values (0 = full size)")
    ap.add_argument("--clips", nargs="*", default=None, help="videos or folders of .mp4 (default: shared talking + MEAD)")
    ap.add_argument("--model", default="face-cnn")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(v) for v in args.px.split(",")]
    if args.sets != "none":
        photos([s.strip() for s in args.sets.split(",") if s.strip()], sizes, args.model, args.folds, args.fold)
    where = [Path(c) for c in args.clips] if args.clips is not None else [data_path("video", "talking"), data_path("video", "mead")]
    videos = sorted(v for w in where for v in ([w] if w.is_file() else w.glob("*.mp4")))
    if videos:
        clips(videos, sizes, args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

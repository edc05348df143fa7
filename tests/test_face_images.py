"""Labelled face photos: reading sets, person folds, crops as the video pipeline makes them,
``evaluate faces``, and the face trainer's photo sets and video-like augmentation."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA, needs_data
from emotion_pipeline.corpora.face_images import face_crops, labelled_images, person_folds, pipeline_detector
from emotion_pipeline.errors import DataError
from emotion_pipeline.faces import FACE_CROP_PX, crop_still
from emotion_pipeline.labels import LABELS
from emotion_pipeline.models.face_cnn import FaceAugment, FaceCNNConfig, random_view

KDEF = DATA / "faces" / "kdef"
CKPLUS = DATA / "faces" / "ckplus48"


def _kdef_rows(person: str, angle: str = "frontal") -> list[dict]:
    with (KDEF / "labels.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["person_id"] == person and r["angle"] == angle]


@needs_data(KDEF)
def test_a_csv_of_photos_and_its_person_folds(tmp_path):
    rows = _kdef_rows("F02") + _kdef_rows("M03")
    listing = tmp_path / "mine.csv"
    with listing.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "person_id", "angle"])
        for r in rows:
            w.writerow([KDEF / r["file"], r["emotion"], r["person_id"], r["angle"]])
        w.writerow([KDEF / rows[0]["file"], "contempt", "F02", "frontal"])   # no Ekman class: dropped
    images = labelled_images(listing)
    assert len(images) == len(rows) and set(images.person_ids) == {"F02", "M03"}
    assert sorted(LABELS[k] for k in images.labels) == sorted(r["emotion"] for r in rows)
    folds = person_folds(images.person_ids, 5)
    for pid in ("F02", "M03"):   # one person, one fold, and the same fold in any order
        assert len({f for f, p in zip(folds, images.person_ids) if p == pid}) == 1
    assert list(person_folds(list(reversed(images.person_ids)), 5)) == list(reversed(folds))


def test_bad_listings_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        labelled_images(tmp_path / "nowhere")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,emotion\nmissing.jpg,happy\n")
    with pytest.raises(DataError, match="missing.jpg"):
        labelled_images(bad)
    bad.write_text("file,emotion\nx.jpg,grumpy\n")
    with pytest.raises(DataError, match="grumpy"):
        labelled_images(bad)
    (tmp_path / "happy").mkdir()
    with pytest.raises(DataError, match="no labelled photos"):
        labelled_images(tmp_path)


@needs_data(KDEF, CKPLUS)
def test_photos_are_cropped_as_video_frames_are(tmp_path):
    detector = pipeline_detector()
    photo = cv2.imread(str(KDEF / _kdef_rows("F02")[0]["file"]))
    still = crop_still(photo, detector, FACE_CROP_PX)
    assert still.detected and still.crop.shape == (FACE_CROP_PX, FACE_CROP_PX, 3)
    # the crop is the face: the detector finds it again, filling most of the crop
    again = detector.detect(cv2.resize(still.crop, (192, 192)))
    assert again and max(b.w for b in again) > 0.5 * 192
    # a 48 px grey crop (CK+48) is enlarged on a border of its own edges until the detector sees it
    tiny = cv2.imread(str(next((CKPLUS / "happy").glob("*.jpg"))))
    assert tiny.shape[:2] == (48, 48) and crop_still(tiny, detector, FACE_CROP_PX).detected
    # no face at all: the whole photo, flagged
    blank = crop_still(np.full((200, 300, 3), 128, np.uint8), detector, FACE_CROP_PX)
    assert not blank.detected and blank.crop.shape == (FACE_CROP_PX, FACE_CROP_PX, 3)
    # crops are cached by the files and settings
    images = labelled_images(KDEF).take(np.arange(6))
    first = face_crops(images, detector, FACE_CROP_PX, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("crops-*.npz"))) == 1
    assert np.array_equal(face_crops(images, detector, FACE_CROP_PX, cache_dir=tmp_path).crops, first.crops)


@needs_data(KDEF)
def test_evaluate_faces_command(tmp_path):
    rows = [r for p in ("F03", "M05") for r in _kdef_rows(p)]   # 7 expressions x 2 sessions each
    listing = tmp_path / "two.csv"
    with listing.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "emotion", "person_id", "angle"])
        for r in rows:
            w.writerow([KDEF / r["file"], r["emotion"], r["person_id"], r["angle"]])
    out = subprocess.run([sys.executable, "-m", "emotion_pipeline", "evaluate", "faces", "--data", str(listing)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["n"] == len(rows) == 28 and result["n_people"] == 2 and result["missed"] == 0
    assert set(result["per_class_recall"]) == set(LABELS)
    assert set(result["read_as_neutral"]) == set(LABELS[1:])          # every expressive class, neutral left out
    assert sum(result["read_as_neutral"].values()) == sum(result["confusion_matrix"][k][0] for k in range(1, 7))
    assert result["model"]["tta"] == "flip" and result["detector"].startswith("yunet")
    bad = subprocess.run([sys.executable, "-m", "emotion_pipeline", "evaluate", "faces", "--data",
                          str(tmp_path / "none.csv")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "none.csv" in bad.stderr and "Traceback" not in bad.stderr


def test_video_like_augmentation():
    cfg = FaceCNNConfig()
    images = torch.randint(0, 256, (16, 1, 48, 48), dtype=torch.uint8)
    torch.manual_seed(0)
    plain = random_view(images, cfg, FaceAugment())
    torch.manual_seed(0)
    off = random_view(images, cfg, FaceAugment(lowres_p=0.0, blur_p=0.0, contrast=0.0))
    assert torch.equal(plain, off)        # off by default: the 2.0.0 recipe draws the same views
    torch.manual_seed(0)
    on = random_view(images, cfg, FaceAugment(lowres_p=1.0, blur_p=1.0, contrast=0.0, erase_p=0.0))
    torch.manual_seed(0)
    sharp = random_view(images, cfg, FaceAugment(erase_p=0.0))
    assert on.shape == sharp.shape and not torch.equal(on, sharp)
    # shrinking and blurring remove detail: neighbouring pixels differ less
    def roughness(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean()
    assert roughness(on) < 0.7 * roughness(sharp)


@needs_data(KDEF, CKPLUS, DATA / "faces" / "fer2013")
def test_face_trainer_with_photo_sets(tmp_path):
    from emotion_pipeline.config import load
    from emotion_pipeline.train import face

    cfg = load(face.FaceConfig, None, [f"out_dir={tmp_path}/run", "epochs=1", "max_per_split=256", "threads=1",
                                       "targets=ferplus", "photo_sets=[faces/ckplus48]", "photo_repeat=1",
                                       "progress=false", "augment={lowres_p: 0.5, blur_p: 0.5, contrast: 0.2}",
                                       "model={widths: [8, 16], embed_dim: 16}"])   # a tiny network: seconds
    results = face.run(cfg)
    ck = results["validation_photos"]["none"]["ckplus48"]
    assert ck["n"] > 50 and 0.0 <= ck["accuracy"] <= 1.0
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val_ckplus48_accuracy" in history[-1] and "val_selection" in history[-1]

import numpy as np
import pytest

from emotion_pipeline import demux
from emotion_pipeline.faces import FaceDetector, FaceTracker, ScaledDetection, aligned_crop, iou
from emotion_pipeline.records import FaceBox
from tests.conftest import EDGE, MEAD, TALKING, YUNET, needs_data

pytestmark = needs_data


@pytest.fixture(scope="module", params=["yunet", "haar"])
def detector(request):
    return FaceDetector(YUNET if request.param == "yunet" else None)


def test_one_face_on_a_talking_head(detector):
    frames = list(demux.iter_frames(MEAD / "M030_front_neutral_level1_001.mp4", sample_fps=2))
    counts = [len(detector.detect(f.image)) for f in frames]
    assert np.mean([c == 1 for c in counts]) >= 0.8


def test_several_faces_on_the_group_photo():
    frame = next(demux.iter_frames(EDGE / "multi_face.jpg", sample_fps=1))
    assert len(FaceDetector(YUNET).detect(frame.image)) >= 4


def test_no_face_clip_finds_nothing():
    det = FaceDetector(YUNET)
    assert sum(len(det.detect(f.image)) for f in demux.iter_frames(EDGE / "no_face.mp4", sample_fps=2)) == 0


def test_yunet_gives_keypoints_and_crops_are_square():
    det = FaceDetector(YUNET)
    frame = next(demux.iter_frames(TALKING, sample_fps=1))
    (box,) = det.detect(frame.image)
    assert box.landmarks.shape == (5, 2)
    crop = aligned_crop(frame.image, box, 96)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8


def test_alignment_levels_the_eyes():
    """Rotate a face by 20 degrees: the aligned crop must match the upright one closely."""
    import cv2
    det = FaceDetector(YUNET)
    image = next(demux.iter_frames(MEAD / "M030_front_neutral_level1_001.mp4", sample_fps=1)).image
    (box,) = det.detect(image)
    upright = aligned_crop(image, box, 64).astype(float)
    rot = cv2.warpAffine(image, cv2.getRotationMatrix2D((128, 128), 20, 1.0), (256, 256), borderMode=cv2.BORDER_REPLICATE)
    (rbox,) = det.detect(rot)
    unaligned = aligned_crop(rot, FaceBox(rbox.x, rbox.y, rbox.w, rbox.h, rbox.score, None), 64).astype(float)
    aligned = aligned_crop(rot, rbox, 64).astype(float)
    assert np.abs(aligned - upright).mean() < 0.6 * np.abs(unaligned - upright).mean()


def test_tracker_keeps_identities():
    tr = FaceTracker(max_gap_s=1.0)
    a, b = FaceBox(10, 10, 50, 50, 0.9), FaceBox(200, 10, 60, 60, 0.9)
    first = tr.update(0.0, [a, b])
    moved = tr.update(0.25, [FaceBox(205, 12, 60, 60, 0.9), FaceBox(14, 11, 50, 50, 0.9)])
    assert first == [0, 1] and moved == [1, 0]          # order of detections does not matter
    assert tr.update(0.5, [FaceBox(400, 300, 40, 40, 0.9)]) == [2]   # a newcomer gets a new id
    assert tr.update(3.0, [FaceBox(12, 10, 50, 50, 0.9)]) == [3]     # after a long gap: a new track
    assert tr.dominant_id() == 1                         # largest x longest


def test_tracker_follows_the_speaker_through_a_clip():
    det, tr = FaceDetector(YUNET), FaceTracker()
    ids = set()
    for frame in demux.iter_frames(TALKING, sample_fps=4):
        ids.update(tr.update(frame.t_s, det.detect(frame.image)))
    assert len(ids) <= 2


def test_scaled_detection_finds_the_faces_full_size_detection_finds():
    """Between full-size searches (one a second) frames are searched shrunk: on a talking clip
    most frames are, and each box lies where the full-size search puts it."""
    det = FaceDetector(YUNET)
    frames = list(demux.iter_frames(TALKING, sample_fps=4))
    scaled = ScaledDetection(det, face_px=64)
    overlap, keypoints = [], []
    for f in frames:
        (full,) = det.detect(f.image)
        (shrunk,) = scaled.detect(f.image, f.t_s)
        overlap.append(iou(full, shrunk))
        keypoints.append(np.abs(full.landmarks - shrunk.landmarks).max() / full.w)
    # measured on this clip: IoU >= 0.845 (median 0.93), keypoints within 10.5 % of the face (median 4.6 %)
    assert min(overlap) > 0.8 and np.median(overlap) > 0.9
    assert max(keypoints) < 0.15 and np.median(keypoints) < 0.07
    assert scaled.shrunk >= 0.6 * len(frames) and scaled.full >= int(frames[-1].t_s)
    from emotion_pipeline.config import AnalyzeConfig
    from emotion_pipeline.faces import DETECT_FACE_PX
    assert AnalyzeConfig().detect_face_px == DETECT_FACE_PX   # analyze's default is the measured one
    off = ScaledDetection(det, face_px=0)
    for f in frames[:8]:
        off.detect(f.image, f.t_s)
    assert off.full == 8 and off.shrunk == 0


def test_scaled_detection_finds_a_small_face_that_appears_within_a_second():
    """A small face that joins a close-up between two full-size searches is found by the next one."""
    import cv2
    det = FaceDetector(YUNET)
    big = next(demux.iter_frames(TALKING, sample_fps=1)).image
    small = cv2.resize(next(demux.iter_frames(MEAD / "M030_front_neutral_level1_001.mp4", sample_fps=1)).image, (96, 96))
    canvas = np.full((360, 640, 3), 90, np.uint8)
    canvas[50:306, 40:296] = big
    both = canvas.copy()
    both[150:246, 480:576] = small
    assert len(det.detect(both)) == 2
    scaled = ScaledDetection(det, face_px=64)
    found = [len(scaled.detect(canvas if t < 0.5 else both, t)) for t in np.arange(0, 2.0, 0.25)]
    assert found[:2] == [1, 1] and 2 in found[2:5] and found[4:] == [2, 2, 2, 2]

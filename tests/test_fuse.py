import numpy as np
import pytest
import torch

from emotion_pipeline.models.fusion_head import FusionHead, FusionHeadConfig
from emotion_pipeline import fuse
from emotion_pipeline.labels import LABEL_INDEX, NUM_LABELS
from emotion_pipeline.records import ModalityScores


def scores(label: str, conf: float) -> ModalityScores:
    p = np.full(NUM_LABELS, (1 - conf) / (NUM_LABELS - 1), np.float32)
    p[LABEL_INDEX[label]] = conf
    return ModalityScores(p)


def test_average_ignores_missing_modalities_and_weights_confidence():
    fused = fuse.average([scores("happy", 0.9), None, scores("sad", 0.4)], (1, 1, 1))
    assert fused.details["modalities"] == ["face", "text"]
    assert np.argmax(fused.probs) == LABEL_INDEX["happy"]
    assert fused.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert fuse.average([None, None, None], (1, 1, 1)) is None


def test_modality_weights_can_switch_a_modality_off():
    fused = fuse.average([scores("happy", 0.9), scores("angry", 0.5), None], (0, 1, 1))
    assert np.argmax(fused.probs) == LABEL_INDEX["angry"] and fused.details["modalities"] == ["audio"]


def test_smoothing_keeps_gaps_and_averages_neighbours():
    seq = [scores("happy", 0.9), scores("sad", 0.9), None, scores("happy", 0.9)]
    out = fuse.smooth(seq, 3)
    assert out[2] is None
    assert np.argmax(out[1].probs) == LABEL_INDEX["happy"]       # a one-second blip is smoothed away
    assert fuse.smooth(seq, 1) is seq


def test_head_masks_missing_modalities():
    torch.manual_seed(0)
    head = FusionHead(FusionHeadConfig()).eval()
    probs = torch.softmax(torch.randn(4, 3, NUM_LABELS), -1)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 0, 0], [0, 1, 1]], dtype=torch.float32)
    probs2 = probs.clone()
    probs2[1, 1:] = torch.rand(2, NUM_LABELS)      # what is under a mask must not matter
    a, b = head(probs, mask), head(probs2, mask)
    assert torch.allclose(a[1], b[1]) and a.shape == (4, NUM_LABELS)


def _described(face="a", tta=None):
    face_entry = {"sha256": face * 64, **({"tta": tta} if tta != "absent" else {})}
    return {"face": face_entry, "audio": {"sha256": "b" * 64}, "text": {"sha256": "c" * 64}}


def test_head_mismatch_is_explained():
    from emotion_pipeline.models.registry import LoadedModel
    head = LoadedModel("fusion-head", "fusion_head", FusionHead(), {"encoders": {"face": "a" * 64, "audio": "b" * 64}}, "c", "p")
    assert fuse.head_mismatch(head, _described()) is None
    assert "face encoder" in fuse.head_mismatch(head, _described(face="d"))
    assert "audio encoder" in fuse.head_mismatch(head, {"face": {"sha256": "a" * 64}})


def test_head_mismatch_checks_encoder_settings():
    """A head trained on flip-averaged face scores is not used on single-view scores (and back)."""
    from emotion_pipeline.models.registry import LoadedModel
    record = fuse.encoder_record(_described(tta="flip"))
    assert record == {"encoders": {"face": "a" * 64, "audio": "b" * 64, "text": "c" * 64},
                      "encoder_settings": {"face": {"tta": "flip"}}}
    head = LoadedModel("fusion-head", "fusion_head", FusionHead(), record, "c", "p")
    assert fuse.head_mismatch(head, _described(tta="flip")) is None
    reason = fuse.head_mismatch(head, _described(tta=None))
    assert reason and "face scores with {'tta': 'flip'}" in reason and "{'tta': None}" in reason
    assert "no extra settings" in fuse.head_mismatch(head, _described(tta="absent"))
    old_head = LoadedModel("fusion-head", "fusion_head", FusionHead(), {"encoders": record["encoders"]}, "c", "p")
    assert fuse.head_mismatch(old_head, _described(tta=None)) is None  # heads from before settings were recorded


def test_shipped_head_records_the_pipeline_face_tta():
    from emotion_pipeline.models import face_cnn, registry
    head = registry.load("fusion-head")
    assert head.meta.get("encoder_settings", {}).get("face") == {"tta": face_cnn.DEFAULT_TTA}


def test_a_gated_head_never_changes_a_lone_modality_ranking():
    """The gated head weighs modalities against each other; alone, a modality's ranking passes
    through (random gates and the shipped head)."""
    from emotion_pipeline.models import registry
    torch.manual_seed(0)
    random_head = FusionHead(FusionHeadConfig(kind="gated"))
    with torch.no_grad():
        for p in random_head.parameters():
            p.normal_()
    probs = torch.softmax(3 * torch.randn(300, 3, NUM_LABELS), -1)
    for head in (random_head, registry.load("fusion-head").module):
        for j in range(3):
            mask = torch.zeros(300, 3)
            mask[:, j] = 1
            fused = head(probs, mask)
            assert torch.equal(fused.argsort(-1), probs[:, j].argsort(-1)) or \
                torch.equal(fused.argmax(-1), probs[:, j].argmax(-1))


def test_an_emotionally_neutral_sentence_does_not_outvote_the_voice():
    """Issue 12: RAVDESS's two sentences carry no emotion; with the shipped head, a voice that
    says an emotion at 0.4 (every other class 0.1) keeps it when the sentence's text scores are
    fused in (head version 1 lost 2 of these 12)."""
    import numpy as np
    from emotion_pipeline.encoders import load_predictor
    from emotion_pipeline.models import registry
    text = load_predictor("text", "text-minilm", device=torch.device("cpu"), offline=True)
    sentences, _ = text.predict(["Kids are talking by the door.", "Dogs are sitting by the door."])
    head = registry.load("fusion-head").module
    for k in range(1, NUM_LABELS):                      # every emotion but neutral
        voice = np.full(NUM_LABELS, 0.1, np.float32)
        voice[k] = 0.4
        for words in sentences:
            probs = torch.from_numpy(np.stack([np.full(NUM_LABELS, 1 / NUM_LABELS, np.float32), voice, words]))[None]
            assert int(head(probs, torch.tensor([[0.0, 1.0, 1.0]])).argmax()) == k

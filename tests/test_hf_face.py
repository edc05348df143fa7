"""The full-profile face path with a small random-initialised ViT saved in the hub's own layout."""
import numpy as np
import pytest

from emotion_pipeline.models import registry
from emotion_pipeline.models.hf_face import load_dir
from emotion_pipeline.labels import LABEL_INDEX

FER_NAMES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt"]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, num_labels=len(FER_NAMES),
                    id2label=dict(enumerate(FER_NAMES)), label2id={n: i for i, n in enumerate(FER_NAMES)})
    folder = tmp_path_factory.mktemp("vit")
    ViTForImageClassification(cfg).save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_tiny_vit_loads_and_maps_labels(tiny_vit):
    clf = load_dir(tiny_vit)
    crops = np.random.default_rng(0).integers(0, 255, (3, 96, 96, 3), dtype=np.uint8)
    probs, embs = clf.predict(crops)
    assert probs.shape == (3, 7) and embs.shape == (3, 32)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)      # contempt's mass renormalised away
    assert clf.labels.dropped == ["contempt"] and clf.labels.missing == []
    source = np.eye(len(FER_NAMES), dtype=np.float32)
    mapped = clf.labels(source)
    assert mapped[FER_NAMES.index("fear"), LABEL_INDEX["fearful"]] == 1.0
    grey_probs, _ = clf.predict(crops[..., 0])                     # grey crops are accepted too
    assert grey_probs.shape == (3, 7)


def test_registry_takes_a_local_folder_and_refuses_pickles(tiny_vit, tmp_path):
    clf = registry.load(str(tiny_vit), kind="face", offline=True)
    assert clf.source == str(tiny_vit) and clf.sha256 == registry.sources.sha256_file(tiny_vit / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    from emotion_pipeline.models.registry import ModelUnavailableError
    with pytest.raises(ModelUnavailableError, match="safetensors"):
        load_dir(tmp_path)


def test_pipeline_loads_a_hub_layout_folder_as_its_face_model(tiny_vit):
    """The `full` profile's path: a model name resolving to a local HF folder, used by the face encoder."""
    import torch

    from emotion_pipeline.encoders import load_predictor
    pred = load_predictor("face", str(tiny_vit), device=torch.device("cpu"), offline=True)
    probs, embs = pred.predict(np.zeros((2, 96, 96, 3), np.uint8))
    assert probs.shape == (2, 7) and pred.describe()["name"] == str(tiny_vit)

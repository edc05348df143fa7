"""FaceCNN, prepare(), weight round trip, training augmentation, pipeline.evaluate.face."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from emotion_pipeline.models import registry, weights_io
from emotion_pipeline.models.face_cnn import (FaceAugment, FaceCNN, FaceCNNConfig, predict, predict_logits, prepare,
                                              random_view, tta_views)
from emotion_pipeline.corpora.faces import read_fer_npz
from emotion_pipeline.evaluate.face import run
from emotion_pipeline.labels import FER2013_CLASSES, LABEL_INDEX, LABELS

SMALL = FaceCNNConfig(widths=(8, 16), embed_dim=12)  # tiny but same code paths as the shipped net


@pytest.fixture(scope="module")
def model() -> FaceCNN:
    torch.manual_seed(0)
    net = FaceCNN(SMALL)
    with torch.no_grad():  # non-trivial BN statistics and classifier, so the round trip checks them
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        net.classifier.weight.normal_(0, 0.5)
    return net.eval()


def constant_model(label: str) -> FaceCNN:
    """A FaceCNN that predicts ``label`` for every input (zero weights, one positive bias)."""
    net = FaceCNN(SMALL).eval()
    with torch.no_grad():
        net.classifier.weight.zero_()
        net.classifier.bias.zero_()
        net.classifier.bias[LABEL_INDEX[label]] = 5.0
    return net


def test_output_shapes_and_label_order(model):
    x = torch.randn(3, 1, SMALL.input_size, SMALL.input_size)
    logits, emb = model.forward_with_embedding(x)
    assert logits.shape == (3, len(LABELS)) == (3, 7)
    assert emb.shape == (3, SMALL.embed_dim)
    assert torch.equal(model(x), logits)
    default = FaceCNN()
    assert default.classifier.out_features == 7 and default.config.in_channels == 1


def test_prepare_shape_dtype_and_normalisation():
    cfg = FaceCNNConfig()
    out = prepare(np.full((2, 90, 70), 128, np.uint8), cfg)
    assert out.shape == (2, 1, cfg.input_size, cfg.input_size) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (128 / 255 - cfg.mean) / cfg.std), atol=1e-5)
    # a 48 px crop is not resized, only centre-cropped; a single (H,W) crop gets a batch axis
    img = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    one = prepare(img, cfg)
    off = (48 - cfg.input_size) // 2
    want = (torch.from_numpy(img[off:off + cfg.input_size, off:off + cfg.input_size]).float() / 255 - cfg.mean) / cfg.std
    assert one.shape == (1, 1, cfg.input_size, cfg.input_size)
    assert torch.allclose(one[0, 0], want, atol=1e-6)
    with pytest.raises(ValueError):
        prepare(np.zeros((2, 3, 4, 5, 6), np.uint8), cfg)


def test_training_without_augmentation_matches_prepare():
    """The trainer's validation input is exactly what prepare() gives the pipeline."""
    from emotion_pipeline.train.face import FaceConfig
    imgs = np.random.default_rng(1).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    cfg = FaceConfig(augment=None)
    view = random_view(torch.from_numpy(imgs)[:, None], cfg.model, cfg.augment)
    assert torch.allclose(view, prepare(imgs, cfg.model))
    # augmented batches (the trainer's default) keep the shape and stay finite
    assert FaceConfig().augment == FaceAugment()
    out = random_view(torch.from_numpy(imgs)[:, None], cfg.model, FaceAugment())
    assert out.shape == (4, 1, 40, 40) and torch.isfinite(out).all()


def test_tta_views():
    imgs = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    assert len(tta_views(imgs, SMALL, None)) == 1
    assert len(tta_views(imgs, SMALL, "flip")) == 2
    assert len(tta_views(imgs, SMALL, "crops10")) == 10
    with pytest.raises(ValueError):
        tta_views(imgs, SMALL, "bogus")


def test_predict_matches_prepare_then_forward(model):
    crops = np.random.default_rng(4).integers(0, 256, (3, 60, 60), dtype=np.uint8)
    logits, emb = predict(model, crops, tta=None)
    with torch.no_grad():
        want_logits, want_emb = model.forward_with_embedding(prepare(crops, SMALL))
    assert torch.allclose(logits, want_logits, atol=1e-5) and torch.allclose(emb, want_emb, atol=1e-5)
    flip_logits, flip_emb = predict(model, crops, tta="flip")
    assert flip_logits.shape == (3, 7) and flip_emb.shape == (3, SMALL.embed_dim)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_save_and_registry_load_round_trip(model, tmp_path, dtype):
    path = tmp_path / "face.safetensors"
    digest = weights_io.save(path, model, arch="face_cnn", config=SMALL, extra={"version": "test"}, dtype=dtype)
    loaded = registry.load(path)
    assert loaded.arch == "face_cnn" and loaded.sha256 == digest and loaded.meta["version"] == "test"
    assert loaded.meta["labels"] == list(LABELS)
    x = prepare(np.random.default_rng(2).integers(0, 256, (5, 48, 48), dtype=np.uint8), SMALL)
    with torch.no_grad():
        if dtype is None:
            assert torch.equal(loaded.module(x), model(x))
        else:
            assert torch.allclose(loaded.module(x), model(x), atol=5e-2)


def write_fer(path, labels, classes=None, size=48):
    rng = np.random.default_rng(3)
    arrays = {"images": rng.integers(0, 256, (len(labels), size, size), dtype=np.uint8),
              "labels": np.asarray(labels, dtype=np.int64)}
    if classes is not None:
        arrays["classes"] = np.asarray(classes)
    np.savez(path, **arrays)
    return path


def test_evaluate_accuracy_with_known_predictions(tmp_path):
    weights = tmp_path / "happy.safetensors"
    weights_io.save(weights, constant_model("happy"), arch="face_cnn", config=SMALL)
    fer_happy, fer_sad = FER2013_CLASSES.index("happy"), FER2013_CLASSES.index("sad")
    # no `classes` key: FER2013 order; 3 of 5 faces happy
    data = write_fer(tmp_path / "fer.npz", [fer_happy, fer_sad, fer_happy, fer_happy, fer_sad])
    out = run(data, model=str(weights))
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["per_class_recall"]["happy"] == 1.0 and out["per_class_recall"]["sad"] == 0.0
    assert out["confusion_matrix"][LABEL_INDEX["sad"]][LABEL_INDEX["happy"]] == 2
    assert out["data"] == str(data) and out["model"] == str(weights) and len(out["sha256"]) == 64
    assert "macro_f1" in out
    # a file with its own class order (and 64 px crops): index 0 is "happy" there
    own = write_fer(tmp_path / "own.npz", [0, 1, 0], classes=["happiness", "anger"], size=64)
    out = run(own, model=str(weights), tta="flip")
    assert out["accuracy"] == pytest.approx(2 / 3) and out["support"]["angry"] == 1


def test_evaluate_bad_input_names_the_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(ValueError, match="nope.npz"):
        run(missing)
    wrong = tmp_path / "wrong_keys.npz"
    np.savez(wrong, x=np.zeros((2, 48, 48), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="wrong_keys.npz.*'images'"):
        read_fer_npz(wrong)
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    with pytest.raises(ValueError, match="garbage.npz"):
        read_fer_npz(garbage)
    bad_label = write_fer(tmp_path / "bad_label.npz", [0, 9])
    with pytest.raises(ValueError, match="bad_label.npz"):
        read_fer_npz(bad_label)


@pytest.mark.skipif(not registry.shipped_path("face-cnn").exists(), reason="shipped face_cnn.safetensors not present")
def test_shipped_model_loads_and_verifies():
    path = registry.shipped_path("face-cnn")
    assert registry.recorded_checksums().get(path.name) == weights_io.sha256_file(path)
    loaded = registry.load("face-cnn")  # raises ChecksumError on a mismatch
    assert loaded.arch == "face_cnn" and loaded.meta["labels"] == list(LABELS)
    assert path.stat().st_size < 10 * 2**20
    x = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    assert predict_logits(loaded.module, x, "flip").shape == (2, 7)


def test_pipeline_face_predictor_averages_the_mirror():
    """With flip TTA (the default) a crop and its mirror image get the same scores, and those are
    the softmax of the mean of the two plain log-probabilities."""
    from emotion_pipeline.models import face_cnn, registry
    from emotion_pipeline.encoders import ShippedFace

    assert face_cnn.DEFAULT_TTA == "flip"
    loaded = registry.load("face-cnn")
    flip = ShippedFace(loaded, torch.device("cpu"), precision="float32")
    plain = ShippedFace(loaded, torch.device("cpu"), tta=None, precision="float32")
    assert flip.describe()["tta"] == "flip" and flip.describe()["sha256"] == loaded.sha256
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    mirrored = crops[:, :, ::-1].copy()
    p_flip, e_flip = flip.predict(crops)
    p_mirror, _ = flip.predict(mirrored)
    np.testing.assert_allclose(p_flip, p_mirror, atol=1e-4)
    a, _ = plain.predict(crops)
    b, _ = plain.predict(mirrored)
    assert not np.allclose(a, b, atol=1e-3)  # the CNN itself is not mirror-invariant
    mean_log = (np.log(a) + np.log(b)) / 2
    expected = np.exp(mean_log) / np.exp(mean_log).sum(1, keepdims=True)
    np.testing.assert_allclose(p_flip, expected, atol=1e-4)
    assert e_flip.shape == (5, loaded.module.embedding_dim)


def test_swa_average_and_batchnorm_recalibration(tmp_path):
    """SWA (train.loop.average): weights are the parameter mean of the runs' last.pt, and after
    recalibrating on a set of images in one batch, eval mode on those images matches train mode
    (batch statistics), up to the unbiased vs biased variance; other architectures are refused."""
    from emotion_pipeline.errors import TrainingError
    from emotion_pipeline.train.face import FaceConfig
    from emotion_pipeline.train.loop import RunDir, average
    torch.manual_seed(0)
    small = dataclasses.replace(SMALL, dropout=0.0)  # so that train mode differs from eval only in BN
    a, b = FaceCNN(small), FaceCNN(small)
    for name, net in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        RunDir(tmp_path / name).save("last", {"model": net.state_dict(), "epoch": 3, "best_metric": 0.5})
    cfg = FaceConfig(model=small, mode="average", average_of=(str(tmp_path / "a"), str(tmp_path / "b")),
                     out_dir=str(tmp_path / "swa"), augment=None)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (300, 1, 48, 48), dtype=np.uint8))
    x = random_view(images, cfg.model, cfg.augment)
    model = average(cfg, FaceCNN(small), which="last", bn_batches=[x])
    for key, value in a.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            torch.testing.assert_close(model.state_dict()[key], (value + b.state_dict()[key]) / 2)
    assert not model.training and (tmp_path / "swa" / "best.pt").exists()
    with torch.no_grad():
        eval_out = model(x)
        train_out = model.train()(x)  # BN on this batch's statistics
    calibrated_gap = (eval_out - train_out).abs().max()
    assert calibrated_gap < 0.05 * train_out.abs().max()
    uncalibrated = average(cfg, FaceCNN(small), which="last")
    with torch.no_grad():  # the runs' initial statistics (mean 0, var 1) do not match these images
        assert (uncalibrated.eval()(x) - train_out).abs().max() > 20 * calibrated_gap
    RunDir(tmp_path / "b").save("last", {"model": FaceCNN(FaceCNNConfig(widths=(8, 24), embed_dim=12)).state_dict()})
    with pytest.raises(TrainingError, match="another architecture"):  # same keys, other shapes
        average(cfg, FaceCNN(small), which="last")


def test_weighted_average_of_a_run_and_a_weights_file(tmp_path):
    """WiSE-FT: ``average_weights`` interpolates a fine-tuned run's best.pt with the weights file it
    started from (a face_cnn .safetensors read through the trainer's load_source)."""
    from emotion_pipeline.config import SettingError
    from emotion_pipeline.train.face import FaceConfig, initial_weights
    from emotion_pipeline.train.loop import RunDir, average
    torch.manual_seed(1)
    start, tuned = FaceCNN(SMALL), FaceCNN(SMALL)
    weights_io.save(tmp_path / "start.safetensors", start, arch="face_cnn", config=SMALL)
    (tmp_path / "run").mkdir()
    RunDir(tmp_path / "run").save("best", {"model": tuned.state_dict(), "epoch": 2, "best_metric": 0.7})
    cfg = FaceConfig(model=SMALL, mode="average", augment=None, out_dir=str(tmp_path / "mix"),
                     average_of=(str(tmp_path / "run" / "best.pt"), str(tmp_path / "start.safetensors")),
                     average_weights=(3.0, 1.0))
    model = average(cfg, FaceCNN(SMALL), which="last", load_source=initial_weights)
    for key, value in tuned.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(model.state_dict()[key], 0.75 * value + 0.25 * start.state_dict()[key],
                                       rtol=1e-3, atol=1e-3)   # the file may be float16
    with pytest.raises(SettingError, match="average_weights"):
        FaceConfig(mode="average", average_of=("a", "b"), average_weights=(1.0,))


def test_output_ensemble_mixes_member_probabilities_and_round_trips(tmp_path):
    """An ensemble file (FaceCNNConfig.members, trainer mode ensemble) gives the weighted mean of its
    members' probabilities and their embeddings side by side, through save, registry load and the
    pipeline's predictor; an ensemble is refused as a network to fine-tune, and weights that do not
    match the members are refused."""
    from emotion_pipeline.encoders import ShippedFace
    from emotion_pipeline.errors import TrainingError
    from emotion_pipeline.models.face_cnn import ensemble_of
    from emotion_pipeline.train.face import FaceConfig, ensemble, initial_weights
    torch.manual_seed(2)
    a, b = FaceCNN(SMALL).eval(), FaceCNN(SMALL).eval()
    with torch.no_grad():
        for net in (a, b):   # members that disagree clearly
            net.classifier.weight.normal_(0, 0.5)
            net.classifier.bias.normal_(0, 1.0)
    for name, net in (("a", a), ("b", b)):
        weights_io.save(tmp_path / f"{name}.safetensors", net, arch="face_cnn", config=SMALL)
    cfg = FaceConfig(model=SMALL, mode="ensemble", augment=None, out_dir=str(tmp_path / "ens"),
                     average_of=(str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")),
                     average_weights=(1.0, 3.0), export=None)
    model = ensemble(cfg)
    x = torch.randn(4, 1, SMALL.input_size, SMALL.input_size)
    with torch.no_grad():
        logits, emb = model.forward_with_embedding(x)
        (la, ea), (lb, eb) = a.forward_with_embedding(x), b.forward_with_embedding(x)
    mixed = 0.25 * torch.softmax(la, 1) + 0.75 * torch.softmax(lb, 1)
    torch.testing.assert_close(torch.softmax(logits, 1), mixed, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(mixed, torch.softmax(lb, 1), atol=1e-3)   # both members count
    torch.testing.assert_close(emb, torch.cat([ea, eb], 1))
    assert model.embedding_dim == 2 * SMALL.embed_dim == emb.shape[1]
    # one file, loaded by path like any face model, scored by the pipeline's predictor
    weights_io.save(tmp_path / "ens.safetensors", model, arch="face_cnn", config=model.config)
    loaded = registry.load(tmp_path / "ens.safetensors", kind="face")
    assert loaded.module.config.members == 2 and loaded.module.config.member_weights == (1.0, 3.0)
    crops = np.random.default_rng(0).integers(0, 256, (3, 60, 60), dtype=np.uint8)
    probs, embs = ShippedFace(loaded, torch.device("cpu"), tta=None, precision="float32").predict(crops)
    with torch.no_grad():
        la, lb = a(prepare(crops, SMALL)), b(prepare(crops, SMALL))
    np.testing.assert_allclose(probs, (0.25 * torch.softmax(la, 1) + 0.75 * torch.softmax(lb, 1)).numpy(), atol=1e-5)
    assert embs.shape == (3, 2 * SMALL.embed_dim)
    with pytest.raises(TrainingError, match="ensemble of 2"):
        initial_weights(str(tmp_path / "ens.safetensors"))
    with pytest.raises(ValueError, match="weights"):
        ensemble_of([(SMALL, a.state_dict()), (SMALL, b.state_dict())], [1.0])
    with pytest.raises(ValueError, match="member_weights"):
        FaceCNN(dataclasses.replace(SMALL, members=2, member_weights=(1.0, -1.0)))


def test_precision_auto_follows_the_cpu_and_bfloat16_keeps_the_labels_of_real_faces():
    """``auto`` is bfloat16 exactly where the CPU computes it natively (never on a GPU); bfloat16
    and float32 give the same label to nearly every real face (FER2013 PublicTest's first 512, or
    128 where the CPU emulates bfloat16: 5x slower than float32 there)."""
    from emotion_pipeline.corpora.faces import fer_faces
    from emotion_pipeline.data import data_path
    from emotion_pipeline.encoders import ShippedFace
    from emotion_pipeline.models import face_cnn

    from emotion_pipeline.config import AnalyzeConfig, SettingError

    for p in face_cnn.PRECISIONS:   # the config accepts exactly the precisions the model knows
        assert AnalyzeConfig(face_precision=p).face_precision == p
    with pytest.raises(SettingError, match="face_precision"):
        AnalyzeConfig(face_precision="int8")
    assert face_cnn.resolve_precision("auto") == ("bfloat16" if face_cnn.native_bf16() else "float32")
    assert face_cnn.resolve_precision("auto", "cuda") == "float32"
    assert face_cnn.resolve_precision("float32") == "float32"
    with pytest.raises(ValueError, match="precision"):
        face_cnn.resolve_precision("int8")
    loaded = registry.load("face-cnn")
    auto = ShippedFace(loaded, torch.device("cpu"))
    assert auto.describe()["precision"] == face_cnn.resolve_precision("auto")   # the output records the one used
    with pytest.raises(ValueError, match="precision"):
        ShippedFace(loaded, torch.device("cpu"), precision="half")
    path = data_path("faces", "fer2013", "fer2013_publictest_3589.npz")
    if not path.exists():
        pytest.skip(f"{path} not present")
    crops = fer_faces(path).images[:512 if face_cnn.native_bf16() else 128]
    p32, _ = ShippedFace(loaded, torch.device("cpu"), precision="float32").predict(crops)
    p16, _ = ShippedFace(loaded, torch.device("cpu"), precision="bfloat16").predict(crops)
    assert np.abs(p32 - p16).max() < 0.05
    assert (p32.argmax(1) == p16.argmax(1)).mean() >= 0.99

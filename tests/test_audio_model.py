"""Audio CNN, window scoring, weight round trip, pipeline.evaluate.audio and models.hf_audio."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from emotion_pipeline.models import registry, weights_io
from emotion_pipeline.models.audio_cnn import AudioCNN, AudioCNNConfig
from emotion_pipeline.audio_windows import resample, score_clip, score_windows, window_starts
from emotion_pipeline.data import data_path
from emotion_pipeline.labels import LABELS
from tests.conftest import require_data

SR = 16000
RAVDESS = data_path("speech", "ravdess")
# neutral (actor 1), angry (actor 4), happy (actor 9): three classes, three speakers
CLIPS = ["Actor_01/03-01-01-01-01-01-01.flac", "Actor_04/03-01-05-02-02-01-04.flac",
         "Actor_09/03-01-03-01-01-02-09.flac"]


@pytest.fixture(scope="module")
def model() -> AudioCNN:
    torch.manual_seed(0)
    net = AudioCNN(AudioCNNConfig(channels=(8, 16, 16, 32), embedding_dim=24)).eval()
    # give BatchNorm non-trivial statistics so the round trip checks them too
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture(scope="module")
def weight_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "audio_test.safetensors"
    weights_io.save(path, model, arch="audio_cnn", config=model.config, extra={"version": "test"})
    return path


def test_shapes_and_embedding(model):
    wave = torch.randn(3, 3 * SR) * 0.1
    logits, emb = model.forward_with_embedding(wave)
    assert logits.shape == (3, len(LABELS)) and emb.shape == (3, 24)
    assert torch.allclose(model(wave), logits)


@pytest.mark.parametrize("seconds", [0.05, 0.5, 1.3, 3.0, 11.0])
def test_any_length_and_silence(model, seconds):
    n = int(seconds * SR)
    for wave in (torch.randn(1, n) * 0.1, torch.zeros(1, n)):
        out = model(wave)
        assert out.shape == (1, len(LABELS)) and torch.isfinite(out).all()
    assert model(torch.randn(n) * 0.1).shape == (1, len(LABELS))  # 1-D input is one example


def test_gain_invariance(model):
    wave = torch.randn(2, 2 * SR) * 0.05
    assert torch.allclose(model(wave), model(wave * 8), atol=1e-3)


def test_frontend_buffers_not_saved(model):
    keys = model.state_dict().keys()
    assert not any("mel_fb" in k or "stft_window" in k for k in keys)


def test_augmentation_keeps_shapes_and_input():
    from emotion_pipeline.models.audio_cnn import AudioAugment, augment_waves, spec_augment

    waves = [np.ones(4 * SR, np.float32), np.ones(SR, np.float32)]  # longer and shorter than the 3 s window
    out = augment_waves(waves, AudioCNNConfig(), AudioAugment(noise_prob=0.0), np.random.default_rng(0))
    assert out.shape == (2, 3 * SR) and out[0].unique().numel() == 1 and out[1].count_nonzero() == SR
    torch.manual_seed(0)
    feats = torch.ones(2, 1, 64, 301)
    masked = spec_augment(feats, AudioAugment(time_masks=0))
    assert feats.eq(1).all() and masked.shape == feats.shape  # the input is left as it was
    bands = (masked == 0).all(-1)  # only whole mel bands are masked
    assert bands.any() and ((masked == 0).sum((-2, -1)) == bands.sum(-1) * 301).all()


def test_registry_round_trip(model, weight_file):
    loaded = registry.load(str(weight_file))
    assert loaded.arch == "audio_cnn" and loaded.meta["version"] == "test"
    assert loaded.module.config == model.config
    wave = torch.randn(2, 2 * SR) * 0.1
    with torch.no_grad():
        assert torch.equal(loaded.module(wave), model(wave))


def test_window_starts():
    assert window_starts(10, 48, 16).tolist() == [0]
    assert window_starts(48, 48, 16).tolist() == [0]
    assert window_starts(100, 48, 16).tolist() == [0, 16, 32, 48, 52]  # last window ends at 100


def test_score_windows_and_clip(model):
    wave = (np.random.default_rng(0).standard_normal(int(7.5 * SR)) * 0.1).astype(np.float32)
    starts, probs, embs = score_windows(model, wave, SR, hop_s=1.0)
    assert starts.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 4.5]
    assert probs.shape == (6, 7) and embs.shape == (6, 24)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(score_clip(model, wave, SR), probs.mean(0), atol=1e-6)
    # the window is the model's own 3 s: window 0 equals scoring the first 3 s alone
    with torch.no_grad():
        first = torch.softmax(model(torch.from_numpy(wave[: 3 * SR])), -1)[0].numpy()
    np.testing.assert_allclose(probs[0], first, atol=1e-5)
    # other sample rates and stereo are converted
    stereo = np.stack([wave[: 2 * SR], wave[: 2 * SR]], axis=1)
    assert score_clip(model, stereo, SR).shape == (7,)
    assert score_windows(model, wave[: 44100], 44100)[1].shape == (1, 7)


# --- pipeline.evaluate.audio ---------------------------------------------------------------
@pytest.fixture(scope="module")
def ravdess_folder(tmp_path_factory):
    """Three real RAVDESS clips, as 44.1 kHz stereo WAV at depth 2 (a resampling path too)."""
    sf = pytest.importorskip("soundfile")
    root = tmp_path_factory.mktemp("ravdess")
    for rel in CLIPS:
        src = RAVDESS / rel
        require_data(src)
        wave, sr = sf.read(str(src), dtype="float32")
        wave = resample(wave, sr, 44100)
        out = root / "set" / src.parent.name / (src.stem + ".wav")
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), np.stack([wave, wave], axis=1), 44100)
    (root / "set" / "README.txt").write_text("not audio")
    (root / "set" / "other.wav").write_bytes(b"")  # not a RAVDESS name: ignored
    return root


def test_evaluate_ravdess_folder(ravdess_folder, weight_file):
    from emotion_pipeline.evaluate.audio import run

    result = run(ravdess_folder, model=str(weight_file))
    assert result["n"] == 3 and result["skipped"] == 0 and result["format"] == "ravdess-folder"
    assert result["labels"] == list(LABELS)
    assert result["support"]["neutral"] == 1 and result["support"]["angry"] == 1
    assert np.array(result["confusion_matrix"]).sum() == 3
    assert 0 <= result["uar"] <= 1 and result["sha256"] == weights_io.sha256_file(weight_file)


def test_evaluate_csv_manifest(ravdess_folder, weight_file, tmp_path):
    from emotion_pipeline.evaluate.audio import run

    wavs = sorted((ravdess_folder / "set").rglob("03-*.wav"))
    manifest = tmp_path / "list.csv"
    rows = ["path,label", f"{wavs[0].resolve()},calm",  # absolute path; synonym -> neutral
            f"{wavs[1].relative_to(ravdess_folder)},Angry", f"{wavs[2]},contempt",  # dropped
            "missing.wav,sad"]  # unreadable: skipped
    shutil.copytree(ravdess_folder / "set", tmp_path / "set")
    manifest.write_text("\n".join(rows) + "\n")
    result = run(manifest, model=str(weight_file))
    assert result["format"] == "csv" and result["n"] == 2 and result["skipped"] == 1
    assert result["support"]["neutral"] == 1 and result["support"]["angry"] == 1


def test_evaluate_errors(tmp_path, weight_file):
    from emotion_pipeline.evaluate.audio import run

    for bad in (tmp_path / "nope", tmp_path):  # missing path; folder with no RAVDESS names
        with pytest.raises(ValueError, match=str(bad)):
            run(bad, model=str(weight_file))
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("file,emotion\na.wav,happy\n")
    with pytest.raises(ValueError, match="path,label"):
        run(csv_bad, model=str(weight_file))
    csv_unreadable = tmp_path / "gone.csv"
    csv_unreadable.write_text("path,label\nx.wav,happy\n")
    with pytest.raises(ValueError, match="could be read"):
        run(csv_unreadable, model=str(weight_file))


def test_shipped_weights_if_present():
    if not registry.shipped_path("audio-cnn").exists():
        pytest.skip("models/weights/audio_cnn.safetensors not exported yet")
    loaded = registry.load("audio-cnn")
    assert loaded.arch == "audio_cnn" and loaded.meta["labels"] == list(LABELS)
    assert registry.shipped_path("audio-cnn").stat().st_size < 10e6
    assert score_clip(loaded, np.zeros(SR, np.float32), SR).shape == (7,)


# --- models.hf_audio -----------------------------------------------------------------------
def _tiny_hf(path, id2label, attention_mask: bool):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, classifier_proj_size=16, id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        feat_extract_norm="layer" if attention_mask else "group", do_stable_layer_norm=attention_mask)
    transformers.Wav2Vec2ForSequenceClassification(cfg).save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=attention_mask).save_pretrained(path)
    return path


@pytest.mark.parametrize("attention_mask", [True, False])
def test_hf_audio_tiny_round_trip(tmp_path, attention_mask):
    from emotion_pipeline.models.hf_audio import load_dir

    id2label = {0: "neu", 1: "calm", 2: "hap", 3: "sad", 4: "ang", 5: "contempt"}
    clf = load_dir(_tiny_hf(tmp_path / "w2v", id2label, attention_mask))
    assert clf.labels.matrix.argmax(1)[:5].tolist() == [0, 0, 1, 2, 3] and not clf.labels.matrix[5].any()
    assert set(clf.labels.missing) == {"fearful", "disgusted", "surprised"} and clf.labels.dropped == ["contempt"]
    rng = np.random.default_rng(0)
    waves = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (SR, SR // 2, 2 * SR, 100)]
    probs, embs = clf.predict(waves, batch_size=3)
    assert probs.shape == (4, 7) and probs.dtype == np.float32 and embs.shape == (4, 32)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs[:, 4:] == 0).all()
    # batching does not change a wave's output
    alone, alone_emb = clf.predict([waves[2]])
    np.testing.assert_allclose(alone[0], probs[2], atol=1e-5)
    np.testing.assert_allclose(alone_emb[0], embs[2], atol=1e-4)


def test_hf_audio_mapping_rules(tmp_path):
    from emotion_pipeline.models.hf_audio import load_dir
    from emotion_pipeline.models.hf_labels import LabelMap

    mapping = LabelMap(["happy", "LABEL_1", "Surprise"], "test")
    assert mapping.dropped == ["LABEL_1"]
    out = mapping(np.array([[0.2, 0.6, 0.2]]))
    np.testing.assert_allclose(out[0], [0, 0.5, 0, 0, 0, 0, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="maps onto"):
        load_dir(_tiny_hf(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1"}, True))
    with pytest.raises(registry.ModelUnavailableError):
        load_dir(tmp_path / "absent")


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [(16000, 512, 64, 50.0, 8000.0), (22050, 2048, 128, 20.0, None)])
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax):
    import librosa

    from emotion_pipeline.models.audio_cnn import mel_filterbank
    np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels, fmin, fmax),
                               librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax), atol=1e-7)


def test_blur_pool_keeps_shapes_and_weight_keys_and_follows_a_one_frame_shift():
    """pool=blur (anti-aliased max-pool): the same output sizes as the 2x2 ceil-mode max-pool and the
    same weight keys (a file's config says which pooling it was trained with); on a smooth input, the
    output for a one-frame shift lies much closer to the mean of its unshifted neighbours than the
    plain max-pool's does (what aliasing breaks)."""
    import torch.nn.functional as F
    from emotion_pipeline.models.audio_cnn import AudioCNN, AudioCNNConfig, _BlurMaxPool
    for h, w in ((64, 301), (63, 300), (5, 17)):
        x = torch.randn(2, 3, h, w)
        assert _BlurMaxPool(3)(x).shape == F.max_pool2d(x, 2, ceil_mode=True).shape
    plain, blur = AudioCNN(AudioCNNConfig()), AudioCNN(AudioCNNConfig(pool="blur"))
    assert plain.state_dict().keys() == blur.state_dict().keys()
    x = torch.randn(1, 1, 16, 400, generator=torch.Generator().manual_seed(0)).cumsum(-1) * 0.2
    error = {}
    for name, pool in (("max", lambda v: F.max_pool2d(v, 2, ceil_mode=True)), ("blur", _BlurMaxPool(1))):
        y0, y1 = pool(x[..., :300]), pool(x[..., 1:301])
        error[name] = float((y1[..., :-1] - (y0[..., :-1] + y0[..., 1:]) / 2).abs().mean() / y0.abs().mean())
    assert error["blur"] < 0.5 * error["max"], error

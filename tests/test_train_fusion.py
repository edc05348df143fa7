"""The fusion trainer end to end on CPU, with small random-initialised encoders (the encoders are
inputs here; the loop, the cache, resume, export and the table are what is tested)."""
import json

import pytest
import torch

from emotion_pipeline.models import registry, weights_io
from emotion_pipeline import config
from emotion_pipeline.corpora.clips import read_clips
from emotion_pipeline.train import fusion
from tests.conftest import MEAD, needs_data

pytestmark = needs_data


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    from emotion_pipeline.models.audio_cnn import AudioCNN, AudioCNNConfig
    from emotion_pipeline.models.face_cnn import FaceCNN, FaceCNNConfig
    from emotion_pipeline.models.text_model import TextEmotionConfig, TextEmotionModel

    folder = tmp_path_factory.mktemp("enc")
    torch.manual_seed(0)
    weights_io.save(folder / "face.safetensors", FaceCNN(FaceCNNConfig()), arch="face_cnn", config=FaceCNNConfig())
    weights_io.save(folder / "audio.safetensors", AudioCNN(AudioCNNConfig()), arch="audio_cnn", config=AudioCNNConfig())
    text = TextEmotionModel(TextEmotionConfig())
    weights_io.save(folder / "text.safetensors", text.delta_state_dict(), arch="text_minilm", config=TextEmotionConfig())
    return {m: str(folder / f"{m}.safetensors") for m in ("face", "audio", "text")}


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


def _cfg(tmp_path, encoders, *extra, cache=None):
    return config.load(fusion.FusionConfig, "configs/fusion_tiny.yaml", [
        f"out_dir={tmp_path / 'run'}", f"data.cache_dir={cache or tmp_path / 'features'}", "data.max_per_modality=60",
        "data.train_examples=300", "data.val_examples=200", "progress=false", "device=cpu", "patience=10",
        *(f"encoders.{m}_model={p}" for m, p in encoders.items()), *extra])


def test_train_resume_export(tmp_path, encoders, feature_cache):
    summary = fusion.run(_cfg(tmp_path, encoders, "epochs=2", cache=feature_cache))
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "confusion.png", "comparison.md"):
        assert (run / name).exists(), name
    assert set(summary["table"]) == {"all", "no_face", "no_audio", "no_text"}
    assert summary["table"]["no_face"]["face"] is None and summary["table"]["all"]["head"]["n"] == 200
    assert len(list(feature_cache.glob("*/face-000.npz"))) == 1      # features cached once

    export = tmp_path / "head.safetensors"
    fusion.run(_cfg(tmp_path, encoders, "epochs=3", "resume=true", f"export={export}", cache=feature_cache))
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]                            # continued, not restarted
    fusion.run(_cfg(tmp_path, encoders, "epochs=3", f"out_dir={tmp_path / 'straight'}", cache=feature_cache))
    straight = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in straight]   # the same draws and steps
    head = registry.load(str(export))
    assert head.arch == "fusion_head" and set(head.meta["encoders"]) == {"face", "audio", "text"}


def test_analyzer_uses_matching_head_and_explains_a_mismatch(tmp_path, encoders, feature_cache):
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig
    export = tmp_path / "head.safetensors"
    fusion.run(_cfg(tmp_path, encoders, "epochs=1", f"export={export}", cache=feature_cache))
    common = dict(whisper_model="none", offline=True, progress=False, fusion_head=str(export), device="cpu")
    matched = Analyzer(AnalyzeConfig(face_model=encoders["face"], audio_model=encoders["audio"],
                                     text_model=encoders["text"], **common))
    assert matched.fusion_method == "head"
    doc = matched.analyze(MEAD / "M030_front_angry_level3_001.mp4")
    assert all(t["fused"]["method"] == "head" for t in doc["timeline"])
    other = tmp_path / "other_face.safetensors"
    from emotion_pipeline.models.face_cnn import FaceCNN, FaceCNNConfig
    weights_io.save(other, FaceCNN(FaceCNNConfig()), arch="face_cnn", config=FaceCNNConfig())
    mismatched = Analyzer(AnalyzeConfig(face_model=str(other), audio_model=encoders["audio"],
                                        text_model=encoders["text"], **common))
    assert mismatched.fusion_method == "average" and "face encoder" in mismatched.fusion_reason


def test_manifest_adapters_and_training_on_real_clips(tmp_path, encoders):
    clips = read_clips(MEAD, "mead")
    assert len(clips) == 7 and {c.label for c in clips} >= {"happy", "sad", "angry"}   # contempt has no Ekman class
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,label,split\n" + "".join(
        f"{c.path},{c.label},{'val' if i % 2 else 'train'}\n" for i, c in enumerate(clips)))
    assert [c.split for c in read_clips(manifest, "csv")][:2] == ["train", "val"]
    summary = fusion.run(_cfg(tmp_path, encoders, "data.kind=manifest", f"data.manifest={manifest}",
                              "data.adapter=csv", "epochs=2"))
    assert summary["data_kind"] == "manifest" and summary["table"]["all"]["head"]["n"] == 3


def test_bad_manifest_label(tmp_path):
    from emotion_pipeline.errors import InputError
    bad = tmp_path / "m.csv"
    bad.write_text("path,label\nx.mp4,bored\n")
    with pytest.raises(InputError, match="unknown emotion label"):
        read_clips(bad, "csv")


def _pool(label_of_row, value, n=40):
    import numpy as np
    from emotion_pipeline.train.features import Pool
    probs = np.full((n, 7), 0.01, np.float32)
    probs[:, value] = 0.94
    return Pool(probs, np.full((n, 4), float(value), np.float32), np.array([label_of_row(i) for i in range(n)]),
                np.zeros(n, bool))


def test_neutral_content_text_replaces_some_texts_and_keeps_the_label():
    import numpy as np
    from emotion_pipeline.train.features import draw_triples
    pools = {m: _pool(lambda i: i % 7, 3) for m in ("face", "audio", "text")}
    # every text in the pools says "angry" (index 3); the neutral-content transcripts say "neutral"
    neutral = _pool(lambda i: 0, 0, n=5)
    plain = draw_triples(pools, 2000, np.random.default_rng(0), 0.0)
    again = draw_triples(pools, 2000, np.random.default_rng(0), 0.0, neutral, 0.0)
    assert torch.equal(plain.probs, again.probs)            # rate 0: the same draws as without the pool
    mixed = draw_triples(pools, 2000, np.random.default_rng(0), 0.0, neutral, 0.3)
    swapped = mixed.probs[:, 2].argmax(1) == 0
    assert 0.25 < swapped.float().mean() < 0.35                                  # about the rate
    assert torch.equal(mixed.labels, plain.labels)                                # labels kept
    assert torch.equal(mixed.probs[:, :2], plain.probs[:, :2])                    # face and voice untouched
    assert torch.all(mixed.embs[2][swapped] == 0) and torch.all(mixed.embs[2][~swapped] == 3)


def test_neutral_content_transcripts_are_made_by_the_packaged_asr_and_cached(tmp_path, encoders):
    import shutil
    from tests.conftest import DATA
    speech = tmp_path / "neutral_speech"
    speech.mkdir()
    for clip in sorted((DATA / "speech" / "tess_subset" / "YAF_sad").glob("*.flac"))[:3]:
        shutil.copy(clip, speech / clip.name)
    summary = fusion.run(_cfg(tmp_path, encoders, "epochs=1", f"data.neutral_speech={speech}",
                              "data.neutral_text_rate=0.5", "head.kind=gated", f"export={tmp_path / 'h.safetensors'}"))
    made = registry.load(str(tmp_path / "h.safetensors")).meta["training"]["neutral_text"]
    assert made["clips"] == made["transcribed"] == 3 and made["asr"] == "tiny.en" and len(made["asr_sha256"]) == 64
    cached = next((tmp_path / "features").glob("*/neutral_text-000.npz"))
    import numpy as np
    texts = np.load(cached)["texts"]
    assert all(t.lower().startswith("say the word") for t in texts), texts       # real transcripts
    assert summary["table"]["all"]["head"]["n"] == 200

"""Text model: shapes, delta weights round trip, base checksum, evaluation formats, hf_text loading."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from emotion_pipeline.models import registry, weights_io  # noqa: E402
from emotion_pipeline.models.text_model import BaseModelError, TextEmotionConfig, TextEmotionModel, base_dir  # noqa: E402
from emotion_pipeline.labels import LABEL_INDEX, LABELS  # noqa: E402

SENTENCES = ["I am so happy, this is wonderful!", "I am furious, I hate you", "ok.",
             "What? No way, I did not expect that at all!", "The meeting is at three."]
DELTA_MAX_BYTES = 15_000_000  # the shipped text delta must stay under ~15 MB (repo size budget)


@pytest.fixture(scope="module")
def model() -> TextEmotionModel:
    torch.manual_seed(0)
    m = TextEmotionModel(TextEmotionConfig())
    m.load_base()
    with torch.no_grad():  # make the delta differ from the base so the round trip means something
        m.head.weight.normal_(0, 0.5)
        m.bert.encoder.layer[5].output.dense.bias.add_(0.05)
        for v in m.delta_state_dict().values():  # fp16 round, as the file stores it
            v.copy_(v.half().float())
    return m.eval()


@pytest.fixture(scope="module")
def delta_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "text_test.safetensors"
    weights_io.save(path, model.delta_state_dict(), arch="text_minilm", config=model.config,
                    extra={"version": "test"}, dtype=torch.float16)
    return path


def test_shapes_and_predict_order(model):
    enc = model.tokenize(SENTENCES)
    logits, emb = model.forward_with_embedding(enc["input_ids"], enc["attention_mask"])
    assert logits.shape == (5, len(LABELS)) and emb.shape == (5, 384)
    assert torch.allclose(model(enc["input_ids"], enc["attention_mask"]), logits)
    probs, embs = model.predict(SENTENCES, batch_size=2)  # length-sorted batches, returned in input order
    assert probs.dtype == np.float32 and probs.shape == (5, 7) and embs.shape == (5, 384)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    single, _ = model.predict([SENTENCES[3]])
    np.testing.assert_allclose(probs[3], single[0], atol=1e-5)
    assert model.predict([])[0].shape == (0, 7)


def test_training_cache_matches_inference(model):
    """The trainer's cached bottom-layer states (built once, fp16) must equal what inference computes,
    even when the model is in train mode (dropout in the frozen layers would corrupt the cache)."""
    model.train()
    try:
        cache = model.bottom_states(SENTENCES, batch_size=2)
        assert model.training and [x.dtype for x in cache] == [torch.float16] * len(SENTENCES)
        model.eval()
        with torch.no_grad():
            cached, _ = model.top_states(cache)
        full = model(**model.tokenize(SENTENCES))
    finally:
        model.eval()
    assert torch.allclose(cached, full, atol=2e-2)  # fp16 cache rounding only
    assert torch.equal(cached.argmax(1), full.argmax(1))


def test_delta_small_and_registry_round_trip(model, delta_file):
    assert delta_file.stat().st_size < DELTA_MAX_BYTES
    state, meta = weights_io.read(delta_file)
    assert meta["arch"] == "text_minilm" and meta["labels"] == list(LABELS)
    assert not any(k.startswith("bert.embeddings") or ".layer.0." in k or ".layer.1." in k for k in state)
    loaded = registry.load(delta_file)
    ref, _ = model.predict(SENTENCES)
    got, _ = loaded.module.predict(SENTENCES)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_base_checksum_and_delta_keys_checked(model):
    bad = TextEmotionModel(TextEmotionConfig(base_sha256="0" * 64))
    with pytest.raises(BaseModelError, match="SHA-256"):
        bad.load_weights(model.delta_state_dict())
    with pytest.raises(ValueError, match="delta keys"):
        TextEmotionModel(TextEmotionConfig()).load_weights({"head.weight": torch.zeros(7, 384)})


# ---- pipeline.evaluate.text ---------------------------------------------------------------------

def _write_tiny_sets(tmp_path):
    meld = tmp_path / "meld.csv"
    meld.write_text('Sr No.,Utterance,Speaker,Emotion,Sentiment\n'
                    '1,"Oh, great, thanks!",Joey,joy,positive\n2,I hate this.,Ross,anger,negative\n'
                    '3,Fine.,Rachel,neutral,neutral\n4,"No, no, no...",Monica,sadness,negative\n')
    go = tmp_path / "go"
    go.mkdir()
    (go / "labels.txt").write_text("anger\ndisgust\nfear\njoy\nneutral\nsadness\nsurprise\n")
    (go / "dev.tsv").write_text("This is gross\t1\tid1\nWow really?\t6\tid2\nmixed feelings\t0,3\tid3\n"
                                "I am scared\t2\tid4\n")
    dair = tmp_path / "dair.txt"
    dair.write_text("text;label_name\ni feel so loved;love\ni feel terrified;fear\ni am glad;joy\n")
    return meld, go / "dev.tsv", dair


def test_evaluate_formats_and_label_mapping(tmp_path):
    from emotion_pipeline.corpora.text import detect_format, read_examples
    meld, go, dair = _write_tiny_sets(tmp_path)
    assert [detect_format(p) for p in (meld, go, dair)] == ["meld", "goemotions", "dair"]
    t, y, _ = read_examples(meld)
    assert t[0] == "Oh, great, thanks!" and [LABELS[i] for i in y] == ["happy", "angry", "neutral", "sad"]
    t, y, _ = read_examples(go)  # the anger+joy row is ambiguous and skipped
    assert t == ["This is gross", "Wow really?", "I am scared"]
    assert [LABELS[i] for i in y] == ["disgusted", "surprised", "fearful"]
    t, y, _ = read_examples(dair)  # "love" has no Ekman class: dropped
    assert [LABELS[i] for i in y] == ["fearful", "happy"]


def test_evaluate_run(tmp_path, delta_file):
    from emotion_pipeline.evaluate.text import run
    meld, go, _ = _write_tiny_sets(tmp_path)
    out = run(meld, model=str(delta_file))
    assert out["n"] == 4 and out["format"] == "meld" and len(out["sha256"]) == 64
    assert set(out["per_class_recall"]) == set(LABELS) and np.array(out["confusion_matrix"]).sum() == 4
    assert 0.0 <= out["weighted_f1"] <= 1.0 and "macro_f1" in out and "accuracy" in out
    assert run(go, model=str(delta_file))["n"] == 3


def test_evaluate_bad_files(tmp_path):
    from emotion_pipeline.evaluate.text import run
    odd = tmp_path / "notes.txt"
    odd.write_text("just some text\nwithout labels\n")
    with pytest.raises(ValueError, match="notes.txt.*unrecognised format"):
        run(odd)
    with pytest.raises(ValueError, match="missing.csv"):
        run(tmp_path / "missing.csv")
    lonely = tmp_path / "x.tsv"  # GoEmotions layout without labels.txt
    lonely.write_text("hello\t3\tid\n")
    with pytest.raises(ValueError, match="labels.txt"):
        run(lonely)


# ---- models.hf_text -------------------------------------------------------------------------------

def _tiny_hf_dir(path, id2label):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=len(id2label), id2label=id2label,
                     label2id={v: k for k, v in id2label.items()})
    BertForSequenceClassification(cfg).save_pretrained(path, safe_serialization=True)
    BertTokenizerFast.from_pretrained(str(base_dir()), local_files_only=True).save_pretrained(path)
    return path


def test_hf_text_round_trip_and_mapping(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from emotion_pipeline.models.hf_text import load_dir
    # a DistilRoBERTa-emotion-like head, plus a class with no Ekman label ("love")
    names = {0: "anger", 1: "disgust", 2: "fear", 3: "joy", 4: "neutral", 5: "sadness", 6: "love"}
    path = _tiny_hf_dir(tmp_path / "hf", names)
    clf = load_dir(path)
    probs, embs = clf.predict(SENTENCES, batch_size=2)
    assert probs.shape == (5, 7) and probs.dtype == np.float32 and embs.shape == (5, 32)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert clf.labels.missing == ["surprised"] and clf.labels.dropped == ["love"]
    assert np.all(probs[:, LABEL_INDEX["surprised"]] == 0)
    # independent reference: plain transformers softmax, drop "love", renormalise, reorder
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    ref_model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).eval()
    with torch.no_grad():
        p = torch.softmax(ref_model(**tok(SENTENCES, padding=True, return_tensors="pt")).logits, -1).numpy()
    p = p[:, :6] / p[:, :6].sum(1, keepdims=True)
    for j, ours in enumerate(["angry", "disgusted", "fearful", "happy", "neutral", "sad"]):
        np.testing.assert_allclose(probs[:, LABEL_INDEX[ours]], p[:, j], atol=1e-5)


def test_hf_text_errors(tmp_path):
    from emotion_pipeline.models.hf_text import load_dir
    with pytest.raises(registry.ModelUnavailableError):
        load_dir(tmp_path / "nothing")
    path = _tiny_hf_dir(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="LABEL_0"):
        load_dir(path)


# ---- the shipped weights ----------------------------------------------------------------------------

@pytest.mark.skipif(not registry.shipped_path("text-minilm").exists(), reason="text weights not trained yet")
def test_shipped_model_obvious_sentences():
    loaded = registry.load("text-minilm")
    assert registry.shipped_path("text-minilm").stat().st_size < DELTA_MAX_BYTES
    probs, _ = loaded.module.predict(["I am so happy, this is wonderful!", "I am furious, I hate you"])
    assert [LABELS[i] for i in probs.argmax(1)] == ["happy", "angry"]


# ---- model soup (train text, mode: average) -----------------------------------------------------------

def _fake_run(tmp_path, name, model, shift, seed=13):
    from emotion_pipeline import config
    from emotion_pipeline.train.loop import RunDir
    from emotion_pipeline.train.text import TextConfig
    m = TextEmotionModel(TextEmotionConfig())
    m.load_state_dict(model.state_dict())
    with torch.no_grad():
        m.head.bias.fill_(shift)
        m.bert.encoder.layer[4].output.dense.bias.add_(shift)
    cfg = TextConfig(seed=seed, sources=("meld", "goemotions") if shift > 0 else ("meld",))
    run = RunDir(tmp_path / name).start(cfg, f"train {name}")
    run.save("best", {"model": m.state_dict(), "epoch": 3, "best_metric": 0.5,
                      "config_json": json.dumps(config.to_dict(cfg))})
    return str(run.path), m


def _soup_config(tmp_path, *runs, **more):
    from emotion_pipeline.train.text import TextConfig
    return TextConfig(mode="average", average_of=tuple(runs), out_dir=str(tmp_path / "soup"), device="cpu",
                      max_per_split=50, export_evals=(), **more)


def test_soup_is_the_parameter_average(tmp_path, model):
    from emotion_pipeline.data import data_path
    from emotion_pipeline.train import text
    from emotion_pipeline.train.loop import RunDir
    from tests.conftest import require_data
    require_data(data_path(text.TextConfig.val))
    a, ma = _fake_run(tmp_path, "a", model, 0.5)
    b, mb = _fake_run(tmp_path, "b", model, -0.25)
    metrics = text.run(_soup_config(tmp_path, a, b), command="soup a b")
    ckpt = RunDir(tmp_path / "soup").checkpoint("best")
    for key in ("head.bias", "bert.encoder.layer.4.output.dense.bias"):
        expected = (ma.state_dict()[key] + mb.state_dict()[key]) / 2
        torch.testing.assert_close(ckpt["model"][key], expected)
    torch.testing.assert_close(ckpt["model"]["head.bias"], torch.full((7,), 0.125))
    cfg = json.loads(ckpt["config_json"])
    assert [i["command"] for i in cfg["averaged"]] == ["train a", "train b"]
    assert [i["config"]["sources"] for i in cfg["averaged"]] == [["meld", "goemotions"], ["meld"]]
    dev = metrics[text.TextConfig.val]
    assert dev["n"] == 50 and 0.0 <= dev["weighted_f1"] <= 1.0


def test_soup_refuses_runs_with_different_heads(tmp_path, model):
    from emotion_pipeline.errors import TrainingError
    from emotion_pipeline.train import text
    a, _ = _fake_run(tmp_path, "a", model, 0.5, seed=13)
    b, _ = _fake_run(tmp_path, "b", model, 0.1, seed=7)
    with pytest.raises(TrainingError, match="differ in seed"):
        text.run(_soup_config(tmp_path, a, b))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="best.pt: no such checkpoint"):
        text.run(_soup_config(tmp_path, a, str(tmp_path / "empty")))


def test_plain_torch_encoder_matches_transformers(model):
    """models.minilm (no transformers import at start-up) gives transformers' BertModel outputs."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    cfg = BertConfig.from_json_file(str(base_dir() / "config.json"))
    ref = BertModel(cfg, add_pooling_layer=False).eval()
    missing, unexpected = ref.load_state_dict({k[5:]: v for k, v in model.state_dict().items() if k.startswith("bert.")},
                                              strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    tok = BertTokenizerFast.from_pretrained(str(base_dir()), local_files_only=True)
    texts = SENTENCES + ["x " * 300, "Ünïcödé ACCENTS and   spaces", ""]
    want = tok(texts, padding=True, truncation=True, max_length=model.config.max_length, return_tensors="pt")
    got = model.tokenize(texts)
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["attention_mask"], want["attention_mask"])
    with torch.no_grad():
        expected = ref(input_ids=want["input_ids"], attention_mask=want["attention_mask"]).last_hidden_state
        hidden = model._run_layers(model.bert.embeddings(got["input_ids"]), got["attention_mask"], 0, 6)
    m = got["attention_mask"].bool()
    assert torch.allclose(hidden[m], expected[m], atol=1e-4)

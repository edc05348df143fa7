"""The one training loop (pipeline.train.loop) and a CPU smoke run of each trainer on real samples:
one optimisation step per epoch, resume continues at epoch 2 exactly as an uninterrupted run
would, the export writes a loadable safetensors file and a card stub. (Fusion: test_train_fusion.)"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from emotion_pipeline.cli import main as cli_main
from emotion_pipeline.errors import ConfigError, TrainingError
from emotion_pipeline.models import registry
from emotion_pipeline.train import load_config, main
from emotion_pipeline.train.loop import Evaluation, RunConfig, RunDir, fit, seed_everything
from tests.conftest import DATA

needs_data = pytest.mark.needs_data(DATA / "faces")   # skipped without it, failed in CI (conftest)


def _toy_fit(tmp_path, epochs: int, resume: bool = False, patience: int = 0, scores=None):
    """A linear model on random data; every RNG the loop owns is used by the data or the step."""
    seed_everything(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))

    def batches(rng):
        order = rng.permutation(32)
        return (order[i:i + 8] for i in range(0, 32, 8))

    def step(idx):
        noise = torch.randn(len(idx), 4) * 0.01 + float(np.random.rand()) * 0.01 + random.random() * 0.01
        return torch.nn.functional.cross_entropy(model(x[idx] + noise), y[idx]), {"train_noise": float(noise.mean())}

    def evaluate():
        epoch = len(RunDir(tmp_path).history()) + 1
        score = scores[epoch - 1] if scores else -float(torch.nn.functional.cross_entropy(model(x), y))
        return Evaluation({"score": score}, confusion=[[1, 0], [0, 1]], classes=("a", "b"))

    cfg = RunConfig(out_dir=str(tmp_path), epochs=epochs, resume=resume, patience=patience, progress=False)
    return fit(cfg, model, opt, batches=batches, step=step, evaluate=evaluate, metric="val_score", scheduler=sched)


def test_resume_takes_the_steps_an_uninterrupted_run_takes(tmp_path):
    straight = _toy_fit(tmp_path / "straight", 3)
    _toy_fit(tmp_path / "cut", 1)
    resumed = _toy_fit(tmp_path / "cut", 3, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    drop = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert [drop(h) for h in resumed.history] == [drop(h) for h in straight.history]
    a, b = (RunDir(tmp_path / d).checkpoint("last") for d in ("straight", "cut"))
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    assert a["rng"]["generator"] == b["rng"]["generator"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 12
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "confusion.png"):
        assert (tmp_path / "cut" / name).exists(), name
    # a fresh run starts a fresh metrics.jsonl
    assert [h["epoch"] for h in _toy_fit(tmp_path / "cut", 1).history] == [1]


def test_best_keeping_and_early_stopping(tmp_path):
    fitted = _toy_fit(tmp_path, 10, patience=2, scores=[0.1, 0.5, 0.4, 0.3, 0.9])
    assert [h["epoch"] for h in fitted.history] == [1, 2, 3, 4]      # no better score in epochs 3-4
    assert fitted.best_epoch == 2 and fitted.best_metric == 0.5
    assert [h["is_best"] for h in fitted.history] == [True, True, False, False]
    assert RunDir(tmp_path).checkpoint("best")["epoch"] == 2


def test_checkpoints_hold_no_pickled_objects(tmp_path):
    _toy_fit(tmp_path, 1)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)   # would raise on an arbitrary object
    assert {"model", "optimizer", "scheduler", "epoch", "best_metric", "rng", "config_json"} <= set(ckpt)


def test_configs_are_strict_and_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown key.*nope"):
        load_config(None, "configs/face_tiny.yaml", ["nope=1"])
    with pytest.raises(ConfigError, match="task: face, but the command asks for audio"):
        load_config("audio", "configs/face_tiny.yaml")
    untasked = tmp_path / "x.yaml"
    untasked.write_text("epochs: 1\n")
    with pytest.raises(ConfigError, match="no task: key"):
        load_config(None, untasked)
    with pytest.raises(ConfigError, match="average_of"):
        load_config(None, "configs/face_tiny.yaml", ["mode=average"])
    assert cli_main(["train", "configs/text_tiny.yaml", "--set", "bogus=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "bogus" in err[0]
    with pytest.raises(TrainingError, match="no such checkpoint"):
        main(None, "configs/face_tiny.yaml", [f"out_dir={tmp_path / 'none'}", "mode=export"])


def _smoke(tmp_path, config: str, arch: str, *more: str) -> dict:
    """epochs=1 + export, then --resume to epoch 2, against an uninterrupted 2-epoch run."""
    common = ["threads=1", "progress=false", *more]
    export = tmp_path / f"{arch}.safetensors"
    main(None, config, [f"out_dir={tmp_path / 'a'}", "epochs=1", f"export={export}", *common], command="smoke")
    loaded = registry.load(str(export))
    assert loaded.arch == arch and loaded.meta["command"] == "smoke" and "metrics" in loaded.meta
    card = export.with_suffix(".md").read_text()
    assert "## Metrics" in card and "smoke" in card
    main(None, config, [f"out_dir={tmp_path / 'a'}", "epochs=2", *common], resume=True)
    main(None, config, [f"out_dir={tmp_path / 'b'}", "epochs=2", *common])
    resumed, straight = RunDir(tmp_path / "a").history(), RunDir(tmp_path / "b").history()
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert resumed[1]["train_loss"] == straight[1]["train_loss"]       # the same batches, the same step
    assert resumed[1]["lr"] == straight[1]["lr"]
    return json.loads((tmp_path / "a" / "results.json").read_text())


@needs_data
def test_face_trainer_smoke(tmp_path):
    results = _smoke(tmp_path, "configs/face_tiny.yaml", "face_cnn")
    assert results["validation"]["none"]["n"] == 64 and set(results["validation"]) == {"none", "flip", "crops10"}


@needs_data
def test_audio_trainer_smoke(tmp_path):
    results = _smoke(tmp_path, "configs/audio_tiny.yaml", "audio_cnn")
    assert results["val_7class"]["n"] == 16 and results["tess_cross_corpus_7class"]["n"] == 16


@needs_data
def test_text_trainer_smoke(tmp_path):
    results = _smoke(tmp_path, "configs/text_tiny.yaml", "text_minilm")
    assert results["text/meld/dev_sent_emo.csv"]["n"] == 32


def test_the_readme_trainer_skeleton_runs(tmp_path):
    """The README's "a new trainer needs no more than" example is real code that trains through fit."""
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("A new one needs no more than:\n\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    summary = namespace["run"](namespace["Config"](out_dir=str(tmp_path), epochs=3, progress=False))
    history = RunDir(tmp_path).history()
    assert [h["epoch"] for h in history] == [1, 2, 3] and (tmp_path / "best.pt").exists()
    assert summary["best_accuracy"] == max(h["val_accuracy"] for h in history) > 0.2

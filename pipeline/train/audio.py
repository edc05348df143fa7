"""Speech emotion CNN (models/audio_cnn.py) on RAVDESS, speaker-independent: ``train audio CONFIG``.

Split (shared/data/README.md): RAVDESS actors 1-16 train, 17-20 validation; TESS is never trained on,
it is the cross-corpus test. The shipped model has our 7 labels (RAVDESS "calm" -> neutral); ``classes: 8``
trains on RAVDESS's own eight for a figure comparable with the README floors. Validation is clip-level
(windows of 3 s every 1 s, probabilities averaged: audio_windows.score_clip), as the product scores audio;
best epoch by UAR. The MFCC baseline of the model card was ``mode: baseline`` at commit 4e84eba.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from emotion_pipeline.audio_windows import load_audio_file, score_clip
from emotion_pipeline.config import check
from emotion_pipeline.corpora.speech import SpeechItem, speech_items
from emotion_pipeline.data import data_path
from emotion_pipeline.errors import TrainingError
from emotion_pipeline.labels import LABELS, RAVDESS_8, RAVDESS_8_TO_OURS
from emotion_pipeline.metrics import plot_confusion, report
from emotion_pipeline.models.audio_cnn import AudioAugment, AudioCNN, AudioCNNConfig, augment_waves, spec_augment
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train import loop
from emotion_pipeline.train.loop import Evaluation, RunConfig, RunDir

CLASS_LABELS = {7: LABELS, 8: RAVDESS_8}    # classes: 7, ours (calm -> neutral); 8, RAVDESS's own


@dataclass(frozen=True)
class AudioConfig(RunConfig):
    task: str = "audio"
    out_dir: str = "runs/audio"
    epochs: int = 150
    model: AudioCNNConfig = field(default_factory=AudioCNNConfig)   # num_labels comes from classes
    augment: AudioAugment = field(default_factory=AudioAugment)
    ravdess: str = "speech/ravdess"             # under the data folder
    tess: str = "speech/tess_subset"
    train_actors: tuple[int, ...] = tuple(range(1, 17))
    val_actors: tuple[int, ...] = tuple(range(17, 21))
    classes: int = 7                # a key of CLASS_LABELS
    max_per_split: int = 0          # > 0: a seeded pick of this many clips per split (smoke runs)
    batch_size: int = 16
    lr: float = 2e-3                # AdamW peak: linear warm-up, then cosine decay by epoch
    warmup_epochs: int = 2
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05   # class-weighted cross entropy

    def __post_init__(self):
        super().__post_init__()
        check(self, ("classes", self.classes in CLASS_LABELS, "must be 7 or 8"),
              ("classes", self.classes == 7 or not self.export, "must be 7 to export (the product's label set)"))


Config = AudioConfig


@dataclass(frozen=True)
class Clips:
    waves: tuple[np.ndarray, ...]   # float32 mono at the model's rate
    labels: np.ndarray              # (N,) int: indices into the run's labels; TESS's into LABELS


def read_data(cfg: AudioConfig) -> tuple[Clips, Clips, Clips]:
    """(train, validation, TESS) clips."""
    def take(items: list[SpeechItem], seed_offset: int, eight: bool = cfg.classes == 8) -> Clips:
        items = [items[i] for i in loop.subset(len(items), cfg.max_per_split, cfg.seed + seed_offset)]
        return Clips(tuple(load_audio_file(it.path, cfg.model.sample_rate_hz) for it in items),
                     np.array([RAVDESS_8.index(it.emotion8) if eight else LABELS.index(it.label) for it in items]))

    ravdess = speech_items(data_path(cfg.ravdess))
    train = take([it for it in ravdess if it.actor in cfg.train_actors], 0)
    val = take([it for it in ravdess if it.actor in cfg.val_actors], 1)
    if not (train.waves and val.waves):
        raise TrainingError(f"no RAVDESS clips of the configured actors under {data_path(cfg.ravdess)}")
    return train, val, take([it for it in speech_items(data_path(cfg.tess)) if it.emotion8 is None], 2, eight=False)


def clip_probs(model: AudioCNN, clips: Clips) -> np.ndarray:
    """Clip-level probabilities, scored as the product scores audio (score_clip)."""
    return np.stack([score_clip(model, wave, model.config.sample_rate_hz) for wave in clips.waves])


def run(cfg: AudioConfig, command: str = "") -> dict:
    loop.seed_everything(cfg.seed)
    clips, val, tess = read_data(cfg)
    device = select_device(cfg.device)
    model = AudioCNN(replace(cfg.model, num_labels=cfg.classes)).to(device)
    if cfg.mode == "export":
        RunDir(cfg.out_dir).load(model)
    else:
        train(cfg, model, clips, val, device, command)
    return finish(cfg, model, val, tess, command)


def train(cfg: AudioConfig, model: AudioCNN, data: Clips, val: Clips, device: torch.device, command: str) -> None:
    y = data.labels
    weights = torch.tensor(len(y) / (cfg.classes * np.maximum(np.bincount(y, minlength=cfg.classes), 1)),
                           dtype=torch.float32, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_factor(step: int) -> float:  # by epoch: warm-up, then cosine down to 0 at cfg.epochs
        epoch = step // math.ceil(len(y) / cfg.batch_size)
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / cfg.warmup_epochs
        return 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))

    def batches(rng: np.random.Generator):
        order = rng.permutation(len(y))
        for b in range(0, len(order), cfg.batch_size):
            idx = order[b:b + cfg.batch_size]
            yield augment_waves([data.waves[i] for i in idx], model.config, cfg.augment, rng), torch.from_numpy(y[idx])

    def step(batch):
        wave, target = batch
        logits, _ = model.classify(spec_augment(model.features(wave.to(device)), cfg.augment))
        return F.cross_entropy(logits, target.to(device), weight=weights, label_smoothing=cfg.label_smoothing)

    def validate() -> Evaluation:
        probs = clip_probs(model, val)
        r = report(val.labels, probs.argmax(1), CLASS_LABELS[cfg.classes])
        nll = float(-np.mean(np.log(probs[np.arange(len(probs)), val.labels] + 1e-8)))
        return Evaluation({"loss": nll, **{k: r[k] for k in ("accuracy", "uar", "macro_f1")}}, r["confusion_matrix"],
                          CLASS_LABELS[cfg.classes], title=f"validation actors, {cfg.classes}-class")

    loop.fit(cfg, model, optimizer, batches=batches, step=step, evaluate=validate, metric="val_uar",
             scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor), command=command)


def finish(cfg: AudioConfig, model: AudioCNN, val: Clips, tess: Clips, command: str) -> dict:
    """The best model on validation and on TESS (results.json, confusion_tess.png), then the export."""
    run = RunDir(cfg.out_dir)
    keep = ("n", "accuracy", "uar", "macro_f1", "per_class_recall")
    r = report(val.labels, clip_probs(model, val).argmax(1), CLASS_LABELS[cfg.classes])
    metrics = {f"val_{cfg.classes}class": {k: r[k] for k in keep}, "best_epoch": run.checkpoint("best")["epoch"],
               "train_minutes": round(sum(h.get("seconds", 0) for h in run.history()) / 60, 1)}
    if tess.waves:
        pred = clip_probs(model, tess).argmax(1)
        r = report(tess.labels, pred if cfg.classes == 7 else np.take(RAVDESS_8_TO_OURS, pred), LABELS)
        metrics["tess_cross_corpus_7class"] = {k: r[k] for k in keep}
        plot_confusion(r["confusion_matrix"], list(LABELS), run.path / "confusion_tess.png",
                       title=f"TESS cross-corpus, UAR {r['uar']:.3f}")
    return loop.finish(cfg, metrics, model, arch="audio_cnn", config=model.config, command=command,
                       title="speech emotion CNN (audio_cnn)",
                       data={"train": f"RAVDESS speech (CC BY-NC-SA 4.0), actors {list(cfg.train_actors)}",
                             "validation": f"RAVDESS speech, actors {list(cfg.val_actors)}",
                             "cross_corpus_test": "TESS subset (CC BY-NC-ND 4.0), never trained on"},
                       split="speaker-independent: no actor in both; calm -> neutral")

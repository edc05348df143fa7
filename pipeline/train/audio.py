"""Speech emotion CNN (models/audio_cnn.py) on RAVDESS, speaker-independent: ``train audio CONFIG``.

Split (shared/data/README.md): RAVDESS actors 1-16 train, 17-20 validation; TESS is never trained
on, it is the cross-corpus test. The shipped model has our 7 labels (RAVDESS "calm" -> neutral);
``classes: 8`` trains on RAVDESS's own eight for a figure comparable with the README floors.
Validation is clip-level: windows of 3 s every 1 s, probabilities averaged
(pipeline.audio_windows.score_clip), exactly as the product scores audio; best epoch by UAR.
``mode: baseline`` measures MFCC statistics + logistic regression the same way (baseline_mfcc.json,
quoted in the export's metrics when present).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from emotion_pipeline.audio_windows import load_audio_file, score_clip
from emotion_pipeline.config import check
from emotion_pipeline.corpora.speech import speech_items
from emotion_pipeline.data import data_path
from emotion_pipeline.errors import TrainingError
from emotion_pipeline.labels import LABELS, RAVDESS_8, RAVDESS_8_TO_OURS
from emotion_pipeline.metrics import plot_confusion, report
from emotion_pipeline.models.audio_cnn import AudioCNN, AudioCNNConfig
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train import loop
from emotion_pipeline.train.loop import Evaluation, RunConfig, RunDir


@dataclass(frozen=True)
class AudioConfig(RunConfig):
    MODES = ("train", "export", "baseline")
    task: str = "audio"
    out_dir: str = "runs/audio"
    epochs: int = 150
    model: AudioCNNConfig = field(default_factory=AudioCNNConfig)   # num_labels comes from classes
    ravdess: str = "speech/ravdess"             # under the data folder
    tess: str = "speech/tess_subset"
    train_actors: tuple[int, ...] = tuple(range(1, 17))
    val_actors: tuple[int, ...] = tuple(range(17, 21))
    classes: int = 7                # 7: our LABELS (calm -> neutral); 8: RAVDESS's own classes
    max_per_split: int = 0          # > 0: a seeded pick of this many clips per split (smoke runs)
    batch_size: int = 16
    lr: float = 2e-3                # AdamW peak: linear warm-up, then cosine decay by epoch
    warmup_epochs: int = 2
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05   # class-weighted cross entropy
    gain_db: float = 6.0            # random gain +-6 dB
    noise_prob: float = 0.3         # white noise on 30% of the crops ...
    snr_db: tuple[float, float] = (10.0, 35.0)  # ... at 10-35 dB SNR
    freq_masks: int = 2             # SpecAugment: 2 masks of <= 8 mel bands and 2 of <= 20 frames
    freq_mask_width: int = 8
    time_masks: int = 2
    time_mask_width: int = 20

    def __post_init__(self):
        super().__post_init__()
        check(self, ("classes", self.classes in (7, 8), "must be 7 or 8"),
              ("classes", self.classes == 7 or not self.export, "must be 7 to export (the product's label set)"))


Config = AudioConfig


@dataclass(frozen=True)
class Utterance:
    wave: np.ndarray        # float32 mono at the model's rate
    label7: int             # index into LABELS (calm -> neutral)
    label8: int | None      # index into RAVDESS_8 (None: TESS)

    def target(self, classes: int) -> int:
        return self.label7 if classes == 7 else self.label8


@dataclass(frozen=True)
class AudioData:
    train: tuple[Utterance, ...]
    val: tuple[Utterance, ...]
    tess: tuple[Utterance, ...]


def read_data(cfg: AudioConfig) -> AudioData:
    def take(items, limit_seed):
        items = [items[i] for i in loop.subset(len(items), cfg.max_per_split, cfg.seed + limit_seed)]
        return tuple(Utterance(load_audio_file(it.path, cfg.model.sample_rate_hz), LABELS.index(it.label),
                               RAVDESS_8.index(it.emotion8) if it.emotion8 else None) for it in items)

    ravdess = [it for it in speech_items(data_path(cfg.ravdess)) if it.emotion8 is not None]
    actor = lambda it: int(it.speaker[-2:])  # noqa: E731  ("ravdess_actor07")
    data = AudioData(take([it for it in ravdess if actor(it) in cfg.train_actors], 0),
                     take([it for it in ravdess if actor(it) in cfg.val_actors], 1),
                     take([it for it in speech_items(data_path(cfg.tess)) if it.emotion8 is None], 2))
    if not (data.train and data.val):
        raise TrainingError(f"no RAVDESS clips of the configured actors under {data_path(cfg.ravdess)}")
    return data


def class_names(classes: int) -> tuple[str, ...]:
    return LABELS if classes == 7 else RAVDESS_8


def augmented_waves(items: list[Utterance], window: int, cfg: AudioConfig, rng: np.random.Generator) -> torch.Tensor:
    """Random window crops (time shift), gain and additive noise, as a (N, window) tensor."""
    out = np.zeros((len(items), window), dtype=np.float32)
    for i, w in enumerate(it.wave for it in items):
        if len(w) >= window:
            s = rng.integers(0, len(w) - window + 1)
            out[i] = w[s:s + window]
        else:  # shorter clip: place it at a random offset in the window
            s = rng.integers(0, window - len(w) + 1)
            out[i, s:s + len(w)] = w
        out[i] *= 10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20)
        if rng.random() < cfg.noise_prob:
            rms = float(np.sqrt(np.mean(out[i] ** 2)) + 1e-8)
            out[i] += rng.standard_normal(window).astype(np.float32) * rms / (10 ** (rng.uniform(*cfg.snr_db) / 20))
    return torch.from_numpy(out)


def spec_augment(feats: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Zero (= the mean after normalisation) random mel bands and frame ranges, per example."""
    n, _, mels, frames = feats.shape
    feats = feats.clone()
    for i in range(n):
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_mask_width + 1, (1,)))
            f0 = int(torch.randint(0, max(1, mels - w), (1,)))
            feats[i, :, f0:f0 + w, :] = 0
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, cfg.time_mask_width + 1, (1,)))
            t0 = int(torch.randint(0, max(1, frames - w), (1,)))
            feats[i, :, :, t0:t0 + w] = 0
    return feats


def as_seven(pred: np.ndarray, classes: int) -> np.ndarray:
    """Predictions over the run's classes as LABELS indices (RAVDESS-8 calm -> neutral), for cross-corpus scores."""
    return np.asarray(pred) if classes == 7 else np.take(RAVDESS_8_TO_OURS, pred)


def clip_probs(model: AudioCNN, items: tuple[Utterance, ...]) -> np.ndarray:
    """Clip-level probabilities, scored as the product scores audio (score_clip)."""
    return np.stack([score_clip(model, it.wave, model.config.sample_rate_hz) for it in items])


def evaluate(model: AudioCNN, items: tuple[Utterance, ...], classes: int) -> tuple[dict, float]:
    """(report over the run's classes, mean NLL) of clip-level scores."""
    probs = clip_probs(model, items)
    y = np.array([it.target(classes) for it in items])
    return report(y, probs.argmax(1), class_names(classes)), float(-np.mean(np.log(probs[np.arange(len(y)), y] + 1e-8)))


def run(cfg: AudioConfig, command: str = "") -> dict:
    loop.seed_everything(cfg.seed)
    data = read_data(cfg)
    if cfg.mode == "baseline":
        return mfcc_baseline(cfg, data)
    device = select_device(cfg.device)
    model = AudioCNN(replace(cfg.model, num_labels=cfg.classes)).to(device)
    if cfg.mode == "export":
        RunDir(cfg.out_dir).load(model)
    else:
        train(cfg, model, data, device, command)
    return finish(model, cfg, data, command)


def train(cfg: AudioConfig, model: AudioCNN, data: AudioData, device: torch.device, command: str) -> None:
    y = np.array([it.target(cfg.classes) for it in data.train])
    weights = torch.tensor(len(y) / (cfg.classes * np.maximum(np.bincount(y, minlength=cfg.classes), 1)),
                           dtype=torch.float32, device=device)
    window = int(model.config.window_s * model.config.sample_rate_hz)
    steps = math.ceil(len(data.train) / cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_factor(step: int) -> float:  # by epoch: warm-up, then cosine over the epochs
        epoch = step // steps
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / cfg.warmup_epochs
        return 0.5 * (1 + math.cos(math.pi * min(1.0, epoch / cfg.epochs)))

    def batches(rng):
        order = rng.permutation(len(data.train))
        for b in range(0, len(order), cfg.batch_size):
            idx = order[b:b + cfg.batch_size]
            yield augmented_waves([data.train[i] for i in idx], window, cfg, rng), torch.from_numpy(y[idx])

    def step(batch):
        wave, target = batch
        logits, _ = model.classify(spec_augment(model.features(wave.to(device)), cfg))
        return F.cross_entropy(logits, target.to(device), weight=weights, label_smoothing=cfg.label_smoothing)

    def validate() -> Evaluation:
        r, nll = evaluate(model, data.val, cfg.classes)
        return Evaluation({"loss": nll, "accuracy": r["accuracy"], "uar": r["uar"], "macro_f1": r["macro_f1"]},
                          r["confusion_matrix"], class_names(cfg.classes), title=f"validation actors, {cfg.classes}-class")

    loop.fit(cfg, model, optimizer, batches=batches, step=step, evaluate=validate, metric="val_uar",
             scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor), command=command)


def finish(model: AudioCNN, cfg: AudioConfig, data: AudioData, command: str) -> dict:
    """The best model on validation and on TESS (results.json, confusion_tess.png), then the export."""
    run = RunDir(cfg.out_dir)
    keep = ("n", "accuracy", "uar", "macro_f1", "per_class_recall")
    val = evaluate(model, data.val, cfg.classes)[0]
    metrics = {f"val_{cfg.classes}class": {k: val[k] for k in keep}, "best_epoch": run.checkpoint("best")["epoch"],
               "train_minutes": round(sum(h.get("seconds", 0) for h in run.history()) / 60, 1)}
    if data.tess:
        tess = report([it.label7 for it in data.tess], as_seven(clip_probs(model, data.tess).argmax(1), cfg.classes), LABELS)
        metrics["tess_cross_corpus_7class"] = {k: tess[k] for k in keep}
        plot_confusion(tess["confusion_matrix"], list(LABELS), run.path / "confusion_tess.png",
                       title=f"TESS cross-corpus, UAR {tess['uar']:.3f}")
    if (baseline := run.read_json("baseline_mfcc.json")):
        metrics["mfcc_lr_baseline"] = {k: {m: v[m] for m in ("accuracy", "uar")}
                                       for k, v in baseline.items() if k.startswith(("val_", "tess_"))}
    return loop.finish(cfg, metrics, model, arch="audio_cnn", config=model.config, command=command,
                       title="speech emotion CNN (audio_cnn)",
                       data={"train": f"RAVDESS speech (CC BY-NC-SA 4.0), actors {list(cfg.train_actors)}",
                             "validation": f"RAVDESS speech, actors {list(cfg.val_actors)}",
                             "cross_corpus_test": "TESS subset (CC BY-NC-ND 4.0), never trained on"},
                       split="speaker-independent: no actor in both; calm -> neutral")


def mfcc_baseline(cfg: AudioConfig, data: AudioData) -> dict:
    """40 MFCCs + deltas, mean and std over the clip (160 numbers), standardised, logistic regression
    with balanced class weights; trained on the training actors, 7 and 8 classes."""
    import librosa
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def stats(wave: np.ndarray) -> np.ndarray:
        m = librosa.feature.mfcc(y=wave, sr=cfg.model.sample_rate_hz, n_mfcc=40, n_fft=512, hop_length=160)
        d = librosa.feature.delta(m)
        return np.concatenate([m.mean(1), m.std(1), d.mean(1), d.std(1)])

    x = {split: np.stack([stats(it.wave) for it in getattr(data, split)]) for split in ("train", "val", "tess")}
    out = {"features": "40 MFCC + delta, mean/std over the clip (160-d)",
           "classifier": "StandardScaler + LogisticRegression(C=1, class_weight=balanced)"}
    for classes in (7, 8):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced"))
        clf.fit(x["train"], [it.target(classes) for it in data.train])
        out[f"val_{classes}class"] = report([it.target(classes) for it in data.val], clf.predict(x["val"]),
                                            class_names(classes))
        out[f"tess_from_{classes}class"] = report([it.label7 for it in data.tess],
                                                  as_seven(clf.predict(x["tess"]), classes), LABELS)
    RunDir(cfg.out_dir).write_json("baseline_mfcc.json", out)
    return out

"""Fine-tune the text emotion model (all-MiniLM-L6-v2, top k layers + head): ``train text CONFIG``.

Each epoch: MELD train plus a fresh ``extra_fraction`` of each other source; best epoch by MELD dev
weighted F1. The frozen bottom layers run once per run (``bottom_states``), each step only the top k.
``mode: average``: a uniform model soup (Wortsman et al., ICML 2022) of runs' best.pt, which share a
seed (so one head initialisation, one basin). The export is the fp16 delta, measured as shipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from emotion_pipeline.config import check
from emotion_pipeline.corpora.text import read_examples
from emotion_pipeline.data import data_path
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import report
from emotion_pipeline.models.text_model import TextEmotionConfig, TextEmotionModel
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train import loop

SOURCES = {"meld": "text/meld/train_sent_emo.csv", "goemotions": "text/goemotions/ekman/train.tsv",
           "dair": "text/dair_emotion/train.txt"}   # under the data folder


@dataclass(frozen=True)
class TextConfig(loop.RunConfig):
    MODES = ("train", "export", "average")
    task: str = "text"
    out_dir: str = "runs/text"
    epochs: int = 4
    seed: int = 13                  # also fixes the head's initialisation (soups need one)
    sources: tuple[str, ...] = ("meld", "goemotions", "dair")   # meld alone: best on MELD, poor elsewhere
    extra_fraction: float = 0.2     # share of each non-MELD source drawn per epoch
    val: str = "text/meld/dev_sent_emo.csv"
    export_evals: tuple[str, ...] = ("text/goemotions/ekman/dev.tsv", "text/dair_emotion/val.txt")
    max_per_split: int = 0          # > 0: a seeded pick of this many texts per file (smoke runs)
    trainable_top_layers: int = 4
    batch_size: int = 32
    lr: float = 8e-5                # transformer layers (AdamW)
    head_lr: float = 1e-3           # the fresh linear head learns faster
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06   # linear warm-up, then linear decay to 0
    label_smoothing: float = 0.0
    class_weight: str = "none"      # none | sqrt (inverse square root of the class frequency)

    def __post_init__(self):
        super().__post_init__()
        check(self, ("sources", "meld" in self.sources and set(self.sources) <= set(SOURCES),
                     f"must include meld and only use {', '.join(SOURCES)}"),
              ("class_weight", self.class_weight in ("none", "sqrt"), "must be none or sqrt"))


Config = TextConfig


def read(path: str, cfg: TextConfig, seed: int) -> tuple[list[str], np.ndarray]:
    texts, labels, _ = read_examples(data_path(path))
    keep = loop.subset(len(texts), cfg.max_per_split, seed)
    return [texts[i] for i in keep], np.array(labels, np.int64)[keep]


def run(cfg: TextConfig, command: str = "") -> dict:
    loop.seed_everything(cfg.seed)
    model = TextEmotionModel(TextEmotionConfig(trainable_top_layers=cfg.trainable_top_layers))
    model.load_base()
    if cfg.mode == "average":
        loop.average(cfg, model, which="best", same=("seed", "trainable_top_layers"), command=command)
    elif cfg.mode == "export":
        loop.RunDir(cfg.out_dir).load(model)
    else:
        train(cfg, model, command)
    # the model as it ships (fp16 delta) on MELD dev and the other sources' validation files
    model.cpu().load_state_dict({k: v.half().float() for k, v in model.delta_state_dict().items()}, strict=False)
    metrics = {}
    for k, path in enumerate((cfg.val, *cfg.export_evals)):
        texts, labels = read(path, cfg, cfg.seed + 100 + k)
        m = report(labels, model.predict(texts)[0].argmax(1), LABELS)
        metrics[path] = {key: m[key] for key in ("n", "accuracy", "weighted_f1", "macro_f1", "per_class_recall")}
    return loop.finish(cfg, metrics, model.delta_state_dict(), arch="text_minilm", config=model.config,
                       title="text emotion classifier (text_minilm, fp16 delta over all-MiniLM-L6-v2)",
                       data={s: SOURCES[s] for s in cfg.sources}, split={"train": "train files", "validation": cfg.val},
                       command=command, dtype=torch.float16, epoch=loop.RunDir(cfg.out_dir).checkpoint("best")["epoch"])


def train(cfg: TextConfig, model: TextEmotionModel, command: str) -> None:
    states, labels, rows = [], [], {}   # every source's bottom states in one list; rows[source]: its indices
    for k, name in enumerate(cfg.sources):
        texts, y = read(SOURCES[name], cfg, cfg.seed + k)
        rows[name] = np.arange(len(states), len(states) + len(texts))
        states += model.bottom_states(texts, progress=cfg.progress)
        labels.append(y)
    labels, lengths = np.concatenate(labels), np.array([len(x) for x in states])
    dev_texts, dev_labels = read(cfg.val, cfg, cfg.seed + 100)
    dev = model.bottom_states(dev_texts, progress=cfg.progress)
    device = select_device(cfg.device)
    model.to(device)
    extra = {s: int(cfg.extra_fraction * len(rows[s])) for s in cfg.sources if s != "meld"}
    steps = math.ceil((len(rows["meld"]) + sum(extra.values())) / cfg.batch_size) * cfg.epochs
    model.requires_grad_(False)   # only the delta trains: the top k layers and the head
    layers = model.bert.encoder.layer[model.split:].requires_grad_(True)
    head = model.head.requires_grad_(True)
    optimizer = torch.optim.AdamW([{"params": layers.parameters(), "lr": cfg.lr},
                                   {"params": head.parameters(), "lr": cfg.head_lr}], weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_fraction * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    weight = None
    if cfg.class_weight == "sqrt":   # normalised so that the mean weight over the training labels is 1
        counts = np.bincount(labels, minlength=len(LABELS))
        weight = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
        weight = (weight / (weight * torch.tensor(counts / counts.sum(), dtype=torch.float32)).sum()).to(device)

    def batches(rng: np.random.Generator) -> list[np.ndarray]:
        """MELD plus a fresh draw of the others, shuffled; length-sorted in chunks of 50 batches; batches shuffled."""
        drawn = [rows[s][rng.choice(len(rows[s]), n, replace=False)] for s, n in extra.items()]
        pool = np.concatenate([rows["meld"], *drawn])
        pool = pool[rng.permutation(len(pool))]
        out = []
        for chunk in np.split(pool, range(50 * cfg.batch_size, len(pool), 50 * cfg.batch_size)):
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            out += np.split(chunk, range(cfg.batch_size, len(chunk), cfg.batch_size))
        rng.shuffle(out)
        return out

    def step(batch: np.ndarray) -> torch.Tensor:
        logits, _ = model.top_states([states[i] for i in batch])
        return F.cross_entropy(logits, torch.from_numpy(labels[batch]).to(device), weight=weight,
                               label_smoothing=cfg.label_smoothing)

    def validate() -> loop.Evaluation:
        order = np.argsort([len(x) for x in dev])
        preds, loss = np.zeros(len(dev), np.int64), 0.0
        for s in range(0, len(order), 128):
            idx = order[s:s + 128]
            logits, _ = model.top_states([dev[i] for i in idx])
            loss += F.cross_entropy(logits, torch.from_numpy(dev_labels[idx]).to(device), reduction="sum").item()
            preds[idx] = logits.argmax(1).cpu().numpy()
        r = report(dev_labels, preds, LABELS)
        scores = {k: r[k] for k in ("accuracy", "weighted_f1", "macro_f1")}
        return loop.Evaluation({"loss": loss / len(order), **scores}, r["confusion_matrix"], title="MELD dev")

    loop.fit(cfg, model, optimizer, batches=batches, step=step, evaluate=validate, metric="val_weighted_f1",
             scheduler=scheduler, clip_grad=1.0, command=command)

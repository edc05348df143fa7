"""Fine-tune the text emotion model (all-MiniLM-L6-v2, top k layers + head): ``train text CONFIG``.

Each epoch: MELD train plus a fresh random ``extra_fraction`` of each other source (GoEmotions
Ekman, dair-ai); best epoch by MELD dev weighted F1. CPU trick: the bottom 6-k layers are frozen,
so their hidden states are computed once per run (in memory, fp16) and each epoch runs only the
top k layers. ``mode: average`` is a uniform model soup (Wortsman et al., ICML 2022) of the
``average_of`` runs' best.pt: runs fine-tuned from the same base and head initialisation (same
seed) stay in one basin. The export is the fp16 delta (top k layers + head), measured as shipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from emotion_pipeline.config import check
from emotion_pipeline.corpora.text import read_examples
from emotion_pipeline.data import data_path
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import report
from emotion_pipeline.models.text_model import TextEmotionConfig, TextEmotionModel
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train import loop
from emotion_pipeline.train.loop import Evaluation, RunConfig, RunDir

SOURCES = {"meld": "text/meld/train_sent_emo.csv", "goemotions": "text/goemotions/ekman/train.tsv",
           "dair": "text/dair_emotion/train.txt"}   # under the data folder


@dataclass(frozen=True)
class TextConfig(RunConfig):
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


@dataclass(frozen=True)
class Cached:
    hidden: list[torch.Tensor]     # per text: fp16 (length, 384) states after the frozen layers
    labels: np.ndarray             # indices into LABELS


def read(path: str, cfg: TextConfig, seed: int) -> tuple[list[str], np.ndarray]:
    texts, labels, _ = read_examples(data_path(path))
    keep = loop.subset(len(texts), cfg.max_per_split, seed)
    return [texts[i] for i in keep], np.array(labels, np.int64)[keep]


def build_cache(model: TextEmotionModel, texts: list[str], batch_size: int = 128, progress: bool = True) -> list[torch.Tensor]:
    """Hidden states after the frozen bottom layers, one fp16 (length, 384) tensor per text."""
    out: list[torch.Tensor | None] = [None] * len(texts)
    was_training = model.training
    model.eval()  # no dropout in the frozen layers: the cache must match what inference computes
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="cache", leave=False, mininterval=10, disable=not progress):
            idx = order[start:start + batch_size]
            enc = model.tokenize([texts[i] for i in idx])
            hidden = model.bottom(enc["input_ids"], enc["attention_mask"])
            lengths = enc["attention_mask"].sum(1).tolist()
            for j, i in enumerate(idx):
                out[i] = hidden[j, :lengths[j]].to(torch.float16).clone()
    model.train(was_training)
    return out  # type: ignore[return-value]


def collate(items: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached states of a batch, zero-padded to its longest: (hidden (B, L, 384), attention mask (B, L))."""
    hidden = pad_sequence([x.float() for x in items], batch_first=True)
    mask = pad_sequence([torch.ones(x.shape[0], dtype=torch.long) for x in items], batch_first=True)
    return hidden.to(device), mask.to(device)


def length_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: sort within chunks of 50 batches, then shuffle batches."""
    idx = rng.permutation(len(lengths))
    batches = []
    for c in range(0, len(idx), batch_size * 50):
        chunk = idx[c:c + batch_size * 50]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def evaluate_cached(model: TextEmotionModel, data: Cached, device: torch.device, batch_size: int = 128) -> tuple[dict, float]:
    model.eval()
    order = np.argsort([x.shape[0] for x in data.hidden])
    preds = np.zeros(len(data.hidden), np.int64)
    loss = 0.0
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        hidden, mask = collate([data.hidden[i] for i in idx], device)
        logits, _ = model.top(hidden, mask)
        loss += F.cross_entropy(logits, torch.from_numpy(data.labels[idx]).to(device), reduction="sum").item()
        preds[idx] = logits.argmax(1).cpu().numpy()
    return report(data.labels, preds, LABELS), loss / len(order)


def run(cfg: TextConfig, command: str = "") -> dict:
    loop.seed_everything(cfg.seed)
    device = select_device(cfg.device)
    model = TextEmotionModel(TextEmotionConfig(trainable_top_layers=cfg.trainable_top_layers))
    model.load_base()
    if cfg.mode == "average":
        loop.average(cfg, model, which="best", same=("seed", "trainable_top_layers"), command=command)
    elif cfg.mode == "export":
        RunDir(cfg.out_dir).load(model)
    else:
        train(cfg, model, device, command)
    return finish(model, cfg, command)


def train(cfg: TextConfig, model: TextEmotionModel, device: torch.device, command: str) -> None:
    data: dict[str, Cached] = {}
    for k, name in enumerate(cfg.sources):
        texts, labels = read(SOURCES[name], cfg, cfg.seed + k)
        data[name] = Cached(build_cache(model, texts, progress=cfg.progress), labels)
    dev_texts, dev_labels = read(cfg.val, cfg, cfg.seed + 100)
    dev = Cached(build_cache(model, dev_texts, progress=cfg.progress), dev_labels)
    model.to(device)
    extra = {s: int(cfg.extra_fraction * len(data[s].labels)) for s in cfg.sources if s != "meld"}
    steps = math.ceil((len(data["meld"].labels) + sum(extra.values())) / cfg.batch_size) * cfg.epochs
    for name, p in model.named_parameters():
        p.requires_grad = name in set(model.delta_keys())
    layers = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    optimizer = torch.optim.AdamW([{"params": layers, "lr": cfg.lr}, {"params": model.head.parameters(), "lr": cfg.head_lr}],
                                  weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_fraction * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    weight = None
    if cfg.class_weight == "sqrt":
        counts = np.bincount(np.concatenate([d.labels for d in data.values()]), minlength=len(LABELS))
        weight = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
        weight = (weight / (weight * torch.tensor(counts / counts.sum(), dtype=torch.float32)).sum()).to(device)

    def batches(rng):
        pool = [("meld", i) for i in range(len(data["meld"].labels))]
        for s, n in extra.items():
            pool += [(s, int(i)) for i in rng.choice(len(data[s].labels), n, replace=False)]
        for batch in length_batches([data[s].hidden[i].shape[0] for s, i in pool], cfg.batch_size, rng):
            hidden, mask = collate([data[pool[j][0]].hidden[pool[j][1]] for j in batch], device)
            yield hidden, mask, torch.tensor([data[pool[j][0]].labels[pool[j][1]] for j in batch], device=device)

    def step(batch):
        hidden, mask, y = batch
        return F.cross_entropy(model.top(hidden, mask)[0], y, weight=weight, label_smoothing=cfg.label_smoothing)

    def validate() -> Evaluation:
        r, loss = evaluate_cached(model, dev, device)
        return Evaluation({"loss": loss, "accuracy": r["accuracy"], "weighted_f1": r["weighted_f1"],
                           "macro_f1": r["macro_f1"]}, r["confusion_matrix"], title="MELD dev")

    loop.fit(cfg, model, optimizer, batches=batches, step=step, evaluate=validate, metric="val_weighted_f1",
             scheduler=scheduler, clip_grad=1.0, command=command)


def finish(model: TextEmotionModel, cfg: TextConfig, command: str) -> dict:
    """The model as it ships (fp16 delta) on MELD dev and the other sources' validation files;
    results.json in the run folder, then the export."""
    model.cpu().load_state_dict({k: v.half().float() for k, v in model.delta_state_dict().items()}, strict=False)
    model.eval()
    metrics = {}
    for k, path in enumerate((cfg.val, *cfg.export_evals)):
        texts, labels = read(path, cfg, cfg.seed + 100 + k)
        m = report(labels, model.predict(texts)[0].argmax(1), LABELS)
        metrics[path] = {key: m[key] for key in ("n", "accuracy", "weighted_f1", "macro_f1", "per_class_recall")}
    return loop.finish(cfg, metrics, model.delta_state_dict(), arch="text_minilm", config=model.config,
                       command=command, dtype=torch.float16,
                       title="text emotion classifier (text_minilm, fp16 delta over all-MiniLM-L6-v2)",
                       data={s: SOURCES[s] for s in cfg.sources}, split={"train": "train files", "validation": cfg.val},
                       epoch=RunDir(cfg.out_dir).checkpoint("best")["epoch"])

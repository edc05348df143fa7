"""Fine-tune the text emotion model (all-MiniLM-L6-v2, top k layers + head) on MELD.

    python -m emotion_pipeline.train.text --out runs/text [--epochs 4] [--resume] [--threads 1]
        [--device auto] [--sources meld,goemotions,dair] [--export]
    python -m emotion_pipeline.train.text --out runs/text_soup --soup runs/a runs/b [--export]

CPU trick: the bottom 6-k layers are frozen, so their hidden states are computed once per run
(cached in memory, fp16) and each epoch only runs the top k layers. Validation is MELD dev
weighted F1; the best epoch is kept (best.pt). ``--soup`` averages the best checkpoints of
several such runs, parameter by parameter (a uniform "model soup", Wortsman et al., ICML 2022):
runs fine-tuned from the same base and the same head initialisation (same seed) stay in one basin,
and their average is usually better than each of them. ``--export`` writes the delta (top k layers + head,
fp16) of the best epoch to models/weights/text_minilm.safetensors and records its checksum.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from emotion_pipeline.models.text_model import TextEmotionConfig, TextEmotionModel
from emotion_pipeline.data import data_path
from emotion_pipeline.evaluate.text import read_examples
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import report
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train.common import RunDir, average_state_dicts, seed_everything

log = logging.getLogger("emotion_pipeline.train.text")

VERSION = "text-minilm-2"  # 2: greedy soup of three mixed-data runs
# Relative to pipeline.data.data_dir(); see ../shared/data/README.md (text section).
SOURCES = {
    "meld": "text/meld/train_sent_emo.csv",
    "goemotions": "text/goemotions/ekman/train.tsv",
    "dair": "text/dair_emotion/train.txt",
}
MELD_DEV = "text/meld/dev_sent_emo.csv"
EXTRA_EVALS = {"goemotions_ekman_dev": "text/goemotions/ekman/dev.tsv", "dair_val": "text/dair_emotion/val.txt"}
EXPORT_PATH = Path(__file__).resolve().parents[2] / "models" / "weights" / "text_minilm.safetensors"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 8e-5            # transformer layers (AdamW); typical BERT fine-tuning range 2e-5..1e-4
    head_lr: float = 1e-3       # fresh linear head learns faster
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    label_smoothing: float = 0.0
    class_weight: str = "none"  # "none" or "sqrt" (inverse sqrt class frequency)
    sources: str = "meld,goemotions,dair"  # "meld" alone: best on MELD, poor on any other text
    extra_fraction: float = 0.2  # share of each non-MELD source sampled per epoch
    trainable_top_layers: int = 4
    max_train: int = 0           # >0: use only this many MELD rows (quick measurements)
    seed: int = 13


def build_cache(model: TextEmotionModel, texts: list[str], batch_size: int = 128) -> list[torch.Tensor]:
    """Hidden states after the frozen bottom layers, one fp16 (length, 384) tensor per text."""
    out: list[torch.Tensor | None] = [None] * len(texts)
    was_training = model.training
    model.eval()  # no dropout in the frozen layers: the cache must match what inference computes
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="cache", leave=False, mininterval=10):
            idx = order[start:start + batch_size]
            enc = model.tokenize([texts[i] for i in idx])
            hidden = model.bottom(enc["input_ids"], enc["attention_mask"])
            lengths = enc["attention_mask"].sum(1).tolist()
            for j, i in enumerate(idx):
                out[i] = hidden[j, :lengths[j]].to(torch.float16).clone()
    model.train(was_training)
    return out  # type: ignore[return-value]


def collate(items: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(x.shape[0] for x in items)
    hidden = torch.zeros(len(items), length, items[0].shape[1])
    mask = torch.zeros(len(items), length, dtype=torch.long)
    for j, x in enumerate(items):
        hidden[j, :x.shape[0]] = x.float()
        mask[j, :x.shape[0]] = 1
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


@torch.no_grad()
def evaluate_cached(model, cache, labels, device, batch_size=128) -> tuple[dict, float]:
    model.eval()
    order = np.argsort([x.shape[0] for x in cache])
    preds = np.zeros(len(cache), np.int64)
    loss = 0.0
    for s in range(0, len(cache), batch_size):
        idx = order[s:s + batch_size]
        hidden, mask = collate([cache[i] for i in idx], device)
        logits, _ = model.top(hidden, mask)
        y = torch.tensor([labels[i] for i in idx], device=device)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        preds[idx] = logits.argmax(1).cpu().numpy()
    return report(labels, preds.tolist(), list(LABELS)), loss / len(cache)


def make_optimizer(model: TextEmotionModel, cfg: TrainConfig, total_steps: int):
    for name, p in model.named_parameters():
        p.requires_grad = name in set(model.delta_keys())
    layers = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": layers, "lr": cfg.lr}, {"params": model.head.parameters(), "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_fraction * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    return opt, sched


def train(args: argparse.Namespace) -> Path:
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
                      label_smoothing=args.label_smoothing, class_weight=args.class_weight, sources=args.sources,
                      extra_fraction=args.extra_fraction, trainable_top_layers=args.k, max_train=args.max_train,
                      seed=args.seed)
    seed_everything(cfg.seed)
    device = select_device(args.device)
    run = RunDir(args.out, {**dataclasses.asdict(cfg), "command": "python -m emotion_pipeline.train.text " + " ".join(sys.argv[1:])})
    model = TextEmotionModel(TextEmotionConfig(trainable_top_layers=cfg.trainable_top_layers))
    model.load_base()

    sources = [s.strip() for s in cfg.sources.split(",") if s.strip()]
    unknown = set(sources) - set(SOURCES)
    if unknown or "meld" not in sources:
        raise SystemExit(f"--sources must include meld and only use {', '.join(SOURCES)}")
    data: dict[str, tuple[list[torch.Tensor], list[int]]] = {}
    t0 = time.time()
    for name in sources:
        texts, labels, _ = read_examples(data_path(SOURCES[name]))
        if name == "meld" and cfg.max_train:
            texts, labels = texts[:cfg.max_train], labels[:cfg.max_train]
        data[name] = (build_cache(model, texts), labels)
        log.info("cached %s: %d texts (%.0f s so far)", name, len(texts), time.time() - t0)
    dev_texts, dev_labels, _ = read_examples(data_path(MELD_DEV))
    dev_cache = build_cache(model, dev_texts)
    model.to(device)

    meld_n = len(data["meld"][1])
    per_epoch = meld_n + sum(int(cfg.extra_fraction * len(data[s][1])) for s in sources if s != "meld")
    steps_per_epoch = math.ceil(per_epoch / cfg.batch_size)
    opt, sched = make_optimizer(model, cfg, cfg.epochs * steps_per_epoch)
    counts = np.bincount(np.concatenate([np.array(v[1]) for v in data.values()]), minlength=len(LABELS))
    weight = None
    if cfg.class_weight == "sqrt":
        weight = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
        weight = (weight / (weight * torch.tensor(counts / counts.sum(), dtype=torch.float32)).sum()).to(device)

    start_epoch, best = 1, -1.0
    if args.resume and (ckpt := run.load_checkpoint("last")) is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch, best = ckpt["epoch"] + 1, ckpt["best_metric"]
        torch.set_rng_state(ckpt["rng_torch"])
        log.info("resumed from epoch %d (best weighted F1 %.4f)", ckpt["epoch"], best)

    for epoch in range(start_epoch, cfg.epochs + 1):
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        pool: list[tuple[str, int]] = [("meld", i) for i in range(meld_n)]
        for s in sources:
            if s != "meld":
                take = rng.choice(len(data[s][1]), int(cfg.extra_fraction * len(data[s][1])), replace=False)
                pool += [(s, int(i)) for i in take]
        lengths = [data[s][0][i].shape[0] for s, i in pool]
        model.train()
        t_epoch, total, seen = time.time(), 0.0, 0
        bar = tqdm(length_batches(lengths, cfg.batch_size, rng), desc=f"epoch {epoch}", mininterval=30)
        for batch in bar:
            hidden, mask = collate([data[pool[j][0]][0][pool[j][1]] for j in batch], device)
            y = torch.tensor([data[pool[j][0]][1][pool[j][1]] for j in batch], device=device)
            logits, _ = model.top(hidden, mask)
            loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        metrics, val_loss = evaluate_cached(model, dev_cache, dev_labels, device)
        is_best = metrics["weighted_f1"] > best
        best = max(best, metrics["weighted_f1"])
        run.log_epoch({"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss,
                       "val_accuracy": metrics["accuracy"], "val_weighted_f1": metrics["weighted_f1"],
                       "val_macro_f1": metrics["macro_f1"], "seconds": round(time.time() - t_epoch, 1)})
        run.save_checkpoint(model=model, optimizer=opt, scheduler=sched, epoch=epoch, best_metric=best,
                            config=cfg, is_best=is_best)
        if is_best:
            run._write_json(run.path / "best_metrics.json", {"epoch": epoch, **metrics})
        run.save_figures(metrics["confusion_matrix"], list(LABELS), title=f"MELD dev, epoch {epoch}",
                         curve_keys=("train_loss", "val_loss", "val_weighted_f1"))
    log.info("best MELD dev weighted F1 %.4f", best)
    return run.path


def soup(ingredients: list[Path], out: Path, command: str = "") -> Path:
    """Uniform average of the best checkpoints of ``ingredients`` -> ``out``/best.pt, evaluated on MELD dev.

    The runs must share the architecture (trainable_top_layers) and the seed: the seed fixes the
    head's initialisation, and averaging heads started from different random points is meaningless."""
    if len(ingredients) < 2:
        raise SystemExit("--soup needs at least two run folders")
    ckpts, cfgs = [], []
    for path in ingredients:
        ckpt = RunDir(path).load_checkpoint("best")
        if ckpt is None:
            raise SystemExit(f"{path}: no best.pt to put in the soup")
        ckpts.append(ckpt)
        cfgs.append(json.loads(ckpt["config_json"]))
    for field in ("trainable_top_layers", "seed"):
        values = {c[field] for c in cfgs}
        if len(values) > 1:
            raise SystemExit(f"--soup: the runs differ in {field} ({sorted(values)}); they cannot be averaged")
    model = TextEmotionModel(TextEmotionConfig(trainable_top_layers=cfgs[0]["trainable_top_layers"]))
    model.load_base()
    model.load_state_dict(average_state_dicts([c["model"] for c in ckpts], model.delta_keys()), strict=False)
    sources = sorted({s for c in cfgs for s in c["sources"].split(",") if s}, key=list(SOURCES).index)
    ingredients_info = [{"run": str(path), "epoch": ckpt["epoch"], "best_metric": ckpt["best_metric"],
                         "command": RunDir(path).command, "config": cfg}
                        for path, ckpt, cfg in zip(ingredients, ckpts, cfgs)]
    cfg = {**cfgs[0], "sources": ",".join(sources), "soup_of": ingredients_info}
    run = RunDir(out, {**cfg, "command": command})
    dev_texts, dev_labels, _ = read_examples(data_path(MELD_DEV))
    model.eval()
    probs, _ = model.predict(dev_texts)
    metrics = report(dev_labels, probs.argmax(1).tolist(), list(LABELS))
    run.save_checkpoint(model=model, optimizer=None, epoch=0, best_metric=metrics["weighted_f1"],
                        config=cfg, is_best=True)
    run._write_json(run.path / "best_metrics.json", {"epoch": 0, **metrics})
    log.info("soup of %d runs: MELD dev weighted F1 %.4f (ingredients: %s)", len(ckpts), metrics["weighted_f1"],
             ", ".join(f"{c['best_metric']:.4f}" for c in ckpts))
    return run.path


def export(run_path: Path, out: Path = EXPORT_PATH, command: str = "") -> dict:
    """Best checkpoint -> fp16 delta file; metrics measured on the fp16 weights; checksum recorded."""
    from emotion_pipeline.models import registry, weights_io

    run = RunDir(run_path)  # read-only: the run's config.json is kept
    ckpt = run.load_checkpoint("best") or run.load_checkpoint("last")
    if ckpt is None:
        raise SystemExit(f"{run_path}: no checkpoint to export")
    train_cfg = json.loads(ckpt["config_json"])
    train_command = run.command
    model = TextEmotionModel(TextEmotionConfig(trainable_top_layers=train_cfg["trainable_top_layers"]))
    model.load_base()
    model.load_state_dict(ckpt["model"])
    model.load_state_dict({k: v.half().float() for k, v in model.delta_state_dict().items()}, strict=False)
    model.eval()
    metrics = {}
    for name, rel in {"meld_dev": MELD_DEV, **EXTRA_EVALS}.items():
        texts, labels, _ = read_examples(data_path(rel))
        probs, _ = model.predict(texts)
        m = report(labels, probs.argmax(1).tolist(), list(LABELS))
        metrics[name] = {k: m[k] for k in ("n", "accuracy", "weighted_f1", "macro_f1", "per_class_recall")}
        log.info("%s: weighted F1 %.4f, macro F1 %.4f, accuracy %.4f", name, m["weighted_f1"], m["macro_f1"], m["accuracy"])
    sources = [s for s in train_cfg["sources"].split(",") if s]
    extra = {"data": {s: SOURCES[s] for s in sources}, "split": {"train": "train", "validation": MELD_DEV},
             "metrics": metrics, "command": train_command or command, "version": VERSION,
             "train_config": train_cfg, "epoch": ckpt["epoch"]}
    digest = weights_io.save(out, model.delta_state_dict(), arch="text_minilm", config=model.config,
                             extra=extra, dtype=torch.float16)
    if out.resolve().parent == registry.WEIGHTS_DIR.resolve():
        registry.record_checksum(out)
    (run.path / "export_metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("exported %s (%.1f MB, sha256 %s…)", out, out.stat().st_size / 1e6, digest[:12])
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/text"))
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--head-lr", type=float, default=TrainConfig.head_lr)
    p.add_argument("--label-smoothing", type=float, default=TrainConfig.label_smoothing)
    p.add_argument("--class-weight", choices=("none", "sqrt"), default=TrainConfig.class_weight)
    p.add_argument("--sources", default=TrainConfig.sources, help="comma-separated: meld,goemotions,dair")
    p.add_argument("--extra-fraction", type=float, default=TrainConfig.extra_fraction)
    p.add_argument("--k", type=int, default=TrainConfig.trainable_top_layers, help="trainable top layers")
    p.add_argument("--max-train", type=int, default=0)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--export", action="store_true", help="after training, write the shipped weights")
    p.add_argument("--export-only", action="store_true", help="export --out's best checkpoint, no training")
    p.add_argument("--export-to", type=Path, default=EXPORT_PATH)
    p.add_argument("--soup", type=Path, nargs="+", metavar="RUN",
                   help="average the best checkpoints of these runs into --out (no training)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    command = "python -m emotion_pipeline.train.text " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.soup:
        soup(args.soup, args.out, command=command)
    elif not args.export_only:
        train(args)
    if args.export or args.export_only:
        export(args.out, args.export_to, command=command)


if __name__ == "__main__":
    main()

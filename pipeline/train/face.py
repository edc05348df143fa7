"""Train FaceCNN on FER2013 Training, validate on PublicTest, and export the shipped weights.

    python -m emotion_pipeline.train.face --out runs/face [--targets fer2013|ferplus] [--epochs N]
                                  [--no-augment] [--mixup A] [--resume] [--init-from RUN |
                                  --init-weights FILE] [--threads N] [--device auto|cpu|cuda] [--export]

Targets: ``fer2013`` trains on the original (noisy) labels with label smoothing and selects on
PublicTest accuracy; ``ferplus`` trains on the FER+ crowd vote distributions (cross entropy
against votes / sum, the FER+ paper's best mode; rows without usable votes are left out, see
``pipeline.corpora.FerPlusVotes``) and selects on FER+ PublicTest majority accuracy.

Every epoch writes last.pt (and best.pt when the selection metric improves) through RunDir, so a
run killed at any point resumes with ``--resume`` and a partial run can still be exported.
``--export`` writes models/weights/face_cnn.safetensors from best.pt (float16 when that keeps
the PublicTest accuracy) and records its checksum.

Throughput choices (measured on this project's 2-core AVX-512 CPU, 1 thread, batch 128): bf16
autocast + channels_last make a step 2.8x faster than float32 NCHW (191 vs 536 ms), so both are
on by default; on CUDA the trainer uses bf16 autocast too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from emotion_pipeline.models import registry, weights_io
from emotion_pipeline.models.face_cnn import FaceCNN, FaceCNNConfig, predict_logits
from emotion_pipeline.corpora import FerPlusVotes, fer_faces, ferplus_votes, read_fer_npz
from emotion_pipeline.data import data_path
from emotion_pipeline.evaluate.face import ferplus_report
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import report
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train.common import RunDir, average_state_dicts, seed_everything

log = logging.getLogger("emotion_pipeline.train.face")

TRAIN_NPZ = ("faces", "fer2013", "fer2013_train_28709.npz")
VAL_NPZ = ("faces", "fer2013", "fer2013_publictest_3589.npz")
TRAIN_VOTES = ("faces", "fer2013", "ferplus_votes_train.npz")
VAL_VOTES = ("faces", "fer2013", "ferplus_votes_publictest.npz")
# 1.2.0: SWA of the ends of three warm-restart cycles after 1.0.0 (FER2013 labels);
# 2.0.0: 1.2.0 fine-tuned on FER+ vote distributions, selected on FER+ majority accuracy
VERSION = "2.0.0"
TARGETS = ("fer2013", "ferplus")


@dataclasses.dataclass
class TrainConfig:
    model: FaceCNNConfig = dataclasses.field(default_factory=FaceCNNConfig)
    epochs: int = 50              # sized to finish in ~75 min at ~90 s/epoch on 1 contended core
    batch_size: int = 128
    lr: float = 0.1               # peak LR of SGD-Nesterov (BN net, batch 128)
    warmup_epochs: float = 2.0    # linear warm-up, then cosine to 0 over the remaining epochs
    momentum: float = 0.9
    weight_decay: float = 5e-4    # on conv/linear weights only (not BN, not biases)
    label_smoothing: float = 0.1  # FER2013 labels are noisy; not applied to FER+ vote targets (already soft)
    targets: str = "fer2013"      # "fer2013" (original labels) | "ferplus" (crowd vote distributions)
    mixup_alpha: float = 0.0      # > 0: mixup (Zhang et al. 2018) of images and targets, Beta(a, a)
    # > 0: weight each class's share of the loss by (mean class mass / class mass) ** power over the
    # training targets (0.5: square root of inverse frequency), for the rare disgust and fear
    class_balance: float = 0.0
    augment: bool = True
    # augmentation ranges: shift of the 40 px crop inside 48 px (+-4 px = the whole slack),
    # rotation +-10 degrees, scale 0.9..1.1, flip p=0.5, random erasing p=0.5 of 2-15% area.
    max_shift_px: float = 4.0
    max_rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.15)
    seed: int = 0


def augment_batch(images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """uint8 (N,1,48,48) -> normalised float (N,1,S,S): one random affine per image (shift,
    rotation, scale, flip) sampled straight at S px, then random erasing. Without augmentation it
    is the centre crop, i.e. exactly models.face_cnn.prepare."""
    mc = cfg.model
    x = (images.float() / 255.0 - mc.mean) / mc.std
    n, s, full = x.shape[0], mc.input_size, x.shape[-1]
    if not cfg.augment:
        off = (full - s) // 2
        return x[..., off:off + s, off:off + s].contiguous()
    ang = torch.empty(n).uniform_(-cfg.max_rotate_deg, cfg.max_rotate_deg) * math.pi / 180
    scale = torch.empty(n).uniform_(*cfg.scale_range)
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    shift = torch.empty(n, 2).uniform_(-cfg.max_shift_px, cfg.max_shift_px) * 2 / full
    k = (s / full) / scale  # output [-1,1] covers s px of the full image, zoomed by `scale`
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = k * torch.cos(ang) * flip
    theta[:, 0, 1] = -k * torch.sin(ang)
    theta[:, 1, 0] = k * torch.sin(ang) * flip
    theta[:, 1, 1] = k * torch.cos(ang)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # pad = mean grey
    # random erasing: one rectangle per chosen image set to 0 (= the mean after normalisation)
    area = torch.empty(n).uniform_(*cfg.erase_area) * s * s
    aspect = torch.exp(torch.empty(n).uniform_(math.log(0.5), math.log(2.0)))
    h = (area * aspect).sqrt().clamp(2, s).long()
    w = (area / aspect).sqrt().clamp(2, s).long()
    top = (torch.rand(n) * (s - h + 1).float()).long()
    left = (torch.rand(n) * (s - w + 1).float()).long()
    rows, cols = torch.arange(s).view(1, s, 1), torch.arange(s).view(1, 1, s)
    box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
           & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1)))
    box &= (torch.rand(n) < cfg.erase_p).view(-1, 1, 1)
    return x.masked_fill(box[:, None], 0.0).contiguous()


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine to zero, as a pure function of the step (so resume is exact)."""
    warm = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def evaluate(model: FaceCNN, images: torch.Tensor, labels: np.ndarray, *, tta: str | None = None,
             batch_size: int = 512, votes: FerPlusVotes | None = None) -> tuple[dict, float]:
    """report() over LABELS plus the mean cross-entropy, on uint8 48 px images (N,1,48,48); with
    ``votes`` (row-aligned FER+ votes) the report also carries ``ferplus`` (ferplus_report)."""
    model.eval()
    logits = torch.cat([predict_logits(model, images[i:i + batch_size], tta)
                        for i in range(0, len(images), batch_size)])
    loss = float(F.cross_entropy(logits, torch.from_numpy(labels)))
    result = report(labels, logits.argmax(1).numpy(), LABELS)
    if votes is not None:
        result["ferplus"] = ferplus_report(logits.numpy(), votes, labels)
    return result, loss


def selection_metric(val: dict, targets: str) -> float:
    """What picks the best epoch: FER+ majority accuracy for vote targets, else label accuracy."""
    return val["ferplus"]["majority"]["accuracy"] if targets == "ferplus" else val["accuracy"]


def read_split(npz: tuple[str, ...], votes_npz: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, FerPlusVotes]:
    """(images uint8 (N,48,48), FER2013 labels in LABELS order, row-aligned FER+ votes) of one split."""
    faces = fer_faces(data_path(*npz))
    crowd = ferplus_votes(data_path(*votes_npz), filenames=faces.filenames, n_rows=len(faces.labels))
    return faces.images, faces.labels, crowd


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross entropy against per-row probability targets (N,7) (rows sum to 1); with
    ``class_weights`` (7,) each class term is weighted and the sum normalised by the batch's
    total weight (the soft-target form of weighted cross entropy)."""
    logp = F.log_softmax(logits.float(), dim=1)
    if class_weights is None:
        return -(targets * logp).sum(1).mean()
    wt = targets * class_weights.to(targets.device)
    return -(wt * logp).sum() / wt.sum()


def class_weights_for(targets: torch.Tensor, power: float) -> torch.Tensor:
    """(7,) weights (mean class mass / class mass) ** power from the training targets (N,7)."""
    mass = targets.sum(0).clamp_min(1.0)
    return (mass.mean() / mass) ** power


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., ICLR 2018): one Beta(alpha, alpha) weight per batch, pairs by a shuffle."""
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(len(x))
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm]


def smoothed_one_hot(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """(N,) class indices -> (N,7) targets; with soft_cross_entropy this is exactly
    F.cross_entropy(label_smoothing=smoothing)."""
    return F.one_hot(labels, len(LABELS)).float() * (1 - smoothing) + smoothing / len(LABELS)


def train_step(model: FaceCNN, optimizer: torch.optim.Optimizer, images: torch.Tensor, target: torch.Tensor,
               cfg: TrainConfig, device: torch.device, class_weights: torch.Tensor | None = None) -> tuple[float, int]:
    """One SGD step on uint8 48 px images (N,1,48,48) and probability targets (N,7): augmentation,
    optional mixup, bf16 autocast forward, soft cross entropy. Returns (loss, number of
    predictions equal to the top target)."""
    model.train()
    x = augment_batch(images, cfg).to(device).to(memory_format=torch.channels_last)
    target = target.to(device)
    if cfg.mixup_alpha > 0:
        x, target = mixup(x, target, cfg.mixup_alpha)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits = model(x)
    loss = soft_cross_entropy(logits, target, class_weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), int((logits.detach().argmax(1) == target.argmax(1)).sum())


def load_initial_weights(model: FaceCNN, source: str | Path) -> None:
    """Copy a weight file's (or a registry name's) tensors into ``model``; same architecture."""
    loaded = registry.load(source)
    if loaded.arch != "face_cnn":
        raise SystemExit(f"{source}: a {loaded.arch} file, not face_cnn")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in loaded.module.state_dict().items()})
    log.info("initialised from %s (sha256 %s, version %s)", loaded.path, loaded.sha256[:12], loaded.meta.get("version"))


def train(args: argparse.Namespace) -> RunDir:
    cfg = TrainConfig(epochs=args.epochs, augment=not args.no_augment, seed=args.seed, targets=args.targets,
                      mixup_alpha=args.mixup, class_balance=args.class_balance,
                      **({"lr": args.lr} if args.lr is not None else {}),
                      **({"warmup_epochs": args.warmup_epochs} if args.warmup_epochs is not None else {}),
                      **({"label_smoothing": 0.0} if args.targets == "ferplus" else {}))
    device = select_device(args.device)
    seed_everything(cfg.seed)
    run = RunDir(args.out, {**dataclasses.asdict(cfg), "command": args.command,
                            "init_from": str(args.init_from) if args.init_from else None,
                            "init_weights": str(args.init_weights) if args.init_weights else None})
    x_train, y_train, votes_train = read_split(TRAIN_NPZ, TRAIN_VOTES)
    x_val, y_val, votes_val = read_split(VAL_NPZ, VAL_VOTES)
    if cfg.targets == "ferplus":
        keep = votes_train.usable  # unmatched rows and rows with only contempt/unknown/NF votes are left out
        x_train, y_train = x_train[keep], y_train[keep]
        soft = torch.from_numpy(votes_train.targets()[keep])
    else:
        keep = y_train >= 0
        x_train, y_train = x_train[keep], y_train[keep]
        soft = None
    train_images = torch.from_numpy(np.ascontiguousarray(x_train))[:, None]
    val_images = torch.from_numpy(x_val)[:, None]
    log.info("FER2013 train %d (targets %s), PublicTest %d (FER+ majority labels %d); device %s, "
             "%d thread(s), augment=%s, mixup=%s", len(x_train), cfg.targets, len(x_val),
             int((votes_val.majority() >= 0).sum()), device, args.threads, cfg.augment, cfg.mixup_alpha)

    model = FaceCNN(cfg.model).to(device).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    start_epoch, best = 0, -1.0
    ckpt = run.load_checkpoint("last") if args.resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_torch"])
        start_epoch, best = ckpt["epoch"] + 1, ckpt["best_metric"]
        log.info("resumed from %s at epoch %d (best val accuracy %.4f)", run.last, start_epoch, best)
    elif args.resume:
        log.info("--resume: no checkpoint in %s, starting fresh", run.path)
    if ckpt is None and args.init_from is not None:
        # warm restart (SGDR, Loshchilov & Hutter 2017): another cosine cycle from a finished run's
        # best weights, with a fresh optimiser; the architecture must be the same
        init = RunDir(args.init_from).load_checkpoint("best")
        if init is None:
            raise SystemExit(f"{args.init_from}: no best.pt to start from")
        model.load_state_dict(init["model"])
        log.info("initialised from %s/best.pt (epoch %d, val accuracy %.4f)", args.init_from,
                 init["epoch"] + 1, init["best_metric"])
    elif ckpt is None and args.init_weights is not None:
        load_initial_weights(model, args.init_weights)

    class_weights = None
    if cfg.class_balance > 0:
        class_weights = class_weights_for(soft if soft is not None else smoothed_one_hot(torch.from_numpy(y_train), 0.0),
                                          cfg.class_balance)
        log.info("class weights: %s", ", ".join(f"{n} {w:.2f}" for n, w in zip(LABELS, class_weights.tolist())))
    steps = len(x_train) // cfg.batch_size  # drop the last partial batch (BN needs > 1 sample)
    y_train_t = torch.from_numpy(y_train)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(x_train))
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", mininterval=20, leave=False)
        for i in bar:
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            target = soft[idx] if soft is not None else smoothed_one_hot(y_train_t[idx], cfg.label_smoothing)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch * steps + i, steps, cfg)
            loss, hits = train_step(model, optimizer, train_images[idx], target, cfg, device, class_weights)
            total_loss += loss * len(idx)
            correct += hits
            seen += len(idx)
            if i % 25 == 0:
                bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        val, val_loss = evaluate(model, val_images, y_val, votes=votes_val)
        score = selection_metric(val, cfg.targets)
        is_best = score > best
        best = max(best, score)
        fp = val["ferplus"]
        run.log_epoch({"epoch": epoch + 1, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                       "val_loss": val_loss, "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                       "val_ferplus_majority_accuracy": fp["majority"]["accuracy"],
                       "val_ferplus_neutral_recall": fp["majority"]["per_class_recall"]["neutral"],
                       "val_ferplus_macro_f1": fp["majority"]["macro_f1"],
                       "val_ferplus_plurality_accuracy": fp["plurality"]["accuracy"],
                       "val_ferplus_cross_entropy": fp["cross_entropy"],
                       "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1)})
        run.save_checkpoint(model=model, optimizer=optimizer, epoch=epoch, best_metric=best,
                            config=cfg, is_best=is_best)
        keys = ("train_loss", "val_loss", "val_accuracy", "val_ferplus_majority_accuracy")
        if is_best:
            cm = fp["majority"]["confusion_matrix"] if cfg.targets == "ferplus" else val["confusion_matrix"]
            run.save_figures(cm, list(LABELS), curve_keys=keys,
                             title=f"PublicTest ({'FER+ majority' if cfg.targets == 'ferplus' else 'FER2013'}), epoch {epoch + 1}")
        else:
            run.save_figures(None, list(LABELS), curve_keys=keys)
    return run


@torch.no_grad()
def recalibrate_bn(model: FaceCNN, images: torch.Tensor, cfg: TrainConfig, batch_size: int = 256) -> None:
    """Recompute every BatchNorm's running mean/var as the plain average over ``images`` (uint8
    (N,1,48,48), centre crops): an average of weights does not come with matching statistics."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = the mean over all batches
    model.train()
    plain = dataclasses.replace(cfg, augment=False)
    for i in range(0, len(images), batch_size):
        model(augment_batch(images[i:i + batch_size], plain).contiguous(memory_format=torch.channels_last))
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.eval()


def swa(runs: list[Path], out: Path, command: str = "") -> RunDir:
    """Stochastic weight averaging over the ends of cosine cycles (Izmailov et al., UAI 2018): the
    mean of the runs' last.pt weights, BatchNorm statistics recomputed on FER2013 Training, then
    PublicTest accuracy; written as ``out``/best.pt for ``export``."""
    if len(runs) < 2:
        raise SystemExit("--swa needs at least two run folders")
    ckpts = []
    for r in runs:
        ckpt = RunDir(r).load_checkpoint("last")
        if ckpt is None:
            raise SystemExit(f"{r}: no last.pt to average")
        ckpts.append(ckpt)
    cfg_dict, mcfg = _checkpoint_configs(ckpts[0])
    cfg = TrainConfig(**{**{k: v for k, v in cfg_dict.items() if k in {f.name for f in dataclasses.fields(TrainConfig)}},
                         "model": mcfg})
    model = FaceCNN(mcfg)
    model.load_state_dict(average_state_dicts([c["model"] for c in ckpts]))
    x_train, _ = read_fer_npz(data_path(*TRAIN_NPZ))
    recalibrate_bn(model, torch.from_numpy(x_train)[:, None], cfg)
    x_val, y_val, votes_val = read_split(VAL_NPZ, VAL_VOTES)
    val, _ = evaluate(model, torch.from_numpy(x_val)[:, None], y_val, votes=votes_val)
    snapshots = [{"run": str(r), "epoch": int(c["epoch"]) + 1, "val_accuracy": c["best_metric"],
                  "command": RunDir(r).command} for r, c in zip(runs, ckpts)]
    run = RunDir(out, {**dataclasses.asdict(cfg), "command": command, "swa_of": snapshots})
    run.save_checkpoint(model=model, optimizer=None, epoch=0, best_metric=selection_metric(val, cfg.targets),
                        config={**dataclasses.asdict(cfg), "swa_of": snapshots}, is_best=True)
    log.info("SWA of %d snapshots: PublicTest accuracy %.4f, macro F1 %.4f, FER+ majority accuracy %.4f "
             "(snapshots: %s)", len(runs), val["accuracy"], val["macro_f1"],
             val["ferplus"]["majority"]["accuracy"], ", ".join(f"{c['best_metric']:.4f}" for c in ckpts))
    return run


def _checkpoint_configs(ckpt: dict) -> tuple[dict, FaceCNNConfig]:
    """(the training config as saved in a checkpoint, its FaceCNNConfig)."""
    cfg_dict = json.loads(ckpt["config_json"])
    return cfg_dict, FaceCNNConfig(**{**cfg_dict["model"], "widths": tuple(cfg_dict["model"]["widths"])})


def export(run: RunDir, args: argparse.Namespace, out: Path = registry.shipped_path("face-cnn")) -> dict:
    """best.pt -> safetensors (float16 if it keeps PublicTest accuracy), checksum recorded."""
    ckpt = run.load_checkpoint("best")
    if ckpt is None:
        raise SystemExit(f"{run.best}: no best checkpoint to export; train first")
    cfg_dict, mcfg = _checkpoint_configs(ckpt)
    model = FaceCNN(mcfg)
    model.load_state_dict(ckpt["model"])
    targets = cfg_dict.get("targets", "fer2013")
    x_val, y_val, votes_val = read_split(VAL_NPZ, VAL_VOTES)
    val_images = torch.from_numpy(x_val)[:, None]
    metrics = {mode or "none": evaluate(model, val_images, y_val, tta=mode, votes=votes_val)[0]
               for mode in (None, "flip", "crops10")}
    half = FaceCNN(mcfg)
    half.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in ckpt["model"].items()})
    half_val = evaluate(half, val_images, y_val, votes=votes_val)[0]
    half_acc = selection_metric(half_val, targets)
    dtype = torch.float16 if half_acc >= selection_metric(metrics["none"], targets) - 0.001 else None
    history = run.history()
    keys = ("accuracy", "macro_f1", "uar", "per_class_recall")
    extra = {
        "version": VERSION,
        "training_data": ("FER2013 Training split, 28,709 grey 48x48 faces (research use)" if targets == "fer2013" else
                          "FER2013 Training split images with FER+ crowd vote distributions (Barsoum et al. 2016, MIT); "
                          f"{int(votes_train_usable())} faces with usable votes (research use)"),
        "targets": targets,
        "split": {"train": "FER2013 Training (28,709)", "validation": "FER2013 PublicTest (3,589)"},
        "metrics": {"publictest": {k: {m: v[m] for m in keys} for k, v in metrics.items()},
                    "publictest_ferplus_majority": {k: {m: v["ferplus"]["majority"][m] for m in keys}
                                                    for k, v in metrics.items()},
                    "float16_selection_metric": half_acc, "best_epoch": int(ckpt["epoch"]) + 1},
        "train_config": cfg_dict,
        "train_seconds": round(sum(h.get("seconds", 0) for h in history), 1),
        "command": run.command or (f"python -m emotion_pipeline.train.face --out {run.path} --epochs {cfg_dict['epochs']}"
                    + ("" if cfg_dict["augment"] else " --no-augment") + f" --threads {args.threads} --export"),
        "hardware": f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}",
    }
    digest = weights_io.save(out, model, arch="face_cnn", config=mcfg, extra=extra, dtype=dtype)
    if out.resolve() == registry.shipped_path("face-cnn").resolve():
        registry.record_checksum(out)
    log.info("exported %s (%s, sha256 %s): PublicTest accuracy %.4f (flip %.4f, 10-crop %.4f); FER+ majority "
             "accuracy %.4f (flip %.4f, 10-crop %.4f); float16 selection metric %.4f",
             out, "float16" if dtype else "float32", digest[:12], metrics["none"]["accuracy"],
             metrics["flip"]["accuracy"], metrics["crops10"]["accuracy"],
             *(metrics[m]["ferplus"]["majority"]["accuracy"] for m in ("none", "flip", "crops10")), half_acc)
    return extra


def votes_train_usable() -> int:
    faces = fer_faces(data_path(*TRAIN_NPZ))
    return int(ferplus_votes(data_path(*TRAIN_VOTES), filenames=faces.filenames).usable.sum())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m emotion_pipeline.train.face", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/face"), help="run folder (checkpoints, metrics, figures)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--no-augment", action="store_true", help="train on centre crops only (ablation)")
    p.add_argument("--targets", choices=TARGETS, default=TrainConfig.targets,
                   help="fer2013: original labels; ferplus: FER+ crowd vote distributions, selected on FER+ majority accuracy")
    p.add_argument("--mixup", type=float, default=TrainConfig.mixup_alpha, metavar="ALPHA",
                   help="mixup of images and targets with Beta(ALPHA, ALPHA) (default 0: off)")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {TrainConfig.lr})")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help=f"linear warm-up before the cosine decay (default {TrainConfig.warmup_epochs})")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from this run's best.pt (a warm restart: new cosine cycle, fresh optimiser)")
    p.add_argument("--class-balance", type=float, default=TrainConfig.class_balance, metavar="POWER",
                   help="weight classes by (mean mass / class mass) ** POWER (default 0: off; 0.5 = sqrt)")
    p.add_argument("--init-weights", default=None, metavar="FILE",
                   help="start from a face_cnn .safetensors file or registry name (e.g. the shipped face-cnn)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--export", action="store_true", help="after training, export best.pt to models/weights/")
    p.add_argument("--export-to", type=Path, default=None, help="export to this path instead (no checksum recorded)")
    p.add_argument("--export-only", action="store_true", help="export --out's best checkpoint, no training")
    p.add_argument("--swa", type=Path, nargs="+", metavar="RUN",
                   help="average these runs' last.pt (ends of cosine cycles) into --out, BN recalibrated")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.command = "python -m emotion_pipeline.train.face " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.swa:
        run = swa(args.swa, args.out, args.command)
    else:
        run = RunDir(args.out) if args.export_only else train(args)
    if args.export or args.export_to or args.export_only:
        export(run, args, **({"out": args.export_to} if args.export_to else {}))


if __name__ == "__main__":
    main()

"""Face CNN (models/face_cnn.py) on FER2013 Training, selected on PublicTest: ``train face CONFIG``.

``targets: fer2013`` trains on the file's (noisy) labels, label smoothed, selected on accuracy;
``ferplus`` on the FER+ vote distributions (cross entropy against votes / sum, the FER+ paper's best
mode; faces without usable votes left out), selected on FER+ majority accuracy. ``init_weights``
fine-tunes a face_cnn file or registry name, or restarts from a run folder's best.pt (SGDR).
``mode: average``: SWA of the runs' last.pt, BatchNorm recalibrated on the training faces.
``mode: ensemble``: the networks of ``average_of`` (face_cnn files, registry names, run folders) in
one file as an output ensemble, their probabilities mixed by ``average_weights``. The
export is float16 when that keeps the selection metric within 0.1 point. bf16 autocast (CPU and
CUDA) + channels_last: a step 2.8x faster than float32 NCHW (2-core AVX-512 CPU, batch 128: 191 vs 536 ms).
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emotion_pipeline.config import check
from emotion_pipeline.corpora.face_images import PROFILE_ANGLES, PhotoSplit, photo_split
from emotion_pipeline.corpora.faces import FER_LABELS, FerSplit, fer_split
from emotion_pipeline.data import data_path
from emotion_pipeline.errors import TrainingError
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import ferplus_report, report
from emotion_pipeline.models.face_cnn import (TTA_MODES, FaceAugment, FaceCNN, FaceCNNConfig, center_view,
                                              ensemble_of, predict_logits, random_view)
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train import loop
from emotion_pipeline.train.loop import Evaluation, RunConfig, RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceConfig(RunConfig):
    MODES = ("train", "export", "average", "ensemble")
    task: str = "face"
    out_dir: str = "runs/face"
    epochs: int = 50
    model: FaceCNNConfig = field(default_factory=FaceCNNConfig)
    train_npz: str = "faces/fer2013/fer2013_train_28709.npz"     # under the data folder; FER+ votes beside each
    val_npz: str = "faces/fer2013/fer2013_publictest_3589.npz"
    targets: str = "fer2013"        # fer2013 (original labels) | ferplus (crowd vote distributions)
    max_per_split: int = 0          # > 0: a seeded pick of this many faces per split (smoke runs)
    init_weights: str | None = None  # start from a face_cnn .safetensors, a registry name or a run folder's best.pt
    batch_size: int = 128
    lr: float = 0.1                 # peak LR of SGD-Nesterov: linear warm-up, then cosine to 0
    warmup_epochs: float = 2.0
    momentum: float = 0.9
    weight_decay: float = 5e-4      # on conv/linear weights only (not BN, not biases)
    label_smoothing: float = 0.1    # fer2013 targets only (the FER+ votes are soft already)
    mixup_alpha: float = 0.0        # > 0: mixup of images and targets, Beta(a, a)
    class_balance: float = 0.0      # > 0: class weights (mean class mass / class mass) ** power
    augment: FaceAugment | None = field(default_factory=FaceAugment)  # null: centre crops only
    # Labelled photo sets (folders under the data folder, read by corpora.face_images: kdef,
    # ckplus48, sfew) trained on beside FER2013, cropped as the video pipeline crops faces. Their
    # people (movies for SFEW) of fold ``val_fold`` of ``n_folds`` are held out for validation; the
    # selection metric is then the mean of the FER+ (or FER2013) accuracy and each set's accuracy.
    photo_sets: tuple[str, ...] = ()
    photo_repeat: int = 2           # each set's training photos this many times per epoch
    photo_smoothing: float = 0.1    # label smoothing of the photos' one-hot targets
    n_folds: int = 5
    val_fold: int = 0

    def __post_init__(self):
        super().__post_init__()
        check(self, ("targets", self.targets in FER_LABELS, f"must be one of {', '.join(FER_LABELS)}"),
              ("photo_repeat", self.photo_repeat >= 1, "must be >= 1"),
              ("val_fold", 0 <= self.val_fold < self.n_folds, "must be in 0 .. n_folds-1"))


Config = FaceConfig


@dataclass(frozen=True)
class FaceData:
    images: torch.Tensor        # uint8 (N,1,48,48) training faces (FER2013, then each photo set repeated)
    targets: torch.Tensor       # float (N,7): vote distributions (ferplus) or one-hot labels (fer2013, photos)
    val: FerSplit               # validation faces with their FER2013 labels and FER+ votes
    photos: tuple[PhotoSplit, ...] = ()   # the photo sets, their validation people held out


def read_data(cfg: FaceConfig) -> FaceData:
    """FER2013 Training (for ferplus: the faces with usable votes) and the validation split, each a
    seeded pick of ``max_per_split`` faces."""
    def pick(split: FerSplit, seed: int) -> FerSplit:
        return split.take(loop.subset(len(split.rows), cfg.max_per_split, seed))

    ferplus = cfg.targets == "ferplus"
    train, val = (fer_split(data_path(npz), votes=True) for npz in (cfg.train_npz, cfg.val_npz))
    train = pick(train.take(train.votes.usable if ferplus else train.labels >= 0), cfg.seed)
    targets = train.votes.targets() if ferplus else np.eye(len(LABELS), dtype=np.float32)[train.labels]
    images, photos = [train.images], []
    for name in cfg.photo_sets:
        ph = photo_split(data_path(name), n_folds=cfg.n_folds, val_fold=cfg.val_fold,
                         source_size=cfg.model.source_size, progress=cfg.progress)
        onehot = np.eye(len(LABELS), dtype=np.float32)[ph.train_labels]
        onehot = onehot * (1 - cfg.photo_smoothing) + cfg.photo_smoothing / len(LABELS)
        images += [ph.train_images] * cfg.photo_repeat
        targets = np.concatenate([targets, *[onehot] * cfg.photo_repeat])
        photos.append(ph)
    return FaceData(torch.from_numpy(np.concatenate(images))[:, None], torch.from_numpy(targets),
                    pick(val, cfg.seed + 1), tuple(photos))


def lr_at(step: int, steps_per_epoch: int, cfg: FaceConfig) -> float:
    """Linear warm-up then cosine to zero."""
    warm, total = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def make_optimizer(model: torch.nn.Module, cfg: FaceConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": cfg.weight_decay},
                            {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}],
                           lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                       class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross entropy against probability targets (N,7); with ``class_weights`` (7,) normalised by
    the batch's total weight. (F.cross_entropy differs in the last bits, and divides by N when weighted.)"""
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


def step_loss(model: FaceCNN, images: torch.Tensor, target: torch.Tensor, cfg: FaceConfig,
              device: torch.device, class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The loss of one batch of uint8 images (N,1,48,48) against (N,7) targets."""
    x = random_view(images, cfg.model, cfg.augment).to(device, memory_format=torch.channels_last)
    target = target.to(device)
    if cfg.targets == "fer2013" and cfg.label_smoothing:
        target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / len(LABELS)
    if cfg.mixup_alpha > 0:
        x, target = mixup(x, target, cfg.mixup_alpha)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits = model(x)
    hits = (logits.detach().argmax(1) == target.argmax(1)).float().mean()
    return soft_cross_entropy(logits, target, class_weights), {"train_accuracy": float(hits)}


def evaluate(model: FaceCNN, data: FaceData, tta: str | None = None) -> tuple[dict, float]:
    """(report over LABELS with ``ferplus`` added, mean cross entropy) on the validation faces;
    ``photos``: a report per photo set on its held-out people (full profiles left out)."""
    logits = predict_logits(model.eval(), torch.from_numpy(data.val.images)[:, None], tta, batch_size=512)
    result = report(data.val.labels, logits.argmax(1).numpy(), LABELS)
    result["ferplus"] = ferplus_report(logits.numpy(), data.val.votes, data.val.labels)
    result["photos"] = {}
    for ph in data.photos:
        keep = np.asarray([a not in PROFILE_ANGLES for a in ph.val_angles])
        pl = predict_logits(model.eval(), torch.from_numpy(ph.val_images[keep])[:, None], tta, batch_size=512)
        result["photos"][ph.name] = report(ph.val_labels[keep], pl.argmax(1).numpy(), LABELS)
    return result, float(F.cross_entropy(logits, torch.from_numpy(data.val.labels)))


def selection(result: dict, cfg: FaceConfig) -> float:
    """FER+ majority (ferplus) or FER2013-label accuracy, averaged with each photo set's accuracy."""
    fer = result["ferplus"]["majority"]["accuracy"] if cfg.targets == "ferplus" else result["accuracy"]
    return float(np.mean([fer, *(r["accuracy"] for r in result.get("photos", {}).values())]))


def initial_weights(source: str) -> dict[str, torch.Tensor]:
    """A face_cnn file or registry name (fine-tuning), or a run folder's best.pt (a warm restart)."""
    if Path(source).is_dir():
        return RunDir(source).checkpoint("best")["model"]
    from emotion_pipeline.models import registry
    loaded = registry.load(source)
    if loaded.arch != "face_cnn":
        raise TrainingError(f"init_weights: {source} is a {loaded.arch} file, not face_cnn")
    if loaded.module.config.members > 1:
        raise TrainingError(f"{source} is an ensemble of {loaded.module.config.members} face CNNs; "
                            "name one network (a face_cnn file of one member) instead")
    return loaded.module.state_dict()   # float32 (weights_io.read), whatever the file's dtype


def run(cfg: FaceConfig, command: str = "") -> dict:
    loop.seed_everything(cfg.seed)
    device = select_device(cfg.device)
    data = read_data(cfg)
    model = FaceCNN(cfg.model).to(device).to(memory_format=torch.channels_last)
    if cfg.mode == "average":
        bn = (center_view(b, cfg.model).to(device, memory_format=torch.channels_last) for b in data.images.split(256))
        loop.average(cfg, model, which="last", bn_batches=bn, command=command, load_source=initial_weights)
    elif cfg.mode == "ensemble":
        model = ensemble(cfg, command).to(device)
    elif cfg.mode == "export":
        ckpt = RunDir(cfg.out_dir).checkpoint("best")
        if ckpt.get("ensemble"):   # a mode-ensemble run: its own config, not cfg.model's
            model = FaceCNN(FaceCNNConfig(**ckpt["ensemble"])).to(device)
        loop.load_weights(model, ckpt["model"], Path(cfg.out_dir) / "best.pt")
    else:
        train(cfg, model, data, device, command)
    return finish(model, cfg, data, command)


def ensemble(cfg: FaceConfig, command: str = "") -> FaceCNN:
    """``average_of``'s networks as one output ensemble, saved as out_dir/best.pt (epoch 0)."""
    if len(cfg.average_of) < 2:
        raise TrainingError(f"average_of: an ensemble needs at least two networks, got {list(cfg.average_of)}")
    weights = list(cfg.average_weights or [1.0] * len(cfg.average_of))
    try:
        model = ensemble_of([(cfg.model, initial_weights(e)) for e in cfg.average_of], weights)
    except (RuntimeError, ValueError) as e:
        raise TrainingError(f"average_of: these networks cannot be one ensemble ({str(e).splitlines()[0]})") from e
    members = [{"weights": e, "weight": round(w / sum(weights), 6)} for e, w in zip(cfg.average_of, weights)]
    run = RunDir(cfg.out_dir).start(cfg, command, ensemble=members)
    (run.path / "metrics.jsonl").unlink(missing_ok=True)
    run.save("best", {"model": model.state_dict(), "epoch": 0, "best_metric": math.nan, "best_epoch": 0,
                      "ensemble": {**model.config.__dict__}})
    log.info("ensemble of %s into %s", ", ".join(f"{m['weights']} x {m['weight']:.3g}" for m in members),
             run.path / "best.pt")
    return model


def train(cfg: FaceConfig, model: FaceCNN, data: FaceData, device: torch.device, command: str) -> None:
    if cfg.init_weights:
        loop.load_weights(model, initial_weights(cfg.init_weights), cfg.init_weights)
    steps = len(data.images) // cfg.batch_size  # the last partial batch is dropped (BN needs > 1 sample)
    if steps == 0:
        raise TrainingError(f"{len(data.images)} training faces: fewer than one batch of {cfg.batch_size}")
    weights = class_weights_for(data.targets, cfg.class_balance) if cfg.class_balance > 0 else None
    optimizer = make_optimizer(model, cfg)
    ferplus = cfg.targets == "ferplus"

    def validate() -> Evaluation:
        r, loss = evaluate(model, data)
        fp, m = r["ferplus"], r["ferplus"]["majority"]
        return Evaluation({"loss": loss, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                           "ferplus_majority_accuracy": m["accuracy"],
                           "ferplus_neutral_recall": m["per_class_recall"]["neutral"],
                           "ferplus_macro_f1": m["macro_f1"], "ferplus_plurality_accuracy": fp["plurality"]["accuracy"],
                           "ferplus_cross_entropy": fp["cross_entropy"], "selection": selection(r, cfg),
                           **{f"{name}_accuracy": p["accuracy"] for name, p in r["photos"].items()},
                           **{f"{name}_uar": p["uar"] for name, p in r["photos"].items()}},
                          (m if ferplus else r)["confusion_matrix"],
                          title=f"PublicTest ({'FER+ majority' if ferplus else 'FER2013 labels'})")

    loop.fit(cfg, model, optimizer, evaluate=validate, command=command,
             batches=lambda rng: torch.randperm(len(data.images)).split(cfg.batch_size)[:steps],
             step=lambda idx: step_loss(model, data.images[idx], data.targets[idx], cfg, device, weights),
             scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, steps, cfg) / cfg.lr),
             metric="val_selection" if cfg.photo_sets else "val_ferplus_majority_accuracy" if ferplus else "val_accuracy")


def finish(model: FaceCNN, cfg: FaceConfig, data: FaceData, command: str) -> dict:
    """The best (or averaged) model on the validation split with each TTA mode and in float16."""
    run = RunDir(cfg.out_dir)
    results = {mode or "none": evaluate(model, data, tta=mode)[0] for mode in TTA_MODES}
    half_metric = selection(evaluate(copy.deepcopy(model).half().float(), data)[0], cfg)
    keys = ("n", "accuracy", "macro_f1", "uar", "per_class_recall")
    metrics = {"validation": {m: {k: r[k] for k in keys} for m, r in results.items()},
               "validation_ferplus_majority": {m: {k: r["ferplus"]["majority"][k] for k in keys}
                                               for m, r in results.items()},
               "validation_photos": {m: {name: {k: p[k] for k in keys} for name, p in r["photos"].items()}
                                     for m, r in results.items()},
               "float16_selection_metric": half_metric, "best_epoch": run.checkpoint("best")["epoch"]}
    ferplus = cfg.targets == "ferplus"
    return loop.finish(
        cfg, metrics, model, arch="face_cnn", config=model.config, command=command,
        dtype=torch.float16 if half_metric >= selection(results["none"], cfg) - 0.001 else None,
        title="facial expression classifier (face_cnn)",
        data={"train": f"{cfg.train_npz}: {len(data.images)} faces" + (" with usable FER+ votes" if ferplus else ""),
              "targets": "FER+ crowd vote distributions (Barsoum et al. 2016, MIT)" if ferplus else "FER2013 labels",
              "licence": "FER2013: research use" + "".join(f"; {ph.name}: see ../shared/data/README.md" for ph in data.photos),
              "photos": {ph.name: f"{len(ph.train_labels)} training photos x {cfg.photo_repeat}, "
                                  f"{len(ph.val_labels)} held out (fold {cfg.val_fold} of {cfg.n_folds} by person)"
                         for ph in data.photos}},
        split={"train": cfg.train_npz, "validation": cfg.val_npz,
               "selection": ("FER+ majority accuracy" if ferplus else "FER2013-label accuracy")
                            + (", averaged with each photo set's held-out accuracy" if data.photos else "")},
        targets=cfg.targets, train_seconds=round(sum(h.get("seconds", 0) for h in run.history()), 1))

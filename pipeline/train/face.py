"""Face CNN (models/face_cnn.py) on FER2013 Training, selected on PublicTest: ``train face CONFIG``.

Targets: ``fer2013`` trains on the original (noisy) labels with label smoothing and selects on
PublicTest accuracy; ``ferplus`` trains on the FER+ crowd vote distributions (cross entropy against
votes / sum, the FER+ paper's best mode; faces without usable votes left out, see
``pipeline.corpora.faces.FerPlusVotes``) and selects on FER+ PublicTest majority accuracy.
``init_weights`` fine-tunes a face_cnn file or registry name, or starts from a run folder's
best.pt (a warm restart, SGDR). ``mode: average`` is stochastic weight averaging of the
``average_of`` runs' last.pt, BatchNorm recalibrated on the training faces. The export is float16
when that keeps the selection metric within 0.1 point.

Throughput (2-core AVX-512 CPU, 1 thread, batch 128): bf16 autocast + channels_last make a step
2.8x faster than float32 NCHW (191 vs 536 ms); on CUDA bf16 autocast too.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emotion_pipeline.config import check
from emotion_pipeline.corpora.faces import FerPlusVotes, fer_faces, ferplus_votes, ferplus_votes_path
from emotion_pipeline.data import data_path
from emotion_pipeline.errors import TrainingError, bad_file
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import ferplus_report, report
from emotion_pipeline.models.face_cnn import FaceCNN, FaceCNNConfig, center_view, normalise, predict_logits
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train import loop
from emotion_pipeline.train.loop import Evaluation, RunConfig, RunDir


@dataclass(frozen=True)
class FaceConfig(RunConfig):
    MODES = ("train", "export", "average")
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
    augment: bool = True            # shift of the 40 px crop in 48 px, rotation, scale, flip, erasing
    max_shift_px: float = 4.0
    max_rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.15)

    def __post_init__(self):
        super().__post_init__()
        check(self, ("targets", self.targets in ("fer2013", "ferplus"), "must be fer2013 or ferplus"))


Config = FaceConfig


@dataclass(frozen=True)
class FaceData:
    images: torch.Tensor        # uint8 (N,1,48,48) training faces
    targets: torch.Tensor       # float (N,7): vote distributions (ferplus) or one-hot labels (fer2013)
    val_images: torch.Tensor    # uint8 (M,1,48,48) validation faces
    val_labels: np.ndarray      # FER2013 labels in LABELS order
    val_votes: FerPlusVotes     # row-aligned FER+ votes


def read_data(cfg: FaceConfig) -> FaceData:
    """FER2013 Training (for ferplus: the faces with usable votes) and the validation split, each
    with its row-aligned FER+ votes; a seeded pick of ``max_per_split`` faces of each."""
    def split(npz: str, seed: int, keep) -> tuple[torch.Tensor, np.ndarray, FerPlusVotes]:
        path = data_path(npz)
        faces = fer_faces(path)
        if (votes_path := ferplus_votes_path(path)) is None:
            raise bad_file(path, "no ferplus_votes_<split>.npz beside it")
        votes = ferplus_votes(votes_path, filenames=faces.filenames, n_rows=len(faces.labels))
        rows = np.flatnonzero(keep(faces.labels, votes))
        rows = rows[loop.subset(len(rows), cfg.max_per_split, seed)]
        return (torch.from_numpy(np.ascontiguousarray(faces.images[rows]))[:, None], faces.labels[rows],
                FerPlusVotes(votes.votes[rows], votes.matched[rows], votes.counts[rows]))

    ferplus = cfg.targets == "ferplus"
    images, labels, votes = split(cfg.train_npz, cfg.seed, (lambda y, v: v.usable) if ferplus else (lambda y, v: y >= 0))
    targets = votes.targets() if ferplus else F.one_hot(torch.from_numpy(labels), len(LABELS)).float().numpy()
    return FaceData(images, torch.from_numpy(targets), *split(cfg.val_npz, cfg.seed + 1, lambda y, v: np.ones(len(y), bool)))


def augment_batch(images: torch.Tensor, cfg: FaceConfig) -> torch.Tensor:
    """uint8 (N,1,48,48) -> normalised float (N,1,S,S): one random affine per image (shift,
    rotation, scale, flip) sampled straight at S px, then random erasing. Without augmentation it
    is the centre crop, i.e. exactly models.face_cnn.prepare."""
    if not cfg.augment:
        return center_view(images, cfg.model)
    x, n, s, full = normalise(images, cfg.model), len(images), cfg.model.input_size, images.shape[-1]
    ang = torch.empty(n).uniform_(-cfg.max_rotate_deg, cfg.max_rotate_deg) * math.pi / 180
    k = (s / full) / torch.empty(n).uniform_(*cfg.scale_range)  # output [-1,1] covers s px of the image, zoomed
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    shift = torch.empty(n, 2).uniform_(-cfg.max_shift_px, cfg.max_shift_px) * 2 / full
    cos, sin = k * torch.cos(ang), k * torch.sin(ang)
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # pad = mean grey
    # random erasing: one rectangle per chosen image set to 0 (= the mean after normalisation)
    area = torch.empty(n).uniform_(*cfg.erase_area) * s * s
    aspect = torch.exp(torch.empty(n).uniform_(math.log(0.5), math.log(2.0)))
    h, w = (side.sqrt().clamp(2, s).long().view(-1, 1, 1) for side in (area * aspect, area / aspect))
    top, left = ((torch.rand(n).view(-1, 1, 1) * (s - size + 1).float()).long() for size in (h, w))
    r = torch.arange(s)
    box = (r.view(s, 1) >= top) & (r.view(s, 1) < top + h) & (r >= left) & (r < left + w)
    return x.masked_fill((box & (torch.rand(n) < cfg.erase_p).view(-1, 1, 1))[:, None], 0.0).contiguous()


def lr_at(step: int, steps_per_epoch: int, cfg: FaceConfig) -> float:
    """Linear warm-up then cosine to zero, as a pure function of the step."""
    warm, total = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def make_optimizer(model: torch.nn.Module, cfg: FaceConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": cfg.weight_decay},
                            {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}],
                           lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross entropy against per-row probability targets (N,7); with ``class_weights`` (7,)
    each class term is weighted and the sum normalised by the batch's total weight."""
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
    """The loss of one batch of uint8 48 px images (N,1,48,48) against (N,7) targets: augmentation,
    label smoothing (fer2013), mixup, bf16 autocast forward, soft cross entropy."""
    x = augment_batch(images, cfg).to(device).to(memory_format=torch.channels_last)
    target = target.to(device)
    if cfg.targets == "fer2013" and cfg.label_smoothing:
        target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / len(LABELS)
    if cfg.mixup_alpha > 0:
        x, target = mixup(x, target, cfg.mixup_alpha)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits = model(x)
    hits = (logits.detach().argmax(1) == target.argmax(1)).float().mean()
    return soft_cross_entropy(logits, target, class_weights), {"train_accuracy": float(hits)}


def evaluate(model: FaceCNN, data: FaceData, tta: str | None = None, batch_size: int = 512) -> tuple[dict, float]:
    """(report over LABELS with ``ferplus`` added, mean cross entropy) on the validation faces."""
    logits = predict_logits(model.eval(), data.val_images, tta, batch_size=batch_size)
    result = report(data.val_labels, logits.argmax(1).numpy(), LABELS)
    result["ferplus"] = ferplus_report(logits.numpy(), data.val_votes, data.val_labels)
    return result, float(F.cross_entropy(logits, torch.from_numpy(data.val_labels)))


def selection(result: dict, cfg: FaceConfig) -> float:
    return result["ferplus"]["majority"]["accuracy"] if cfg.targets == "ferplus" else result["accuracy"]


def initial_weights(source: str) -> dict[str, torch.Tensor]:
    """Fine-tuning (a face_cnn file or registry name) or a warm restart (SGDR: a run folder's best.pt)."""
    if Path(source).is_dir():
        return RunDir(source).checkpoint("best")["model"]
    from emotion_pipeline.models import registry
    loaded = registry.load(source)
    if loaded.arch != "face_cnn":
        raise TrainingError(f"init_weights: {source} is a {loaded.arch} file, not face_cnn")
    return loaded.module.state_dict()   # float32 (weights_io.read), whatever the file's dtype


def run(cfg: FaceConfig, command: str = "") -> dict:
    loop.seed_everything(cfg.seed)
    device = select_device(cfg.device)
    data = read_data(cfg)
    model = FaceCNN(cfg.model).to(device).to(memory_format=torch.channels_last)
    if cfg.mode == "average":
        bn = (center_view(data.images[i:i + 256], cfg.model).to(device).contiguous(memory_format=torch.channels_last)
              for i in range(0, len(data.images), 256))  # no augmentation
        loop.average(cfg, model, which="last", bn_batches=bn, command=command)
    elif cfg.mode == "export":
        RunDir(cfg.out_dir).load(model)
    else:
        train(cfg, model, data, device, command)
    return finish(model, cfg, data, command)


def train(cfg: FaceConfig, model: FaceCNN, data: FaceData, device: torch.device, command: str) -> None:
    if cfg.init_weights:
        loop.load_weights(model, initial_weights(cfg.init_weights), cfg.init_weights)
    steps = len(data.images) // cfg.batch_size  # the last partial batch is dropped (BN needs > 1 sample)
    if steps == 0:
        raise TrainingError(f"{len(data.images)} training faces: fewer than one batch of {cfg.batch_size}")
    weights = class_weights_for(data.targets, cfg.class_balance) if cfg.class_balance > 0 else None
    optimizer = make_optimizer(model, cfg)
    ferplus = cfg.targets == "ferplus"

    def batches(rng):
        perm = torch.randperm(len(data.images))
        return (perm[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(steps))

    def validate() -> Evaluation:
        r, loss = evaluate(model, data)
        fp, m = r["ferplus"], r["ferplus"]["majority"]
        return Evaluation({"loss": loss, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                           "ferplus_majority_accuracy": m["accuracy"], "ferplus_neutral_recall": m["per_class_recall"]["neutral"],
                           "ferplus_macro_f1": m["macro_f1"], "ferplus_plurality_accuracy": fp["plurality"]["accuracy"],
                           "ferplus_cross_entropy": fp["cross_entropy"]}, (m if ferplus else r)["confusion_matrix"],
                          title=f"PublicTest ({'FER+ majority' if ferplus else 'FER2013 labels'})")

    loop.fit(cfg, model, optimizer, batches=batches, evaluate=validate, command=command,
             step=lambda idx: step_loss(model, data.images[idx], data.targets[idx], cfg, device, weights),
             scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, steps, cfg) / cfg.lr),
             metric="val_ferplus_majority_accuracy" if ferplus else "val_accuracy")


def finish(model: FaceCNN, cfg: FaceConfig, data: FaceData, command: str) -> dict:
    """The best (or averaged) model on the validation split with each TTA mode and in float16
    (exported as float16 when that keeps the selection metric within 0.1 point)."""
    run = RunDir(cfg.out_dir)
    results = {mode or "none": evaluate(model, data, tta=mode)[0] for mode in (None, "flip", "crops10")}
    half = copy.deepcopy(model)
    half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    half_metric = selection(evaluate(half, data)[0], cfg)
    keys = ("n", "accuracy", "macro_f1", "uar", "per_class_recall")
    metrics = {"validation": {m: {k: r[k] for k in keys} for m, r in results.items()},
               "validation_ferplus_majority": {m: {k: r["ferplus"]["majority"][k] for k in keys} for m, r in results.items()},
               "float16_selection_metric": half_metric, "best_epoch": run.checkpoint("best")["epoch"]}
    ferplus = cfg.targets == "ferplus"
    return loop.finish(
        cfg, metrics, model, arch="face_cnn", config=cfg.model, command=command,
        dtype=torch.float16 if half_metric >= selection(results["none"], cfg) - 0.001 else None,
        title="facial expression classifier (face_cnn)",
        data={"train": f"{cfg.train_npz}: {len(data.images)} faces" + (" with usable FER+ votes" if ferplus else ""),
              "targets": "FER+ crowd vote distributions (Barsoum et al. 2016, MIT)" if ferplus else "FER2013 labels",
              "licence": "FER2013: research use"},
        split={"train": cfg.train_npz, "validation": cfg.val_npz,
               "selection": "FER+ majority accuracy" if ferplus else "FER2013-label accuracy"},
        targets=cfg.targets, train_seconds=round(sum(h.get("seconds", 0) for h in run.history()), 1))

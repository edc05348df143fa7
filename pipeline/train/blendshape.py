"""The blendshape expert (models/blendshape_expert.py): ``train configs/blendshape_expert.yaml``.

Data (``corpora.expressions``): the labelled photo sets (KDEF, CK+, SFEW) cropped exactly as the
video pipeline crops faces and read by the face landmarker, split by person as the face CNN trainer
splits them (``face_images.person_folds``, ``n_folds`` 5): the people of ``val_fold`` (0) are held
out of everything here (training, selection, the combination weight; ``bench.face_expert`` scores
them), the people of ``select_fold`` (1) choose the epoch and the combination weight, the other
folds train; plus a seeded pick of FER2013 Training faces with their FER+ vote distributions
(``fer_max``, ``fer_weight``). Only faces the landmarker reads are used.

Step: cross entropy against one-hot (smoothed) photo labels and FER+ vote distributions, class
weights ``class_balance``; AdamW. Best epoch: the mean over the photo sets of the select fold's
accuracy (KDEF without full profiles). Then the weight ``w`` of the expert in the face modality's
probability combination ``(1 - w) p_cnn + w p_expert`` (``models.blendshape_expert.combine``) is
chosen for ``face_model`` on the select fold's people and on the even rows of a FER+ PublicTest
pick (web faces, one set among them: without them the weight was 0.95 and cost the CNN's web faces
11 points), and written into the export's metadata.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from emotion_pipeline.config import check
from emotion_pipeline.corpora.expressions import (FER_SELECT_MAX, FER_SELECT_NPZ, FerExpressions, PhotoExpressions,
                                                  choosing_rows, fer_expressions, photo_expressions)
from emotion_pipeline.corpora.face_images import PROFILE_ANGLES
from emotion_pipeline.data import data_path
from emotion_pipeline.errors import TrainingError
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import report
from emotion_pipeline.models.blendshape_expert import (BlendshapeExpert, BlendshapeExpertConfig, WEIGHT_GRID,
                                                       choose_weight, probs_of_readings)
from emotion_pipeline.train import loop
from emotion_pipeline.train.loop import Evaluation, RunConfig, RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlendshapeConfig(RunConfig):
    task: str = "blendshape"
    out_dir: str = "runs/blendshape"
    epochs: int = 60
    model: BlendshapeExpertConfig = field(default_factory=BlendshapeExpertConfig)
    photo_sets: tuple[str, ...] = ("faces/kdef", "faces/ckplus48", "faces/sfew")   # under the data folder
    n_folds: int = 5
    val_fold: int = 0               # people held out of everything here (the face trainer's validation fold)
    select_fold: int = 1            # people who choose the epoch and the combination weight
    fer_npz: str = "faces/fer2013/fer2013_train_28709.npz"   # FER+ votes beside it
    fer_max: int = 10000            # a seeded pick of this many FER2013 faces with usable votes (0: none)
    fer_weight: float = 0.5         # each FER face's weight in the loss against a photo's 1
    fer_select_npz: str = FER_SELECT_NPZ   # web faces among the sets the combination weight is chosen on:
    fer_select_max: int = FER_SELECT_MAX   # the even rows of a pick (seed + 1) of this many (0: photo sets only)
    batch_size: int = 256
    lr: float = 3e-3                # AdamW, constant
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05   # of the photos' one-hot targets
    class_balance: float = 0.5      # class weights (mean class mass / class mass) ** power; 0: none
    face_model: str = "face-cnn"    # the CNN the combination weight is chosen for (registry name or file)

    def __post_init__(self):
        super().__post_init__()
        check(self, ("val_fold", 0 <= self.val_fold < self.n_folds, "must be in 0 .. n_folds-1"),
              ("select_fold", 0 <= self.select_fold < self.n_folds and self.select_fold != self.val_fold,
               "must be in 0 .. n_folds-1 and differ from val_fold"),
              ("fer_weight", self.fer_weight >= 0, "must be >= 0"),
              ("photo_sets", bool(self.photo_sets), "needs at least one labelled photo set"))


Config = BlendshapeConfig


@dataclass(frozen=True)
class ExpertData:
    x: torch.Tensor                  # float32 (N, F) training features
    targets: torch.Tensor            # float32 (N, 7)
    weights: torch.Tensor            # float32 (N,) per-example loss weight
    photos: tuple[PhotoExpressions, ...]
    fer: FerExpressions | None
    fer_select: FerExpressions | None   # PublicTest faces: their choosing_rows join the weight's choice


def scored_rows(ph: PhotoExpressions, fold: int) -> np.ndarray:
    """bool (N,): the photos of ``fold`` that the figures count (KDEF's full profiles left out)."""
    return (ph.folds == fold) & np.asarray([a not in PROFILE_ANGLES for a in ph.images.angles])


def read_data(cfg: BlendshapeConfig) -> ExpertData:
    from emotion_pipeline.landmarks import load_landmarker

    with load_landmarker() as landmarker:
        photos = tuple(photo_expressions(data_path(p), n_folds=cfg.n_folds, landmarker=landmarker,
                                         progress=cfg.progress) for p in cfg.photo_sets)
        fer = (fer_expressions(data_path(cfg.fer_npz), max_faces=cfg.fer_max, seed=cfg.seed, landmarker=landmarker,
                               progress=cfg.progress) if cfg.fer_max and cfg.fer_weight > 0 else None)
        fer_select = (fer_expressions(data_path(cfg.fer_select_npz), max_faces=cfg.fer_select_max, seed=cfg.seed + 1,
                                      landmarker=landmarker, progress=cfg.progress) if cfg.fer_select_max else None)
    xs, ts, ws = [], [], []
    eye = np.eye(len(LABELS), dtype=np.float32)
    for ph in photos:
        rows = ph.readings.found & ~np.isin(ph.folds, [cfg.val_fold, cfg.select_fold])
        xs.append(ph.features()[rows])
        ts.append(eye[ph.labels[rows]] * (1 - cfg.label_smoothing) + cfg.label_smoothing / len(LABELS))
        ws.append(np.ones(int(rows.sum()), np.float32))
        log.info("%s: %d training faces read by the landmarker (of %d photos)", ph.name, int(rows.sum()), len(rows))
    if fer is not None:
        rows = fer.readings.found
        xs.append(fer.features()[rows])
        ts.append(fer.targets[rows])
        ws.append(np.full(int(rows.sum()), cfg.fer_weight, np.float32))
        log.info("%s: %d training faces read by the landmarker (of %d)", fer.name, int(rows.sum()), len(rows))
    x = torch.from_numpy(np.concatenate(xs))
    if len(x) < cfg.batch_size:
        raise TrainingError(f"{len(x)} training faces: fewer than one batch of {cfg.batch_size}")
    return ExpertData(x, torch.from_numpy(np.concatenate(ts)), torch.from_numpy(np.concatenate(ws)), photos, fer,
                      fer_select)


def class_weights(targets: torch.Tensor, weights: torch.Tensor, power: float) -> torch.Tensor:
    mass = (targets * weights[:, None]).sum(0).clamp_min(1.0)
    return (mass.mean() / mass) ** power


def expert_probs(model: BlendshapeExpert, ph: PhotoExpressions) -> np.ndarray:
    """(N, 7) the expert's probabilities for every photo (uniform where the landmarker read nothing)."""
    r = ph.readings
    return probs_of_readings(model, r.blendshapes, r.landmarks, r.found)


def evaluate(model: BlendshapeExpert, photos: tuple[PhotoExpressions, ...], fold: int) -> dict[str, dict]:
    """``metrics.report`` per photo set on ``fold``'s faces the landmarker read."""
    out = {}
    for ph in photos:
        rows = scored_rows(ph, fold) & ph.readings.found
        out[ph.name] = report(ph.labels[rows], expert_probs(model, ph)[rows].argmax(1), LABELS)
    return out


def cnn_probs(face_model: str, crops: list[np.ndarray]) -> tuple[list[np.ndarray], dict]:
    """The face CNN's probabilities (as ``analyze`` builds it) for each array of face crops, and its ``describe()``."""
    from emotion_pipeline.encoders import load_predictor, probabilities

    predictor = load_predictor("face", face_model, device=torch.device("cpu"), offline=True)
    return [probabilities(predictor, c) for c in crops], predictor.describe()


def run(cfg: BlendshapeConfig, command: str = "") -> dict:
    loop.seed_everything(cfg.seed)
    data = read_data(cfg)
    model = BlendshapeExpert(cfg.model)
    model.set_standardisation(data.x)
    if cfg.mode == "export":
        RunDir(cfg.out_dir).load(model)
    else:
        cw = class_weights(data.targets, data.weights, cfg.class_balance) if cfg.class_balance > 0 else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = len(data.x) // cfg.batch_size

        def step(idx: torch.Tensor):
            logp = F.log_softmax(model(data.x[idx]), dim=1)
            target = data.targets[idx] if cw is None else data.targets[idx] * cw
            loss = -((target * logp).sum(1) * data.weights[idx]).sum() / (target.sum(1) * data.weights[idx]).sum()
            return loss, {}

        def validate() -> Evaluation:
            r = evaluate(model, data.photos, cfg.select_fold)
            return Evaluation({"selection": float(np.mean([v["accuracy"] for v in r.values()])),
                               **{f"{k}_accuracy": v["accuracy"] for k, v in r.items()},
                               **{f"{k}_uar": v["uar"] for k, v in r.items()}},
                              r[data.photos[0].name]["confusion_matrix"],
                              title=f"{data.photos[0].name}, people of fold {cfg.select_fold}")

        loop.fit(cfg, model, optimizer, batches=lambda rng: torch.randperm(len(data.x)).split(cfg.batch_size)[:steps],
                 step=step, evaluate=validate, metric="val_selection", command=command)
    return finish(model, cfg, data, command)


def finish(model: BlendshapeExpert, cfg: BlendshapeConfig, data: ExpertData, command: str) -> dict:
    """The select fold's figures, the combination weight chosen on it for ``face_model``, the export."""
    model.eval()
    keys = ("n", "accuracy", "uar", "per_class_recall", "read_as_neutral")
    select = evaluate(model, data.photos, cfg.select_fold)
    fs = data.fer_select
    cnn, face = cnn_probs(cfg.face_model, [ph.crops for ph in data.photos] + ([fs.images] if fs is not None else []))
    sets = [(c[rows], expert_probs(model, ph)[rows], ph.readings.found[rows], ph.labels[rows])
            for ph, c in zip(data.photos, cnn) for rows in [scored_rows(ph, cfg.select_fold)]]
    if fs is not None:
        rows = choosing_rows(len(fs.majority)) & (fs.majority >= 0)
        r = fs.readings
        sets.append((cnn[-1][rows], probs_of_readings(model, r.blendshapes, r.landmarks, r.found)[rows], r.found[rows],
                     fs.majority[rows]))
    weight, by_weight = choose_weight(sets)
    combination = {"weight": weight, "rule": "(1 - weight) * face CNN + weight * expert, per face crop read by the "
                                              "landmarker (the CNN alone elsewhere)",
                   "chosen_on": f"mean accuracy over the photo sets' people of fold {cfg.select_fold} of {cfg.n_folds}"
                                + (f" and the even rows of a {cfg.fer_select_max}-face pick of {cfg.fer_select_npz} "
                                   f"(FER+ majority labels)" if fs is not None else ""),
                   "face_model": {"name": face["name"], "sha256": face["sha256"], "version": face.get("version")},
                   "mean_accuracy_by_weight": {f"{w:.2f}": round(a, 4) for w, a in zip(WEIGHT_GRID, by_weight)}}
    log.info("combination weight %.2f (mean select-fold accuracy %.4f; CNN alone %.4f, expert alone %.4f)",
             weight, max(by_weight), by_weight[0], by_weight[-1])
    metrics = {"select_fold": {k: {m: v[m] for m in keys} for k, v in select.items()},
               "combination": combination, "best_epoch": RunDir(cfg.out_dir).checkpoint("best")["epoch"]
               if (RunDir(cfg.out_dir).path / "best.pt").exists() else None}
    photos = {ph.name: f"{int((ph.readings.found & ~np.isin(ph.folds, [cfg.val_fold, cfg.select_fold])).sum())} "
                       f"training faces read by the landmarker; people of fold {cfg.select_fold} select, "
                       f"of fold {cfg.val_fold} held out (of {cfg.n_folds}, by person)" for ph in data.photos}
    return loop.finish(
        cfg, metrics, model, arch="blendshape_expert", config=cfg.model, command=command,
        title="blendshape expert: facial expression from MediaPipe blendshapes and landmark geometry",
        data={"photos": photos, "fer": (f"{cfg.fer_npz}: {int(data.fer.readings.found.sum())} faces with FER+ votes "
                                        f"read by the landmarker (weight {cfg.fer_weight})") if data.fer else None,
              "licence": "KDEF, CK+, SFEW, FER2013: research use (see ../shared/data/README.md); FER+ votes MIT"},
        split={"train": f"people of folds other than {cfg.val_fold} and {cfg.select_fold}",
               "selection": f"mean accuracy over the photo sets, people of fold {cfg.select_fold}",
               "held_out": f"people of fold {cfg.val_fold}: python -m bench.face_expert"},
        combination=combination)

"""The one training loop: a trainer brings its data, its step and its evaluation; ``fit`` owns the rest.

``fit(cfg, model, optimizer, batches=, step=, evaluate=, metric=, scheduler=, command=)``:
``batches(rng)`` is an epoch of batches drawn with ``rng`` (a numpy Generator the loop owns, seeds
from ``cfg.seed`` unless given one, and checkpoints); ``step(batch)`` is the batch's mean loss,
optionally with per-step numbers to average (``(loss, {"train_accuracy": 0.8})``); the loop does
zero_grad / backward / clip / optimizer.step / scheduler.step (once per step). ``evaluate()`` returns
an ``Evaluation`` (under ``torch.no_grad``). Epochs count from 1; each appends to metrics.jsonl
(``val_`` + the evaluation's metrics, ``is_best``) and writes last.pt, best.pt when ``metric``
(higher is better) improves, curves.png and the best epoch's confusion.png; ``cfg.patience`` > 0
stops after that many epochs without a better metric. ``cfg.resume`` continues from last.pt (model,
optimiser, scheduler, epoch, best metric, python / numpy / torch random states): a resumed run takes
the steps of one that never stopped. Checkpoints hold tensors and plain values only
(``torch.load(weights_only=True)``). Trainers call ``seed_everything(cfg.seed)`` before building data and model.

``finish`` writes results.json and the export (models.export: safetensors and a model card stub).
``average``: stochastic weight averaging (face) and model soups (text), the parameter mean of runs'
checkpoints, BatchNorm statistics recomputed when batches are given.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch
from tqdm import tqdm

from emotion_pipeline import config as config_mod
from emotion_pipeline.errors import TrainingError
from emotion_pipeline.fileio import atomic_write, atomic_write_text
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import plot_confusion, plot_curves
from emotion_pipeline.models.export import Card, export

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """The keys every trainer's config starts with (configs/<task>_*.yaml)."""
    MODES: ClassVar[tuple[str, ...]] = ("train", "export")
    task: str = ""                  # face | audio | text | fusion (``train CONFIG`` reads it from here)
    name: str = ""
    out_dir: str = "runs/run"       # the run folder: config.json, metrics.jsonl, last.pt, best.pt, figures
    mode: str = "train"             # train; export (best.pt of out_dir, no training); average (face, text); ensemble (face)
    seed: int = 0
    device: str = "auto"            # auto: CUDA when present
    threads: int = 0                # torch CPU threads; 0: torch's default
    epochs: int = 10
    patience: int = 0               # stop after this many epochs without a better selection metric; 0: never
    resume: bool = False            # continue from out_dir/last.pt
    export: str | None = None       # write the best model here (.safetensors + a .md card stub)
    version: str = ""               # recorded in the exported file
    average_of: tuple[str, ...] = ()  # mode=average / ensemble: the run folders (or a run's best.pt / last.pt, or a weights file) combined
    average_weights: tuple[float, ...] = ()  # one weight per entry of average_of (normalised); empty: equal
    progress: bool = True

    def __post_init__(self):
        config_mod.check(
            self, ("mode", self.mode in self.MODES, f"must be one of {', '.join(self.MODES)} for {self.task or 'this task'}"),
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("patience", self.patience >= 0, "must be >= 0 (0: no early stopping)"),
            ("threads", self.threads >= 0, "must be >= 0 (0: torch's default)"),
            ("average_of", (self.mode in ("average", "ensemble")) == bool(self.average_of),
             "lists the runs or weight files to combine, with mode: average or ensemble (and only then)"),
            ("average_weights", not self.average_weights or (len(self.average_weights) == len(self.average_of)
                                                           and all(w >= 0 for w in self.average_weights)
                                                           and sum(self.average_weights) > 0),
             "needs one non-negative weight per entry of average_of, not all zero"),
            config_mod.device_rule(self.device))


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]                 # logged with a val_ prefix
    confusion: Any = None                     # rows true, columns predicted (for confusion.png)
    classes: tuple[str, ...] = LABELS
    title: str = ""


@dataclass(frozen=True)
class Fitted:
    model: torch.nn.Module                    # with the best epoch's weights
    best_metric: float
    best_epoch: int
    history: list[dict]


def subset(n: int, limit: int, seed: int) -> np.ndarray:
    """Indices 0..n-1, or a seeded pick of ``limit`` of them in order (limit 0: all)."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(rng: np.random.Generator) -> dict:
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    return {"python": random.getstate(), "numpy": numpy_state, "generator": rng.bit_generator.state,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict, rng: np.random.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state["numpy"], state=dict(state["numpy"]["state"]))
    numpy_state["state"]["key"] = numpy_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state(numpy_state)
    rng.bit_generator.state = state["generator"]
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunDir:
    """A run folder: config.json, metrics.jsonl, last.pt, best.pt, curves.png, confusion.png."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, cfg: RunConfig, command: str, **more: Any) -> "RunDir":
        self.write_json("config.json", {"command": command, **config_mod.to_dict(cfg), **more})
        return self

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=2, default=str))

    def read_json(self, name: str) -> dict:
        return json.loads(f.read_text()) if (f := self.path / name).exists() else {}

    def history(self) -> list[dict]:
        f = self.path / "metrics.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.exists() else []

    def checkpoint(self, which: str = "best", *, required: bool = True) -> dict | None:
        if not (path := self.path / f"{which}.pt").exists():
            if required:
                raise TrainingError(f"{path}: no such checkpoint (train first, or check the run folder)")
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TrainingError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc

    def load(self, model: torch.nn.Module, which: str = "best") -> dict:
        """The ``which`` checkpoint's weights into ``model``; returns the checkpoint."""
        ckpt = self.checkpoint(which)
        load_weights(model, ckpt["model"], self.path / f"{which}.pt")
        return ckpt

    def save(self, which: str, state: dict) -> None:
        atomic_write(self.path / f"{which}.pt", lambda tmp: torch.save(state, tmp))


def load_weights(model: torch.nn.Module, state: dict, where: Any) -> None:
    """``load_state_dict`` with a TrainingError naming ``where`` when the architectures differ."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise TrainingError(f"{where}: weights of another architecture than the config's "
                            f"({str(exc).splitlines()[0]})") from exc


def fit(cfg: RunConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
        batches: Callable[[np.random.Generator], Iterable[Any]], step: Callable[[Any], Any],
        evaluate: Callable[[], Evaluation], metric: str, scheduler: Any = None,
        rng: np.random.Generator | None = None, clip_grad: float | None = None, command: str = "") -> Fitted:
    """Train ``model`` for ``cfg.epochs`` (see the module docstring); returns it with the best weights."""
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    run = RunDir(cfg.out_dir).start(cfg, command)
    start, best, best_epoch = 1, -math.inf, 0
    ckpt = run.checkpoint("last", required=False) if cfg.resume else None
    if ckpt is not None:
        if "rng" not in ckpt:
            raise TrainingError(f"{run.path / 'last.pt'}: written by the former per-trainer command; it can be "
                                "exported (mode: export) or averaged, not resumed")
        load_weights(model, ckpt["model"], run.path / "last.pt")
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"], rng)
        start, best, best_epoch = ckpt["epoch"] + 1, ckpt["best_metric"], ckpt["best_epoch"]
        log.info("resumed %s after epoch %d (best %s %.4f at epoch %d)", run.path, start - 1, metric, best, best_epoch)
    else:
        if cfg.resume:
            log.info("resume: no last.pt in %s, starting afresh", run.path)
        (run.path / "metrics.jsonl").unlink(missing_ok=True)
    params = [p for p in model.parameters() if p.requires_grad]
    for epoch in range(start, cfg.epochs + 1):
        if cfg.patience and epoch - 1 - best_epoch >= cfg.patience:
            log.info("early stop: no better %s for %d epochs", metric, cfg.patience)
            break
        t0 = time.perf_counter()
        model.train()
        losses, logs = [], defaultdict(list)
        for batch in tqdm(batches(rng), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, mininterval=10,
                          disable=not cfg.progress):
            out = step(batch)
            loss, numbers = out if isinstance(out, tuple) else (out, {})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(params, clip_grad)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(float(loss.detach()))
            for k, v in numbers.items():
                logs[k].append(v)
        model.eval()
        with torch.no_grad():
            ev = evaluate()
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
                  **{k: float(np.mean(v)) for k, v in logs.items()},
                  **{f"val_{k}": v for k, v in ev.metrics.items()},
                  "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 2)}
        if metric not in record:
            raise TrainingError(f"selection metric {metric!r} is not among the epoch's {sorted(record)}")
        if is_best := record[metric] > best:
            best, best_epoch = record[metric], epoch
        with open(run.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({**record, "is_best": is_best}) + "\n")
        log.info("epoch %d: %s%s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                  if isinstance(v, float) and k not in ("lr", "seconds")),
                 " (best)" if is_best else "")
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None, "epoch": epoch,
                 "best_metric": best, "best_epoch": best_epoch, "metric": metric, "rng": _rng_state(rng),
                 "config_json": json.dumps(config_mod.to_dict(cfg))}
        run.save("last", state)
        if is_best:
            run.save("best", state)
            if ev.confusion is not None:
                plot_confusion(ev.confusion, list(ev.classes), run.path / "confusion.png",
                               title=f"{ev.title}, epoch {epoch}".lstrip(", "))
        plot_curves(run.history(), run.path / "curves.png",
                    keys=("train_loss", "val_loss", metric) + tuple(logs))
    run.load(model)
    model.eval()
    return Fitted(model, best, best_epoch, run.history())


def average(cfg: RunConfig, model: torch.nn.Module, *, which: str, same: tuple[str, ...] = (),
            bn_batches: Iterable[torch.Tensor] | None = None, command: str = "",
            load_source: Callable[[str], dict] | None = None) -> torch.nn.Module:
    """The parameter mean of ``cfg.average_of`` into ``model``, weighted by ``cfg.average_weights``
    (equal when empty), BatchNorm statistics recomputed over ``bn_batches`` (update_bn); saved as
    cfg.out_dir/best.pt (epoch 0) so that export and resume-free evaluation find it.
    An entry is a run folder (its ``which`` checkpoint: last / best), a run's ``best.pt`` / ``last.pt``,
    or, with ``load_source``, anything else that gives a state dict (a weights file, a registry name:
    e.g. the model a run was fine-tuned from, for a WiSE-FT interpolation, Wortsman et al. 2022).
    ``same``: config keys the runs must agree on (a soup of differently initialised heads is meaningless)."""
    if len(cfg.average_of) < 2:
        raise TrainingError(f"average_of: needs at least two run folders, got {list(cfg.average_of)}")
    states, ingredients, configs = [], [], []
    for entry in cfg.average_of:
        path = Path(entry)
        if path.is_dir() or path.suffix == ".pt":
            run, name = (RunDir(path), which) if path.is_dir() else (RunDir(path.parent), path.stem)
            ckpt = run.checkpoint(name)
            conf = json.loads(ckpt.get("config_json", "{}"))
            states.append(ckpt["model"])
            configs.append(conf)
            ingredients.append({"run": str(run.path), "checkpoint": name, "epoch": ckpt.get("epoch"),
                                "best_metric": ckpt.get("best_metric"),
                                "command": run.read_json("config.json").get("command", ""), "config": conf})
        elif load_source is not None:
            states.append(load_source(entry))
            ingredients.append({"weights": entry})
        else:
            raise TrainingError(f"average_of: {entry} is not a run folder or a run's .pt checkpoint")
    for key in same:
        if len(values := {json.dumps(c.get(key)) for c in configs}) > 1:
            raise TrainingError(f"average_of: the runs differ in {key} ({', '.join(sorted(values))}); "
                                "they cannot be averaged")
    weights = np.asarray(cfg.average_weights or [1.0] * len(states), dtype=np.float64)
    weights = weights / weights.sum()
    mean: dict[str, torch.Tensor] = {}
    for entry, state, w in zip(cfg.average_of, states, weights):
        load_weights(model, state, entry)                    # checks that every entry fits the model
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                mean[name] = mean.get(name, 0) + float(w) * value.detach().double()
    with torch.no_grad():  # floating buffers (BN statistics) too, until update_bn recomputes them
        model.load_state_dict({**model.state_dict(), **{k: v.to(model.state_dict()[k].dtype) for k, v in mean.items()}})
    if bn_batches is not None:
        torch.optim.swa_utils.update_bn(bn_batches, model, device=next(model.parameters()).device)
    model.eval()
    for ing, w in zip(ingredients, weights):
        ing["weight"] = round(float(w), 6)
    run = RunDir(cfg.out_dir).start(cfg, command, averaged=ingredients)
    (run.path / "metrics.jsonl").unlink(missing_ok=True)
    run.save("best", {"model": model.state_dict(), "epoch": 0, "best_metric": math.nan, "best_epoch": 0,
                      "config_json": json.dumps({**config_mod.to_dict(cfg), "averaged": ingredients})})
    log.info("averaged %d models (weights %s) into %s", len(states), ", ".join(f"{w:.3g}" for w in weights),
             run.path / "best.pt")
    return model


def finish(cfg: RunConfig, metrics: dict, weights: torch.nn.Module | dict, *, arch: str, config: Any,
           title: str, data: Any, split: Any, command: str = "", dtype: torch.dtype | None = None,
           **extra: Any) -> dict:
    """results.json in the run folder, and with ``cfg.export`` the export, its card quoting the run's config.json."""
    run = RunDir(cfg.out_dir)
    run.write_json("results.json", metrics)
    if cfg.export:
        trained = run.read_json("config.json")
        card = Card(title, data, split, metrics, trained.get("command") or command, {**extra, "train_config": trained})
        export(cfg.export, weights, arch=arch, config=config, card=card, version=cfg.version, dtype=dtype)
    return metrics

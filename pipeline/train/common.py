"""What every trainer shares: run folder, per-epoch checkpoints, resume, JSONL metrics, figures.

Checkpoints are written with ``torch.save`` (tensors and plain values only) and read back with
``torch.load(weights_only=True)``, so a checkpoint cannot execute code. The product's shipped
weights are not checkpoints: they are safetensors written by ``models.weights_io.save``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotion_pipeline.fileio import atomic_write, atomic_write_text
from emotion_pipeline.metrics import plot_confusion, plot_curves

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def average_state_dicts(states: list[dict[str, torch.Tensor]], keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Parameter-wise mean of state dicts of one architecture (``keys``: only these; integer
    buffers such as BatchNorm's num_batches_tracked are taken from the first). Used for model
    soups (text) and stochastic weight averaging (face)."""
    first = states[0]
    keys = list(first) if keys is None else keys
    for st in states:
        if set(st) != set(first) or any(k not in st or st[k].shape != first[k].shape for k in keys):
            raise SystemExit("the runs to average have different architectures")
    return {k: torch.stack([st[k].float() for st in states]).mean(0) if first[k].is_floating_point()
            else first[k] for k in keys}


class RunDir:
    """A training run's folder: config.json, metrics.jsonl, last.pt, best.pt, curves.png, confusion.png."""

    def __init__(self, path: str | os.PathLike, config: Any = None):
        """A run folder; ``config`` (the resolved config) is written beside the outputs. Without
        one, an existing run is opened read-only (to export or evaluate it): nothing is rewritten."""
        self.path = Path(path)
        if config is None:
            if not self.path.is_dir():
                raise FileNotFoundError(f"{self.path}: no such run folder")
            return
        self.path.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        self._write_json(self.path / "config.json", cfg)

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        atomic_write_text(path, json.dumps(obj, indent=2, default=str))

    @property
    def command(self) -> str:
        """The command line recorded in the run's config.json ("" if none was recorded)."""
        f = self.path / "config.json"
        return json.loads(f.read_text()).get("command", "") if f.exists() else ""

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def history(self) -> list[dict]:
        f = self.path / "metrics.jsonl"
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    def log_epoch(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        log.info("epoch %s: %s", record.get("epoch"),
                 ", ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)))

    def save_checkpoint(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                        epoch: int, best_metric: float, config: Any, is_best: bool,
                        scheduler: Any = None) -> None:
        cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "epoch": epoch,
            "best_metric": best_metric,
            "config_json": json.dumps(cfg, default=str),
            "rng_torch": torch.get_rng_state(),
        }
        atomic_write(self.last, lambda tmp: torch.save(state, tmp))
        if is_best:
            atomic_write(self.best, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, which: str = "last") -> dict | None:
        path = self.last if which == "last" else self.best
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def save_figures(self, confusion_matrix: Any, class_names: list[str], title: str = "",
                     curve_keys: tuple[str, ...] = ("train_loss", "val_loss", "val_accuracy")) -> None:
        history = self.history()
        if history:
            plot_curves(history, self.path / "curves.png", keys=curve_keys)
        if confusion_matrix is not None:
            plot_confusion(confusion_matrix, class_names, self.path / "confusion.png", title=title)

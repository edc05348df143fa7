"""Shipping a trained model: one safetensors file (``weights_io.save``) and a model card stub beside it.

``export`` is what every training run's export goes through (``pipeline.train.loop.finish``): the
tensors with their config, labels and the card's metadata; the SHA-256 recorded in
``checksums.json`` when the file lands in models/weights/; and ``<stem>.md`` (``<stem>.stub.md``
when a hand-written card is already there) quoting data, split, metrics and the command.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emotion_pipeline.fileio import atomic_write_text
from emotion_pipeline.models import registry, weights_io

log = logging.getLogger(__name__)

STUB_MARK = "<!-- model card stub written by `python -m emotion_pipeline train` -->"
_UNTABLED = ("confusion_matrix", "labels", "support", "per_class_recall", "per_class_f1")


@dataclass(frozen=True)
class Card:
    """What an exported file says about itself (metadata and the .md stub beside it)."""
    title: str
    data: Any
    split: Any
    metrics: dict
    command: str
    extra: dict = field(default_factory=dict)   # more metadata (train_config, encoders, ...)


def export(path: str | Path, weights: torch.nn.Module | dict, *, arch: str, config: Any, card: Card,
           version: str = "", dtype: torch.dtype | None = None) -> str:
    """Write the file and its card stub (see the module docstring); returns the SHA-256."""
    path = Path(path)
    meta = {"version": version, "data": card.data, "split": card.split, "metrics": card.metrics,
            "command": card.command, **card.extra}
    digest = weights_io.save(path, weights, arch=arch, config=config, extra=meta, dtype=dtype)
    if path.resolve().parent == registry.WEIGHTS_DIR.resolve():
        registry.record_checksum(path)
    stub = path.with_suffix(".md")
    if stub.exists() and not stub.read_text().startswith(STUB_MARK):
        stub = path.with_suffix(".stub.md")
        log.info("%s is hand-written: the card stub goes to %s", path.with_suffix(".md").name, stub.name)
    atomic_write_text(stub, card_text(path, card, version, digest, dtype))
    log.info("exported %s (sha256 %s), card %s", path, digest[:12], stub)
    return digest


def card_text(path: Path, card: Card, version: str, digest: str, dtype: torch.dtype | None) -> str:
    def flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
        if not isinstance(d, dict):
            return [(prefix, d)]
        return [kv for k, v in d.items() if k not in _UNTABLED for kv in flat(v, f"{prefix}.{k}" if prefix else str(k))]

    rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in flat(card.metrics) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return "\n".join([
        STUB_MARK, f"# {path.name}: {card.title}", "",
        f"Version {version or '-'}, {'float16' if dtype == torch.float16 else 'float32'} tensors, "
        f"SHA-256 `{digest}`. Written by the training run; replace this stub with a full card "
        "(intended use, limits, licences of the data) before shipping.", "",
        "## Data", "", "```", json.dumps(card.data, indent=2), "```", "",
        "## Split", "", "```", json.dumps(card.split, indent=2), "```", "",
        "## Metrics", "", "| metric | value |", "|---|---|", *rows, "",
        "## Command", "", "```", card.command, "```", ""])

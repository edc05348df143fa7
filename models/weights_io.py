"""Weights on disk: safetensors only (no pickle), with the model's config in the file's metadata.

A file written by ``save`` carries everything needed to rebuild the module:
``arch`` (a name in models.registry.ARCHITECTURES), ``config`` (JSON of its config dataclass),
``labels`` (output order) and any extra JSON metadata (training data, metrics, ...).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from emotion_pipeline.fileio import atomic_write, sha256_file  # noqa: F401 (re-exported)
from emotion_pipeline.labels import LABELS

def save(path: str | os.PathLike, state: dict[str, torch.Tensor] | torch.nn.Module, *, arch: str,
         config: Any, extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> str:
    """Write a safetensors file atomically; returns its SHA-256."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    tensors = {}
    for key, value in state.items():
        value = value.detach().cpu().contiguous()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    metadata = {"arch": arch, "config": json.dumps(cfg), "labels": json.dumps(list(LABELS))}
    for key, value in (extra or {}).items():
        metadata[key] = json.dumps(value)
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return sha256_file(path)


def read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (as float32 where floating) and parsed metadata of a file written by ``save``."""
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        raw_meta = fh.metadata() or {}
        for key in fh.keys():
            tensor = fh.get_tensor(key)
            tensors[key] = tensor.float() if tensor.is_floating_point() else tensor
    meta: dict[str, Any] = {}
    for key, value in raw_meta.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return tensors, meta

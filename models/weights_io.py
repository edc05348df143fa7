"""Weights on disk: safetensors only (no pickle), with the model's config in the file's metadata.

A file written by ``save`` carries everything needed to rebuild the module:
``arch`` (a name in models.registry.ARCHITECTURES), ``config`` (JSON of its config dataclass),
``labels`` (output order) and any extra JSON metadata (training data, metrics, ...).
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotion_pipeline.errors import ModelUnavailableError
from emotion_pipeline.fileio import atomic_write, sha256_file  # noqa: F401 (re-exported)
from emotion_pipeline.labels import LABELS

if TYPE_CHECKING:   # torch is imported when weights are read or written, not with this module
    import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024   # safetensors' own limit on the JSON header (safetensors/src/lib.rs)


def save(path: str | os.PathLike, state: "dict[str, torch.Tensor] | torch.nn.Module", *, arch: str,
         config: Any, extra: dict[str, Any] | None = None, dtype: "torch.dtype | None" = None) -> str:
    """Write a safetensors file atomically; returns its SHA-256."""
    import torch
    from safetensors.torch import save_file

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


def _check_header(path: Path) -> None:
    """Refuse, naming the file, what safetensors would refuse with a message naming none."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = path.stat().st_size
    except OSError as e:
        raise ModelUnavailableError(f"{path}: cannot read the weight file ({e.strerror or e})") from e
    if len(head) < 8:
        raise ModelUnavailableError(f"{path}: not a safetensors file ({size} bytes, no header)")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or n > size - 8:
        raise ModelUnavailableError(f"{path}: not a safetensors file (its header claims {n} bytes, "
                                    f"the file holds {size}; damaged or another format)")


def read(path: str | os.PathLike) -> "tuple[dict[str, torch.Tensor], dict[str, Any]]":
    """Tensors (as float32 where floating) and parsed metadata of a file written by ``save``.
    A file that is not one (damaged, truncated, a huge header, another format) is a
    ModelUnavailableError naming it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _check_header(path)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw_meta = fh.metadata() or {}
            for key in fh.keys():
                tensor = fh.get_tensor(key)
                tensors[key] = tensor.float() if tensor.is_floating_point() else tensor
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise ModelUnavailableError(f"{path}: not a readable safetensors file ({why})") from e
    meta: dict[str, Any] = {}
    for key, value in raw_meta.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return tensors, meta

"""Training: ``python -m emotion_pipeline train [face|audio|text|fusion|blendshape] CONFIG [--set key=value] [--resume]``.

Each trainer module has a ``Config`` (strict YAML, unknown keys fail; its ``task:`` key names the
trainer when the command line does not) and ``run(cfg, command)``: its data reader, step, evaluation
and export details around ``loop.fit``, the one loop; ``features`` caches encoder outputs for fusion.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

import yaml

from emotion_pipeline import config as config_mod
from emotion_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

TASKS = ("face", "audio", "text", "fusion", "blendshape")


def load_config(task: str | None, path: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """(trainer module, its config) for ``task`` (None: the file's ``task:`` key)."""
    try:
        named = (yaml.safe_load(Path(path).read_text()) or {}).get("task")
    except (OSError, yaml.YAMLError, AttributeError):
        named = None   # config.load below says what is wrong with the file
    if task and named and named != task:
        raise ConfigError(f"{path}: task: {named}, but the command asks for {task}")
    if (task := task or named) not in TASKS:
        raise ConfigError(f"{path}: " + (f"unknown task {task!r}" if task else "no task: key") +
                          f"; name one of {', '.join(TASKS)} (train TASK CONFIG, or task: in the file)")
    module = importlib.import_module(f"emotion_pipeline.train.{task}")
    return module, config_mod.load(module.Config, path, [f"task={task}", *overrides])


def main(task: str | None, path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
         resume: bool = False, command: str = "") -> dict:
    """Load the config, set the threads, run the trainer (it seeds itself); returns its summary."""
    import torch

    module, cfg = load_config(task, path, [*overrides, *(["resume=true"] if resume else [])])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    log.info("%s: %s run in %s (mode %s)", path, cfg.task, cfg.out_dir, cfg.mode)
    return module.run(cfg, command)

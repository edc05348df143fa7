"""Train the late-fusion head: ``train fusion configs/fusion_tiny.yaml`` (``make train CONFIG=...``).

On encoder outputs scored once and cached (pipeline.train.features): ``paired_unimodal`` draws (face,
audio, text) triples of one label from unimodal corpora afresh each epoch, with modality dropout, and
(``data.neutral_speech``) real transcripts of neutral sentences spoken with emotion in place of some
texts, so that words which say nothing do not outvote the voice; ``manifest`` takes real labelled
clips. Best epoch: validation macro F1 on examples drawn like the training ones. comparison.md: each
modality alone, the confidence-weighted average and the head, with all modalities and each one missing.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from emotion_pipeline.config import to_dict
from emotion_pipeline.errors import ConfigError
from emotion_pipeline.fuse import average, encoder_record
from emotion_pipeline.labels import LABELS
from emotion_pipeline.metrics import report
from emotion_pipeline.models.fusion_head import MODALITIES, FusionHead, FusionHeadConfig
from emotion_pipeline.preflight import select_device
from emotion_pipeline.records import ModalityScores
from emotion_pipeline.train import loop
from emotion_pipeline.train.features import (Batch, DataConfig, apply_dropout, build_manifest, build_unimodal,
                                             draw_triples, neutral_text_pool)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodersConfig:
    face_model: str = "face-cnn"
    audio_model: str = "audio-cnn"
    text_model: str = "text-minilm"


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "gated"             # gated (a weight per modality; shipped) | pooled | mlp: models/fusion_head.py
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.2
    use_embeddings: bool = False    # scores only: the head then depends on calibration, not feature spaces


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 256


@dataclass(frozen=True)
class FusionConfig(loop.RunConfig):
    task: str = "fusion"
    out_dir: str = "runs/fusion"
    epochs: int = 30
    patience: int = 6
    version: str = "1"              # recorded in the exported head
    modality_dropout: float = 0.3   # chance each present modality is hidden in a training example
    data: DataConfig = field(default_factory=DataConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


Config = FusionConfig


@dataclass(frozen=True)
class FusionExamples:
    val: Batch                       # fixed, without dropout: the comparison table
    val_dropped: Batch               # fixed, with dropout (and neutral text): picks the best epoch
    draw_train: Callable[[np.random.Generator], Batch]   # an epoch's training examples
    record: dict                     # pipeline.fuse.encoder_record of the encoders
    neutral_text: dict | None = None   # what made the neutral-content transcripts


def compose_examples(cfg: FusionConfig, device: torch.device) -> FusionExamples:
    """Paired-unimodal triples or manifest clips (see the module docstring). The validation
    examples are drawn with seeds seed+1 (without dropout) and seed+2 (with)."""
    d, dropout = cfg.data, cfg.modality_dropout
    if d.kind == "paired_unimodal":
        from emotion_pipeline.encoders import load_predictor
        predictors = {m: load_predictor(m, getattr(cfg.encoders, f"{m}_model"), device=device, offline=True)
                      for m in MODALITIES}
        pools, folder = build_unimodal(d, cfg.seed, predictors, progress=cfg.progress)
        log.info("features: %s", folder)
        neutral, made = (neutral_text_pool(d, predictors["text"], progress=cfg.progress)
                         if d.neutral_speech and d.neutral_text_rate > 0 else (None, None))
        val = {m: p.subset(True) for m, p in pools.items()}
        train = {m: p.subset(False) for m, p in pools.items()}
        rate, calm = d.neutral_text_rate, d.neutral_face_rate
        return FusionExamples(
            draw_triples(val, d.val_examples, np.random.default_rng(cfg.seed + 1), 0.0),
            draw_triples(val, d.val_examples, np.random.default_rng(cfg.seed + 2), dropout, neutral, rate, calm),
            lambda g: draw_triples(train, d.train_examples, g, dropout, neutral, rate, calm),
            encoder_record({m: p.describe() for m, p in predictors.items()}), made)
    # kind: manifest (DataConfig checks the kind and that a manifest is named)
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig
    from emotion_pipeline.corpora.clips import read_clips
    analyzer = Analyzer(AnalyzeConfig(**dataclasses.asdict(cfg.encoders), fusion="average", smoothing_window_s=1,
                                      progress=False, device=str(device)))
    clips, is_val = build_manifest(read_clips(d.manifest, d.adapter), analyzer, d, cfg.seed, progress=cfg.progress)
    if is_val.all() or not is_val.any():
        raise ConfigError(f"{d.manifest}: the split left no training or no validation clips "
                          f"(set a split column, data.val_speakers or data.val_fraction)")
    val, train = clips.take(np.flatnonzero(is_val)), clips.take(np.flatnonzero(~is_val))
    return FusionExamples(val, apply_dropout(val, np.random.default_rng(cfg.seed + 2), dropout),
                          lambda g: apply_dropout(train, g, dropout),
                          encoder_record({m: analyzer.models[m] for m in MODALITIES}))


def _logits(head: FusionHead, b: Batch, device: torch.device) -> torch.Tensor:
    embs = [e.to(device) for e in b.embs] if head.config.embed_dims else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return head(b.probs.to(device), b.mask.to(device), embs).float()


def _score(y: np.ndarray, pred: np.ndarray) -> dict:
    r = report(y, pred, LABELS)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": len(y)}


@torch.no_grad()
def comparison_table(head: FusionHead, val: Batch, device: torch.device) -> dict[str, dict[str, dict | None]]:
    """Accuracy, macro F1 and n of each modality alone (None when absent throughout), the
    confidence-weighted average and the head, with all modalities and with each one hidden."""
    head.eval()
    y, table = val.labels.numpy(), {}
    for cond, hidden in {"all": None, "no_face": 0, "no_audio": 1, "no_text": 2}.items():
        mask = val.mask.clone()
        if hidden is not None:
            mask[:, hidden] = 0
        keep, present = (mask.sum(1) > 0).numpy(), (mask > 0).numpy()
        head_pred = _logits(head, Batch(val.probs, mask, val.embs, val.labels), device).argmax(1).cpu().numpy()
        avg_pred = [int(np.argmax(average([ModalityScores(val.probs[i, j].numpy()) if mask[i, j] > 0 else None
                                           for j in range(3)], (1.0, 1.0, 1.0)).probs)) for i in np.flatnonzero(keep)]
        table[cond] = {**{m: _score(y[p], val.probs[p, j].argmax(1).numpy()) if (p := present[:, j]).any() else None
                          for j, m in enumerate(MODALITIES)},
                       "average": _score(y[keep], np.array(avg_pred)), "head": _score(y[keep], head_pred[keep])}
    return table


def format_table(table: dict[str, dict[str, dict | None]]) -> str:
    cols = [*MODALITIES, "average", "head"]
    lines = ["| condition | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for cond, rows in table.items():
        cells = ["-" if (s := rows[c]) is None else f"{s['accuracy']:.3f} / {s['macro_f1']:.3f}" for c in cols]
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(accuracy / macro F1 on the validation triples)"


def run(cfg: FusionConfig, command: str = "") -> dict:
    """Train (or, mode=export, reload) the head, write the comparison table, export; returns the summary."""
    loop.seed_everything(cfg.seed)
    device = select_device(cfg.device)
    ex = compose_examples(cfg, device)
    dims = tuple(int(e.shape[1]) for e in ex.val.embs) if cfg.head.use_embeddings else ()
    head = FusionHead(FusionHeadConfig(kind=cfg.head.kind, hidden=cfg.head.hidden, layers=cfg.head.layers,
                                       dropout=cfg.head.dropout, embed_dims=dims)).to(device)
    run_dir = loop.RunDir(cfg.out_dir)
    if cfg.mode == "export":
        run_dir.load(head)
    else:
        loss_fn, size = torch.nn.CrossEntropyLoss(), cfg.optim.batch_size

        def batches(rng: np.random.Generator):
            train = ex.draw_train(rng)
            order = torch.randperm(len(train.labels))
            return (train.take(order[i:i + size]) for i in range(0, len(order), size))

        def validate() -> loop.Evaluation:
            logits = _logits(head, ex.val_dropped, device)
            r = report(ex.val_dropped.labels.numpy(), logits.argmax(1).cpu().numpy(), LABELS)
            return loop.Evaluation({"loss": float(loss_fn(logits, ex.val_dropped.labels.to(device))),
                                    "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}, r["confusion_matrix"],
                                   title="fusion head (validation, modality dropout)")

        loop.fit(cfg, head, torch.optim.AdamW(head.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay),
                 batches=batches, step=lambda b: loss_fn(_logits(head, b, device), b.labels.to(device)),
                 evaluate=validate, metric="val_macro_f1", rng=np.random.default_rng(cfg.seed + 1000), command=command)
    best, table = run_dir.checkpoint("best"), comparison_table(head, ex.val, device)
    summary = {"best_val_macro_f1": best["best_metric"], "best_epoch": best["epoch"], "table": table,
               **ex.record, "val_examples": len(ex.val.labels), "data_kind": cfg.data.kind}
    (run_dir.path / "comparison.md").write_text(format_table(table) + "\n")
    run_dir.write_json("summary.json", summary)
    log.info("comparison on the validation triples:\n%s", format_table(table))
    training = {"data_kind": cfg.data.kind, "data": to_dict(cfg.data), "seed": cfg.seed,
                **({"neutral_text": ex.neutral_text} if ex.neutral_text else {})}
    loop.finish(cfg, {"table": table, "best_val_macro_f1": best["best_metric"]}, head.cpu(), arch="fusion_head",
                config=head.config, title="late-fusion head", data=to_dict(cfg.data), command=command,
                split="fusion-train / fusion-val of each pool (speaker, dialogue or image block)", **ex.record,
                training=training)
    return summary

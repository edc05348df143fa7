"""Train the late-fusion head: ``train fusion configs/fusion_tiny.yaml`` (``make train CONFIG=...``).

1. Features once: the configured encoders score the training material; outputs are cached in
   shards (pipeline.train.features), so the head trains in seconds to minutes.
2. Examples (``compose_examples``): ``paired_unimodal`` composes (face, audio, text) triples of
   the same label from the unimodal corpora (no corpus here has all three), freshly drawn each
   epoch, with modality dropout so the head learns to work with modalities missing, and (with
   ``data.neutral_speech``) real transcripts of emotionally neutral sentences spoken with emotion
   in place of some triples' text, so that words which say nothing do not outvote the voice. ``manifest``
   uses real labelled multimodal clips (pipeline.corpora.clips), each analysed by the full pipeline.
3. The loop (pipeline.train.loop): best by validation macro F1 on the dropout triples.
4. The comparison table: face / audio / text alone, the confidence-weighted average and the head,
   on the same validation examples, with all modalities and with each one missing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from emotion_pipeline.config import to_dict
from emotion_pipeline.errors import ConfigError
from emotion_pipeline.fuse import average, encoder_record
from emotion_pipeline.labels import LABELS, NUM_LABELS
from emotion_pipeline.metrics import report
from emotion_pipeline.models.fusion_head import MODALITIES, FusionHead, FusionHeadConfig
from emotion_pipeline.preflight import select_device
from emotion_pipeline.records import ModalityScores
from emotion_pipeline.train import loop
from emotion_pipeline.train.features import DataConfig, Pool, build_manifest, build_unimodal, neutral_text_pool
from emotion_pipeline.train.loop import Card, Evaluation, RunConfig, RunDir

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
class FusionConfig(RunConfig):
    task: str = "fusion"
    out_dir: str = "runs/fusion"
    epochs: int = 30
    patience: int = 6
    modality_dropout: float = 0.3   # chance each present modality is hidden in a training example
    data: DataConfig = field(default_factory=DataConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


Config = FusionConfig


@dataclass(frozen=True)
class Batch:
    probs: torch.Tensor              # (N, 3, 7)
    mask: torch.Tensor               # (N, 3)
    embs: tuple[torch.Tensor, ...]   # per modality (N, D_m)
    labels: torch.Tensor             # (N,)

    def take(self, idx) -> "Batch":
        idx = torch.as_tensor(idx)
        return Batch(self.probs[idx], self.mask[idx], tuple(e[idx] for e in self.embs), self.labels[idx])


@dataclass(frozen=True)
class FusionExamples:
    """What the head trains on and is selected on: ``draw_train(rng)`` each epoch, ``val`` (fixed,
    as drawn) for the comparison table, ``val_dropped`` (with modality dropout) picks the best epoch."""
    val: Batch
    val_dropped: Batch
    record: dict                     # pipeline.fuse.encoder_record of the encoders
    dropout: float
    pools: dict[str, Pool] | None = None   # paired_unimodal: triples drawn from these each epoch
    n_train: int = 0
    neutral: Pool | None = None      # neutral-content transcripts that replace some triples' text
    neutral_rate: float = 0.0
    neutral_record: dict | None = None
    clips: Batch | None = None       # manifest: the training clips, dropout redrawn each epoch

    def draw_train(self, rng: np.random.Generator) -> Batch:
        if self.pools is not None:
            return draw_triples(self.pools, self.n_train, rng, self.dropout, self.neutral, self.neutral_rate)
        return apply_dropout(self.clips, rng, self.dropout)


def draw_triples(pools: dict[str, Pool], n: int, rng: np.random.Generator, dropout: float,
                 neutral: Pool | None = None, neutral_rate: float = 0.0) -> Batch:
    """``n`` (face, audio, text) triples with a shared label, balanced over labels, with modality
    dropout; with ``neutral``, each triple's text is replaced with probability ``neutral_rate`` by
    a neutral-content transcript (the label stays: the voice and face still show it)."""
    by_label = {m: [np.flatnonzero(p.labels == k) for k in range(NUM_LABELS)] for m, p in pools.items()}
    usable = [k for k in range(NUM_LABELS) if any(len(by_label[m][k]) for m in MODALITIES)]
    labels = rng.choice(usable, size=n)
    probs = np.zeros((n, len(MODALITIES), NUM_LABELS), np.float32)
    mask = np.zeros((n, len(MODALITIES)), np.float32)
    embs = [np.zeros((n, pools[m].embeddings.shape[1]), np.float32) for m in MODALITIES]
    for j, m in enumerate(MODALITIES):
        for k in usable:
            rows = np.flatnonzero(labels == k)
            if not len(by_label[m][k]) or not len(rows):
                continue
            pick = rng.choice(by_label[m][k], size=len(rows))
            probs[rows, j] = pools[m].probs[pick]
            embs[j][rows] = pools[m].embeddings[pick]
            mask[rows, j] = 1
    if neutral is not None and neutral_rate > 0:
        t = MODALITIES.index("text")
        swap = np.flatnonzero((rng.random(n) < neutral_rate) & (mask[:, t] > 0))
        pick = rng.integers(0, len(neutral.probs), size=len(swap))
        probs[swap, t], embs[t][swap] = neutral.probs[pick], neutral.embeddings[pick]
    batch = Batch(torch.from_numpy(probs), torch.from_numpy(mask), tuple(torch.from_numpy(e) for e in embs),
                  torch.from_numpy(labels.astype(np.int64)))
    return apply_dropout(batch, rng, dropout) if dropout > 0 else batch


def apply_dropout(b: Batch, rng: np.random.Generator, dropout: float) -> Batch:
    """Hide each present modality with probability ``dropout``, never all of an example's."""
    mask = b.mask.numpy().copy()
    drop = (rng.random(mask.shape) < dropout) & (mask > 0)
    drop[(mask * ~drop).sum(1) == 0] = False
    mask[drop] = 0
    return Batch(b.probs, torch.from_numpy(mask), b.embs, b.labels)


def compose_examples(cfg: FusionConfig, device: torch.device) -> FusionExamples:
    """The fusion head's data: paired-unimodal triples or manifest clips (see the module docstring).
    Validation examples are drawn with seeds seed+1 (as drawn) and seed+2 (with dropout)."""
    d = cfg.data
    if d.kind == "paired_unimodal":
        from emotion_pipeline.encoders import load_predictor
        predictors = {m: load_predictor(m, getattr(cfg.encoders, f"{m}_model"), device=device, offline=True)
                      for m in MODALITIES}
        pools, folder = build_unimodal(d, cfg.seed, predictors, progress=cfg.progress)
        log.info("features: %s", folder)
        neutral, made = (neutral_text_pool(d, predictors["text"], progress=cfg.progress)
                         if d.neutral_speech and d.neutral_text_rate > 0 else (None, None))
        val_pools = {m: p.subset(True) for m, p in pools.items()}
        # the best epoch is picked on triples drawn as the training ones are (dropout, neutral text)
        return FusionExamples(
            val=draw_triples(val_pools, d.val_examples, np.random.default_rng(cfg.seed + 1), 0.0),
            val_dropped=draw_triples(val_pools, d.val_examples, np.random.default_rng(cfg.seed + 2), cfg.modality_dropout,
                                     neutral, d.neutral_text_rate),
            record=encoder_record({m: p.describe() for m, p in predictors.items()}), dropout=cfg.modality_dropout,
            pools={m: p.subset(False) for m, p in pools.items()}, n_train=d.train_examples,
            neutral=neutral, neutral_rate=d.neutral_text_rate, neutral_record=made)
    if d.kind == "manifest":
        from emotion_pipeline.analyze import Analyzer
        from emotion_pipeline.config import AnalyzeConfig
        from emotion_pipeline.corpora.clips import read_clips
        if not d.manifest:
            raise ConfigError("data.manifest: a manifest CSV or clip folder is needed for kind=manifest")
        analyzer = Analyzer(AnalyzeConfig(face_model=cfg.encoders.face_model, audio_model=cfg.encoders.audio_model,
                                          text_model=cfg.encoders.text_model, fusion="average", smoothing_window_s=1,
                                          progress=False, device=str(device)))
        f = build_manifest(read_clips(d.manifest, d.adapter), analyzer, d, cfg.seed, progress=cfg.progress)
        if f.is_val.all() or not f.is_val.any():
            raise ConfigError(f"{d.manifest}: the split left no training or no validation clips "
                              f"(set a split column, data.val_speakers or data.val_fraction)")
        every = Batch(torch.from_numpy(f.probs), torch.from_numpy(f.mask), tuple(torch.from_numpy(e) for e in f.embeddings),
                      torch.from_numpy(f.labels))
        val = every.take(np.flatnonzero(f.is_val))
        return FusionExamples(val=val, val_dropped=apply_dropout(val, np.random.default_rng(cfg.seed + 2), cfg.modality_dropout),
                              record=encoder_record({m: analyzer.models[m] for m in MODALITIES}),
                              dropout=cfg.modality_dropout, clips=every.take(np.flatnonzero(~f.is_val)))
    raise ConfigError(f"data.kind must be paired_unimodal or manifest, not {d.kind!r}")


def _logits(head: FusionHead, b: Batch, device: torch.device) -> torch.Tensor:
    embs = [e.to(device) for e in b.embs] if head.config.embed_dims else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return head(b.probs.to(device), b.mask.to(device), embs).float()


def comparison_table(head: FusionHead, val: Batch, device: torch.device) -> dict[str, dict[str, dict]]:
    """Accuracy and macro F1 of each single modality, the average and the head, per condition."""
    head.eval()
    y = val.labels.numpy()
    table: dict[str, dict[str, dict]] = {}
    for cond, hidden in {"all": None, "no_face": 0, "no_audio": 1, "no_text": 2}.items():
        mask = val.mask.clone()
        if hidden is not None:
            mask[:, hidden] = 0
        keep = (mask.sum(1) > 0).numpy()
        with torch.no_grad():
            head_pred = _logits(head, Batch(val.probs, mask, val.embs, val.labels), device).argmax(1).cpu().numpy()
        rows = {}
        for j, m in enumerate(MODALITIES):
            present = (mask[:, j] > 0).numpy()
            rows[m] = _score(y[present], val.probs[present, j].argmax(1).numpy()) if present.any() else None
        avg_pred = [int(np.argmax(average([ModalityScores(val.probs[i, j].numpy()) if mask[i, j] > 0 else None
                                           for j in range(3)], (1.0, 1.0, 1.0)).probs)) for i in np.flatnonzero(keep)]
        rows["average"] = _score(y[keep], np.array(avg_pred))
        rows["head"] = _score(y[keep], head_pred[keep])
        table[cond] = rows
    return table


def _score(y: np.ndarray, pred: np.ndarray) -> dict:
    r = report(y, pred, LABELS)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": len(y)}


def format_table(table: dict[str, dict[str, dict]]) -> str:
    cols = ["face", "audio", "text", "average", "head"]
    lines = ["| condition | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for cond, rows in table.items():
        cells = ["-" if rows[c] is None else f"{rows[c]['accuracy']:.3f} / {rows[c]['macro_f1']:.3f}" for c in cols]
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
    if cfg.mode == "export":
        loop.load_weights(head, RunDir(cfg.out_dir).checkpoint("best")["model"], cfg.out_dir)
    else:
        loss_fn = torch.nn.CrossEntropyLoss()

        def batches(rng):
            train = ex.draw_train(rng)
            order = torch.randperm(len(train.labels))
            return (train.take(order[i:i + cfg.optim.batch_size]) for i in range(0, len(order), cfg.optim.batch_size))

        def validate() -> Evaluation:
            logits = _logits(head, ex.val_dropped, device)
            r = report(ex.val_dropped.labels.numpy(), logits.argmax(1).cpu().numpy(), LABELS)
            return Evaluation({"loss": float(loss_fn(logits, ex.val_dropped.labels.to(device))),
                               "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}, r["confusion_matrix"],
                              title="fusion head (validation, modality dropout)")

        loop.fit(cfg, head, torch.optim.AdamW(head.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay),
                 batches=batches, step=lambda b: loss_fn(_logits(head, b, device), b.labels.to(device)),
                 evaluate=validate, metric="val_macro_f1", rng=np.random.default_rng(cfg.seed + 1000), command=command)
    run_dir = RunDir(cfg.out_dir)
    best = run_dir.checkpoint("best")
    table = comparison_table(head, ex.val, device)
    summary = {"best_val_macro_f1": best["best_metric"], "best_epoch": best["epoch"], "table": table,
               **ex.record, "val_examples": len(ex.val.labels), "data_kind": cfg.data.kind}
    (run_dir.path / "comparison.md").write_text(format_table(table) + "\n")
    run_dir.write_json("summary.json", summary)
    log.info("comparison on the validation triples:\n%s", format_table(table))
    if cfg.export:
        card = Card("late-fusion head", data=to_dict(cfg.data),
                    split="fusion-train / fusion-val of each pool (speaker, dialogue or image block)",
                    metrics={"table": table, "best_val_macro_f1": summary["best_val_macro_f1"]},
                    command=run_dir.read_json("config.json").get("command") or command,
                    extra={**ex.record, "training": {"data_kind": cfg.data.kind, "data": to_dict(cfg.data), "seed": cfg.seed,
                                                     **({"neutral_text": ex.neutral_record} if ex.neutral_record else {})}})
        loop.export(cfg.export, head.cpu(), arch="fusion_head", config=head.config, card=card, version=cfg.version or "1")
    return summary

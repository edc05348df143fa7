"""Train the late-fusion head: ``python -m emotion_pipeline train configs/fusion_tiny.yaml [--resume] [-s key=value]``.

1. Features once: the configured encoders score the training material; outputs are cached in
   shards (pipeline.features), so the head trains in seconds to minutes.
2. Examples: ``paired_unimodal`` composes (face, audio, text) triples of the same label from the
   unimodal corpora (no corpus here has all three), freshly drawn each epoch, with modality
   dropout so the head learns to work with modalities missing. ``manifest`` uses real labelled
   multimodal clips (pipeline.train.manifests), each analysed by the full pipeline.
3. Loop: checkpoint every epoch, resume, best by validation macro F1, early stopping, metrics
   as JSON lines, curves and confusion matrix, the resolved config beside them.
4. The comparison table: face / audio / text alone, the confidence-weighted average and the head,
   on the same validation examples, with all modalities and with each one missing.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from emotion_pipeline.models import registry, weights_io
from emotion_pipeline.models.fusion_head import MODALITIES, FusionHead, FusionHeadConfig
from emotion_pipeline import config as config_mod
from emotion_pipeline.features import Pool, build_unimodal
from emotion_pipeline.fuse import average, encoder_record
from emotion_pipeline.labels import LABELS, NUM_LABELS
from emotion_pipeline.metrics import report
from emotion_pipeline.records import ModalityScores
from emotion_pipeline.preflight import select_device
from emotion_pipeline.train.common import RunDir, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    kind: str = "paired_unimodal"   # paired_unimodal | manifest
    # paired_unimodal pools, paths relative to $EMOTION_DATA_DIR. Each is the encoder's own
    # validation split, so its scores are out-of-sample (training-set scores are overconfident).
    face_npz: str = "faces/fer2013/fer2013_publictest_3589.npz"
    # face labels: "fer2013" = the npz's own labels; "ferplus" = the FER+ crowd majority label
    # (pipeline.corpora.FerPlusVotes.majority) from the ferplus_votes_<split>.npz beside it,
    # faces without a majority left out (what face-cnn >= 2.0.0 is trained and selected on)
    face_labels: str = "fer2013"
    audio_dirs: tuple[str, ...] = ("speech/ravdess/Actor_17", "speech/ravdess/Actor_18",
                                   "speech/ravdess/Actor_19", "speech/ravdess/Actor_20")
    audio_val_groups: tuple[str, ...] = ("actor19", "actor20")   # speakers held out for validation
    text_csv: str = "text/meld/dev_sent_emo.csv"
    val_fraction: float = 0.5       # face images / text dialogues held out for validation
    max_per_modality: int = 0       # 0 = all; the tiny config uses a few hundred
    train_examples: int = 8000      # paired triples drawn per epoch
    val_examples: int = 3000        # fixed (seeded) validation triples
    # manifest of real multimodal clips
    manifest: str | None = None
    adapter: str = "csv"            # csv | ravdess | mead | meld
    val_speakers: tuple[str, ...] = ()
    cache_dir: str = "runs/features"


@dataclass(frozen=True)
class EncodersConfig:
    face_model: str = "face-cnn"
    audio_model: str = "audio-cnn"
    text_model: str = "text-minilm"


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "pooled"            # pooled (calibrated average, few parameters) | mlp
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.2
    use_embeddings: bool = False    # scores only: the head then depends on calibration, not feature spaces


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    epochs: int = 30
    patience: int = 6               # epochs without a better validation macro F1 before stopping


@dataclass(frozen=True)
class FusionTrainConfig:
    name: str = "fusion"
    out_dir: str = "runs/fusion"
    seed: int = 0
    device: str = "auto"            # auto: CUDA when present (bf16 autocast there)
    modality_dropout: float = 0.3   # chance each present modality is hidden in a training example
    resume: bool = False
    export: str | None = None       # write the best head here as safetensors (+ record its checksum if shipped)
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class Batch:
    probs: torch.Tensor    # (N, 3, 7)
    mask: torch.Tensor     # (N, 3)
    embs: list[torch.Tensor]
    labels: torch.Tensor   # (N,)


def draw_triples(pools: dict[str, Pool], n: int, rng: np.random.Generator, dropout: float) -> Batch:
    """``n`` (face, audio, text) triples with a shared label, balanced over labels, with modality dropout."""
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
    batch = Batch(torch.from_numpy(probs), torch.from_numpy(mask), [torch.from_numpy(e) for e in embs],
                  torch.from_numpy(labels.astype(np.int64)))
    return apply_dropout(batch, rng, dropout) if dropout > 0 else batch


def _head(cfg: FusionTrainConfig, embed_dims: list[int]) -> FusionHead:
    dims = tuple(int(d) for d in embed_dims) if cfg.head.use_embeddings else ()
    return FusionHead(FusionHeadConfig(kind=cfg.head.kind, hidden=cfg.head.hidden, layers=cfg.head.layers,
                                       dropout=cfg.head.dropout, embed_dims=dims))


def _logits(head: FusionHead, b: Batch, device: torch.device) -> torch.Tensor:
    embs = [e.to(device) for e in b.embs] if head.config.embed_dims else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return head(b.probs.to(device), b.mask.to(device), embs).float()


def comparison_table(head: FusionHead, val: Batch, device: torch.device) -> dict[str, dict[str, dict]]:
    """Accuracy and macro F1 of each single modality, the average and the head, per condition."""
    conditions = {"all": None, "no_face": 0, "no_audio": 1, "no_text": 2}
    head.eval()
    y = val.labels.numpy()
    table: dict[str, dict[str, dict]] = {}
    for cond, hidden in conditions.items():
        mask = val.mask.clone()
        if hidden is not None:
            mask[:, hidden] = 0
        keep = (mask.sum(1) > 0).numpy()
        b = Batch(val.probs, mask, val.embs, val.labels)
        with torch.no_grad():
            head_pred = _logits(head, b, device).argmax(1).cpu().numpy()
        rows = {}
        for j, m in enumerate(MODALITIES):
            present = (mask[:, j] > 0).numpy()
            if present.any():
                r = report(y[present], val.probs[present, j].argmax(1).numpy(), LABELS)
                rows[m] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": int(present.sum())}
            else:
                rows[m] = None
        avg_pred = []
        for i in np.flatnonzero(keep):
            entries = [ModalityScores(val.probs[i, j].numpy()) if mask[i, j] > 0 else None for j in range(3)]
            avg_pred.append(int(np.argmax(average(entries, (1.0, 1.0, 1.0)).probs)))
        r = report(y[keep], np.array(avg_pred), LABELS)
        rows["average"] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": int(keep.sum())}
        r = report(y[keep], head_pred[keep], LABELS)
        rows["head"] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": int(keep.sum())}
        table[cond] = rows
    return table


def format_table(table: dict[str, dict[str, dict]]) -> str:
    cols = ["face", "audio", "text", "average", "head"]
    lines = ["| condition | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for cond, rows in table.items():
        cells = ["-" if rows[c] is None else f"{rows[c]['accuracy']:.3f} / {rows[c]['macro_f1']:.3f}" for c in cols]
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(accuracy / macro F1 on the validation triples)"


def apply_dropout(b: Batch, rng: np.random.Generator, dropout: float) -> Batch:
    """Hide each present modality with probability ``dropout``, never all of an example's."""
    mask = b.mask.numpy().copy()
    drop = (rng.random(mask.shape) < dropout) & (mask > 0)
    drop[(mask * ~drop).sum(1) == 0] = False
    mask[drop] = 0
    return Batch(b.probs, torch.from_numpy(mask), b.embs, b.labels)


def _take(b: Batch, idx: np.ndarray) -> Batch:
    t = torch.from_numpy(idx)
    return Batch(b.probs[t], b.mask[t], [e[t] for e in b.embs], b.labels[t])


def examples(cfg: FusionTrainConfig, device: torch.device):
    """(draw_train(rng) -> Batch, val Batch without dropout, val Batch with dropout,
    pipeline.fuse.encoder_record of the encoders)."""
    from emotion_pipeline.encoders import load_predictor
    spec = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in ("train_examples", "val_examples", "cache_dir")}
    spec["seed"] = cfg.seed
    if cfg.data.kind == "paired_unimodal":
        predictors = {m: load_predictor(m, getattr(cfg.encoders, f"{m}_model"), device=device, offline=True)
                      for m in MODALITIES}
        record = encoder_record({m: p.describe() for m, p in predictors.items()})
        pools, folder = build_unimodal(spec, predictors, Path(cfg.data.cache_dir), progress=cfg.progress)
        log.info("features: %s", folder)
        train_pools = {m: p.subset(False) for m, p in pools.items()}
        val_pools = {m: p.subset(True) for m, p in pools.items()}
        val = draw_triples(val_pools, cfg.data.val_examples, np.random.default_rng(cfg.seed + 1), 0.0)
        val_dropped = draw_triples(val_pools, cfg.data.val_examples, np.random.default_rng(cfg.seed + 2), cfg.modality_dropout)
        return (lambda rng: draw_triples(train_pools, cfg.data.train_examples, rng, cfg.modality_dropout)), val, val_dropped, record
    if cfg.data.kind == "manifest":
        from emotion_pipeline.analyze import Analyzer
        from emotion_pipeline.config import AnalyzeConfig
        from emotion_pipeline.features import build_manifest
        from emotion_pipeline.train.manifests import read_clips
        if not cfg.data.manifest:
            raise config_mod.ConfigError("data.manifest: a manifest CSV or clip folder is needed for kind=manifest")
        clips = read_clips(cfg.data.manifest, cfg.data.adapter)
        analyzer = Analyzer(AnalyzeConfig(face_model=cfg.encoders.face_model, audio_model=cfg.encoders.audio_model,
                                          text_model=cfg.encoders.text_model, fusion="average", smoothing_window_s=1,
                                          progress=False, device=str(device)))
        record = encoder_record({m: analyzer.models[m] for m in MODALITIES})
        probs, mask, embs, labels, is_val = build_manifest(clips, analyzer, spec, Path(cfg.data.cache_dir), progress=cfg.progress)
        allb = Batch(torch.from_numpy(probs), torch.from_numpy(mask), [torch.from_numpy(e) for e in embs], torch.from_numpy(labels))
        if is_val.all() or not is_val.any():
            raise config_mod.ConfigError(f"{cfg.data.manifest}: the split left no training or no validation clips "
                                         f"(set a split column, data.val_speakers or data.val_fraction)")
        train_b, val = _take(allb, np.flatnonzero(~is_val)), _take(allb, np.flatnonzero(is_val))
        val_dropped = apply_dropout(val, np.random.default_rng(cfg.seed + 2), cfg.modality_dropout)
        return (lambda rng: apply_dropout(train_b, rng, cfg.modality_dropout)), val, val_dropped, record
    raise config_mod.ConfigError(f"data.kind must be paired_unimodal or manifest, not {cfg.data.kind!r}")


def train(cfg: FusionTrainConfig) -> dict:
    """Train, keep the best head, write the comparison table; returns the run summary."""
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    run = RunDir(cfg.out_dir, cfg)
    draw_train, val, val_dropped, record = examples(cfg, device)

    head = _head(cfg, [e.shape[1] for e in val.embs]).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    start_epoch, best, since_best = 1, -1.0, 0
    ckpt = run.load_checkpoint("last") if cfg.resume else None
    if ckpt is not None:
        head.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["optimizer"])
        start_epoch, best = int(ckpt["epoch"]) + 1, float(ckpt["best_metric"])
        since_best = int(start_epoch - 1 - max([h["epoch"] for h in run.history() if h.get("is_best")] or [0]))
        log.info("resumed from %s at epoch %d (best macro F1 %.4f)", run.last, start_epoch - 1, best)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(cfg.seed + 1000 * start_epoch)
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        t0 = time.perf_counter()
        head.train()
        tr = draw_train(rng)
        order = torch.randperm(len(tr.labels))
        total = 0.0
        bar = tqdm(range(0, len(order), cfg.optim.batch_size), desc=f"epoch {epoch}", leave=False, disable=not cfg.progress)
        for i in bar:
            idx = order[i:i + cfg.optim.batch_size]
            b = Batch(tr.probs[idx], tr.mask[idx], [e[idx] for e in tr.embs], tr.labels[idx])
            loss = loss_fn(_logits(head, b, device), b.labels.to(device))
            opt.zero_grad(); loss.backward(); opt.step()
            total += loss.item() * len(idx)
        head.eval()
        with torch.no_grad():
            vlogits = _logits(head, val_dropped, device)
            vloss = float(loss_fn(vlogits, val_dropped.labels.to(device)))
        r = report(val_dropped.labels.numpy(), vlogits.argmax(1).cpu().numpy(), LABELS)
        is_best = r["macro_f1"] > best
        best = max(best, r["macro_f1"])
        since_best = 0 if is_best else since_best + 1
        run.log_epoch({"epoch": epoch, "train_loss": total / len(order), "val_loss": vloss,
                       "val_accuracy": r["accuracy"], "val_macro_f1": r["macro_f1"], "is_best": is_best,
                       "seconds": round(time.perf_counter() - t0, 3), "device": device.type})
        run.save_checkpoint(model=head, optimizer=opt, epoch=epoch, best_metric=best, config=cfg, is_best=is_best)
        if since_best >= cfg.optim.patience:
            log.info("early stop: no better validation macro F1 for %d epochs", since_best)
            break

    best_state = run.load_checkpoint("best")
    head.load_state_dict(best_state["model"])
    table = comparison_table(head, val, device)
    with torch.no_grad():
        vr = report(val_dropped.labels.numpy(), _logits(head, val_dropped, device).argmax(1).cpu().numpy(), LABELS)
    run.save_figures(vr["confusion_matrix"], list(LABELS), title="fusion head (validation, modality dropout)",
                     curve_keys=("train_loss", "val_loss", "val_macro_f1"))
    summary = {"best_val_macro_f1": best, "best_epoch": int(best_state["epoch"]), "table": table,
               **record, "val_examples": cfg.data.val_examples, "data_kind": cfg.data.kind}
    (run.path / "comparison.md").write_text(format_table(table) + "\n")
    (run.path / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("comparison on the validation triples:\n%s", format_table(table))
    if cfg.export:
        export(head, cfg, summary)
    return summary


def export(head: FusionHead, cfg: FusionTrainConfig, summary: dict) -> str:
    path = Path(cfg.export)
    digest = weights_io.save(path, head.cpu(), arch="fusion_head", config=head.config, extra={
        "encoders": summary["encoders"], "encoder_settings": summary["encoder_settings"], "version": "1",
        "training": {"data_kind": cfg.data.kind, "data": config_mod.to_dict(cfg.data), "seed": cfg.seed},
        "metrics": {"table": summary["table"], "best_val_macro_f1": summary["best_val_macro_f1"]}})
    if path.resolve().parent == registry.WEIGHTS_DIR.resolve():
        registry.record_checksum(path)
    log.info("exported %s (sha256 %s)", path, digest[:16])
    return digest


def main_from_cli(config_path: str, overrides: list[str], *, resume: bool = False) -> dict:
    cfg = config_mod.load(FusionTrainConfig, config_path, list(overrides) + (["resume=true"] if resume else []))
    return train(cfg)

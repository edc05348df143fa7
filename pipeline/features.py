"""Encoder outputs computed once and cached on disk, for training the fusion head.

Each modality's pool of labelled examples is run through the configured encoder (the same
``Predictor`` the pipeline uses) and stored as ``.npz`` shards (no pickle) with a ``meta.json``
that records the encoders' identities (SHA-256), the sources and the counts. A cache whose
encoders or sources differ from the config's is rebuilt, never reused.

Pools (each example: probs (7,), embedding (D,), label index, group, split):
- face: FER2013-format .npz images (the face model's validation split, PublicTest, so scores
  are out-of-sample), split into fusion-train/val by a seeded hash of the index;
- audio: RAVDESS / TESS clips, scored on 3 s windows and averaged, split by speaker;
- text: MELD-format CSV utterances, split by dialogue;
- clips: a manifest of real multimodal clips, each analysed by the full pipeline (see
  ``pipeline.train.manifests``), one example per clip with all three modalities (some missing).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from emotion_pipeline.data import data_dir
from emotion_pipeline.fileio import atomic_write, atomic_write_text
from emotion_pipeline.corpora import speech_items
from emotion_pipeline.labels import LABEL_INDEX

log = logging.getLogger(__name__)

SHARD_SIZE = 2000


@dataclass(frozen=True)
class Pool:
    """One modality's cached examples."""
    probs: np.ndarray       # (N, 7) float32
    embeddings: np.ndarray  # (N, D) float32
    labels: np.ndarray      # (N,) int64 over LABELS
    groups: np.ndarray      # (N,) str: speaker / dialogue / index bucket
    is_val: np.ndarray      # (N,) bool

    def subset(self, val: bool) -> "Pool":
        m = self.is_val == val
        return Pool(self.probs[m], self.embeddings[m], self.labels[m], self.groups[m], self.is_val[m])

    def __len__(self) -> int:
        return len(self.labels)


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else data_dir() / p


def _hash_split(key: str, val_fraction: float, seed: int) -> bool:
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return (h / 0xFFFFFFFF) < val_fraction


def face_examples(npz: str, val_fraction: float, seed: int, limit: int, label_source: str = "fer2013"):
    """FER2013-format faces with their labels: the file's own ("fer2013") or the FER+ crowd
    majority from the vote file beside it ("ferplus"; faces without a majority are left out).
    Groups (buckets of 50 rows) are over the file's row numbers either way."""
    from emotion_pipeline.corpora import fer_faces, ferplus_votes, ferplus_votes_path  # one format, one reader
    path = _resolve(npz)
    faces = fer_faces(path)
    if label_source == "ferplus":
        vote_file = ferplus_votes_path(path)
        if vote_file is None:
            raise ValueError(f"{path}: face_labels=ferplus needs ferplus_votes_<split>.npz beside it")
        labels = ferplus_votes(vote_file, filenames=faces.filenames, n_rows=len(faces.labels)).majority()
    elif label_source == "fer2013":
        labels = faces.labels
    else:
        raise ValueError(f"face_labels must be fer2013 or ferplus, got {label_source!r}")
    idx = np.flatnonzero(labels >= 0)
    images = faces.images
    if limit:
        idx = np.random.default_rng(seed).permutation(idx)[:limit]
    groups = np.array([f"img{i // 50}" for i in idx])  # buckets of 50 consecutive images
    return images[idx], labels[idx], groups, np.array([_hash_split(g, val_fraction, seed) for g in groups])


def audio_examples(dirs: tuple[str, ...], val_groups: tuple[str, ...], seed: int, limit: int):
    items = [it for d in dirs for it in speech_items(_resolve(d))]
    if limit:
        order = np.random.default_rng(seed).permutation(len(items))[:limit]
        items = [items[i] for i in sorted(order)]
    groups = np.array([it.speaker for it in items])
    return ([it.path for it in items], np.array([LABEL_INDEX[it.label] for it in items], dtype=np.int64), groups,
            np.array([any(v in g for v in val_groups) for g in groups]))


def text_examples(path: str, val_fraction: float, seed: int, limit: int):
    from emotion_pipeline.evaluate.text import read_grouped  # the evaluation command's reader
    texts, labels, groups, _ = read_grouped(_resolve(path))
    idx = np.arange(len(texts))
    if limit:
        idx = np.sort(np.random.default_rng(seed).permutation(idx)[:limit])
    groups_a = np.array([groups[i] for i in idx])
    return ([texts[i] for i in idx], np.array(labels, dtype=np.int64)[idx], groups_a,
            np.array([_hash_split(g, val_fraction, seed) for g in groups_a]))


def clip_audio_scores(predictor, wave: np.ndarray, window_s: float, sample_rate_hz: int = 16000):
    """Mean of window probabilities/embeddings over a clip (windows of window_s, hop 1 s; a clip
    shorter than a window is scored whole, never zero-padded), as pipeline.audio_windows does."""
    from emotion_pipeline.audio_windows import window_starts
    win = int(window_s * sample_rate_hz)
    starts = window_starts(len(wave), win, sample_rate_hz)
    probs, embs = predictor.predict(np.stack([wave[s:s + win] for s in starts]))
    return probs.mean(0), embs.mean(0)


def _save_pool(folder: Path, name: str, pool: Pool) -> None:
    for k, start in enumerate(range(0, max(len(pool), 1), SHARD_SIZE)):
        sl = slice(start, start + SHARD_SIZE)
        atomic_write(folder / f"{name}-{k:03d}.npz", lambda tmp, sl=sl: np.savez(
            open(tmp, "wb"), probs=pool.probs[sl], embeddings=pool.embeddings[sl], labels=pool.labels[sl],
            groups=pool.groups[sl].astype("U64"), is_val=pool.is_val[sl]))


def _load_pool(folder: Path, name: str) -> Pool | None:
    shards = sorted(folder.glob(f"{name}-*.npz"))
    if not shards:
        return None
    parts = [np.load(s, allow_pickle=False) for s in shards]
    cat = lambda key: np.concatenate([p[key] for p in parts])  # noqa: E731
    return Pool(cat("probs").astype(np.float32), cat("embeddings").astype(np.float32), cat("labels"),
                cat("groups"), cat("is_val").astype(bool))


def cache_key(spec: dict[str, Any], encoders: dict[str, Any]) -> str:
    blob = json.dumps({"spec": spec, "encoders": encoders}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_unimodal(spec: dict[str, Any], predictors: dict[str, Any], cache_root: Path,
                   *, progress: bool = True) -> tuple[dict[str, Pool], Path]:
    """Pools for face/audio/text from the unimodal corpora in ``spec``, cached under cache_root/<key>."""
    encoders = {m: p.describe() for m, p in predictors.items()}
    folder = Path(cache_root) / cache_key(spec, encoders)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        pools = {m: _load_pool(folder, m) for m in ("face", "audio", "text")}
        if all(p is not None for p in pools.values()):
            log.info("feature cache hit: %s", folder)
            return pools, folder
    folder.mkdir(parents=True, exist_ok=True)
    seed, limit = spec["seed"], spec["max_per_modality"]
    pools: dict[str, Pool] = {}

    images, labels, groups, is_val = face_examples(spec["face_npz"], spec["val_fraction"], seed, limit,
                                                   spec.get("face_labels", "fer2013"))
    probs, embs = [], []
    for i in tqdm(range(0, len(images), 256), desc="features: face", disable=not progress):
        p, e = predictors["face"].predict(images[i:i + 256])
        probs.append(p); embs.append(e)
    pools["face"] = Pool(np.concatenate(probs), np.concatenate(embs), labels, groups, is_val)

    from emotion_pipeline.audio_windows import load_audio_file
    from emotion_pipeline.encoders import audio_window_s
    paths, labels, groups, is_val = audio_examples(tuple(spec["audio_dirs"]), tuple(spec["audio_val_groups"]), seed, limit)
    window_s = audio_window_s(predictors["audio"])
    probs, embs = [], []
    for path in tqdm(paths, desc="features: audio", disable=not progress):
        p, e = clip_audio_scores(predictors["audio"], load_audio_file(path), window_s)
        probs.append(p); embs.append(e)
    pools["audio"] = Pool(np.stack(probs).astype(np.float32), np.stack(embs).astype(np.float32), labels, groups, is_val)

    texts, labels, groups, is_val = text_examples(spec["text_csv"], spec["val_fraction"], seed, limit)
    p, e = predictors["text"].predict(texts)
    pools["text"] = Pool(p.astype(np.float32), e.astype(np.float32), labels, groups, is_val)

    for name, pool in pools.items():
        _save_pool(folder, name, pool)
    atomic_write_text(meta_path, json.dumps({
        "encoders": encoders, "spec": spec,
        "counts": {m: {"train": int((~p.is_val).sum()), "val": int(p.is_val.sum())} for m, p in pools.items()}},
        indent=2, default=str))
    return pools, folder


def _clip_is_val(clip, val_speakers: tuple[str, ...], val_fraction: float, seed: int) -> bool:
    if clip.split:
        return clip.split.lower() in ("val", "valid", "validation", "dev")
    if clip.speaker and val_speakers:
        return clip.speaker in val_speakers
    return _hash_split(clip.speaker or str(clip.path), val_fraction, seed)


def build_manifest(clips: list, analyzer, spec: dict[str, Any], cache_root: Path, *, progress: bool = True):
    """One example per labelled clip, analysed by the full pipeline: clip-level mean of each
    modality's per-second scores (a modality missing in every second stays masked).

    Returns (probs (N,3,7), mask (N,3), [emb (N,D_m)] x 3, labels (N,), is_val (N,)), cached."""
    encoders = {m: analyzer.models[m] for m in ("face", "audio", "text")}
    folder = Path(cache_root) / cache_key(spec, encoders)
    cached = sorted(folder.glob("clips-*.npz"))
    if (folder / "meta.json").exists() and cached:
        parts = [np.load(p, allow_pickle=False) for p in cached]
        cat = lambda k: np.concatenate([p[k] for p in parts])  # noqa: E731
        return (cat("probs"), cat("mask"), [cat(f"emb{j}") for j in range(3)], cat("labels"), cat("is_val").astype(bool))
    rows = []
    failed = 0
    for clip in tqdm(clips, desc="features: clips", disable=not progress):
        try:
            res = analyzer.run(clip.path)
        except Exception as e:  # one unreadable clip must not stop feature extraction
            failed += 1
            log.warning("skipped %s: %s", clip.path, e)
            continue
        per_mod = []
        for name in ("face", "audio", "text"):
            entries = [getattr(e, name) for e in res.entries if getattr(e, name) is not None]
            if entries:
                emb = [e.embedding for e in entries if e.embedding is not None]
                per_mod.append((np.mean([e.probs for e in entries], 0), np.mean(emb, 0) if emb else None))
            else:
                per_mod.append(None)
        rows.append((per_mod, LABEL_INDEX[clip.label],
                     _clip_is_val(clip, tuple(spec["val_speakers"]), spec["val_fraction"], spec["seed"])))
    if not rows:
        raise ValueError(f"no clip of the manifest could be analysed ({failed} failed)")
    n = len(rows)
    dims = [next((len(r[0][j][1]) for r in rows if r[0][j] is not None and r[0][j][1] is not None), 1) for j in range(3)]
    probs = np.zeros((n, 3, len(LABEL_INDEX)), np.float32)
    mask = np.zeros((n, 3), np.float32)
    embs = [np.zeros((n, d), np.float32) for d in dims]
    for i, (per_mod, _, _) in enumerate(rows):
        for j, item in enumerate(per_mod):
            if item is not None:
                probs[i, j], mask[i, j] = item[0], 1
                if item[1] is not None:
                    embs[j][i] = item[1]
    labels = np.array([r[1] for r in rows], np.int64)
    is_val = np.array([r[2] for r in rows], bool)
    folder.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, n, SHARD_SIZE)):
        sl = slice(start, start + SHARD_SIZE)
        atomic_write(folder / f"clips-{k:03d}.npz", lambda tmp, sl=sl: np.savez(
            open(tmp, "wb"), probs=probs[sl], mask=mask[sl], emb0=embs[0][sl], emb1=embs[1][sl], emb2=embs[2][sl],
            labels=labels[sl], is_val=is_val[sl]))
    atomic_write_text(folder / "meta.json", json.dumps({"encoders": encoders, "spec": spec, "clips": n,
                                                         "failed": failed, "val": int(is_val.sum())}, indent=2, default=str))
    return probs, mask, embs, labels, is_val

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
  ``pipeline.corpora.clips``), one example per clip with all three modalities (some missing).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from emotion_pipeline.corpora.speech import speech_files, speech_items
from emotion_pipeline.data import data_dir
from emotion_pipeline.errors import ConfigError, InputError, bad_file
from emotion_pipeline.fileio import atomic_write, atomic_write_text
from emotion_pipeline.labels import LABEL_INDEX

log = logging.getLogger(__name__)

SHARD_SIZE = 2000


@dataclass(frozen=True)
class DataConfig:
    """The fusion config's ``data:`` section: which examples the head trains and is selected on."""
    kind: str = "paired_unimodal"   # paired_unimodal | manifest
    # paired_unimodal pools, paths relative to $EMOTION_DATA_DIR. Each is the encoder's own
    # validation split, so its scores are out-of-sample (training-set scores are overconfident).
    face_npz: str = "faces/fer2013/fer2013_publictest_3589.npz"
    # face labels: "fer2013" = the npz's own labels; "ferplus" = the FER+ crowd majority label
    # (FerPlusVotes.majority) from the ferplus_votes_<split>.npz beside it, faces without one left out
    face_labels: str = "fer2013"
    audio_dirs: tuple[str, ...] = ("speech/ravdess/Actor_17", "speech/ravdess/Actor_18",
                                   "speech/ravdess/Actor_19", "speech/ravdess/Actor_20")
    audio_val_groups: tuple[str, ...] = ("actor19", "actor20")   # speakers held out for validation
    text_csv: str = "text/meld/dev_sent_emo.csv"
    val_fraction: float = 0.5       # face images / text dialogues held out for validation
    max_per_modality: int = 0       # 0 = all; the tiny config uses a few hundred
    train_examples: int = 8000      # paired triples drawn per epoch
    val_examples: int = 3000        # fixed (seeded) validation triples
    # manifest of real multimodal clips (pipeline.corpora.clips)
    manifest: str | None = None
    adapter: str = "csv"            # csv | ravdess | mead | meld
    val_speakers: tuple[str, ...] = ()
    cache_dir: str = "runs/features"
    # Neutral-content speech: a folder of clips (relative to $EMOTION_DATA_DIR) whose words carry no
    # emotion although the voice does (TESS: "Say the word ..." in seven emotions). They are
    # transcribed by the packaged ASR and scored by the text encoder; with probability
    # neutral_text_rate a triple's text is replaced by one of these real transcripts, label kept,
    # so the head learns what words that say nothing look like (most spoken sentences).
    neutral_speech: str | None = None
    neutral_text_rate: float = 0.0

    def spec(self, seed: int) -> dict[str, Any]:
        """What the cached unimodal pools depend on (their cache key), with the run's seed."""
        return {**{k: v for k, v in dataclasses.asdict(self).items()
                   if k not in ("train_examples", "val_examples", "cache_dir", "neutral_speech", "neutral_text_rate")},
                "seed": seed}


@dataclass(frozen=True)
class ClipFeatures:
    """One example per analysed clip: each modality's clip-level mean scores (masked when absent)."""
    probs: np.ndarray              # (N, 3, 7)
    mask: np.ndarray               # (N, 3)
    embeddings: tuple[np.ndarray, ...]   # per modality (N, D_m)
    labels: np.ndarray             # (N,)
    is_val: np.ndarray             # (N,) bool


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
    from emotion_pipeline.corpora.faces import fer_faces, ferplus_votes, ferplus_votes_path
    path = _resolve(npz)
    faces = fer_faces(path)
    if label_source not in ("fer2013", "ferplus"):
        raise ConfigError(f"data.face_labels: must be fer2013 or ferplus, got {label_source!r}")
    labels = faces.labels
    if label_source == "ferplus":
        if (vote_file := ferplus_votes_path(path)) is None:
            raise bad_file(path, "face_labels=ferplus needs ferplus_votes_<split>.npz beside it")
        labels = ferplus_votes(vote_file, filenames=faces.filenames, n_rows=len(faces.labels)).majority()
    idx = np.flatnonzero(labels >= 0)
    if limit:
        idx = np.random.default_rng(seed).permutation(idx)[:limit]
    groups = np.array([f"img{i // 50}" for i in idx])  # buckets of 50 consecutive images
    return faces.images[idx], labels[idx], groups, np.array([_hash_split(g, val_fraction, seed) for g in groups])


def audio_examples(dirs: tuple[str, ...], val_groups: tuple[str, ...], seed: int, limit: int):
    items = [it for d in dirs for it in speech_items(_resolve(d))]
    if limit:
        order = np.random.default_rng(seed).permutation(len(items))[:limit]
        items = [items[i] for i in sorted(order)]
    groups = np.array([it.speaker for it in items])
    return ([it.path for it in items], np.array([LABEL_INDEX[it.label] for it in items], dtype=np.int64), groups,
            np.array([any(v in g for v in val_groups) for g in groups]))


def text_examples(path: str, val_fraction: float, seed: int, limit: int):
    from emotion_pipeline.corpora.text import read_grouped
    texts, labels, groups, _ = read_grouped(_resolve(path))
    idx = np.arange(len(texts))
    if limit:
        idx = np.sort(np.random.default_rng(seed).permutation(idx)[:limit])
    groups_a = np.array([groups[i] for i in idx])
    return ([texts[i] for i in idx], np.array(labels, dtype=np.int64)[idx], groups_a,
            np.array([_hash_split(g, val_fraction, seed) for g in groups_a]))


def clip_audio_scores(predictor, wave: np.ndarray, window_s: float):
    """Mean of window probabilities/embeddings over a clip at SAMPLE_RATE_HZ: windows of window_s
    every 1 s (pipeline.audio_windows.predict_windows, as evaluation and the audio trainer score)."""
    from emotion_pipeline.audio_windows import predict_windows
    from emotion_pipeline.models import SAMPLE_RATE_HZ
    _, probs, embs = predict_windows(predictor.predict, wave, int(window_s * SAMPLE_RATE_HZ), SAMPLE_RATE_HZ)
    return probs.mean(0), embs.mean(0)


def _save_shards(folder: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    """``arrays`` (same length) as ``name-000.npz``, ``name-001.npz``, ... of SHARD_SIZE rows (no pickle)."""
    n = len(next(iter(arrays.values())))
    for k, start in enumerate(range(0, max(n, 1), SHARD_SIZE)):
        def write(tmp, sl=slice(start, start + SHARD_SIZE)):
            with open(tmp, "wb") as fh:
                np.savez(fh, **{key: a[sl] for key, a in arrays.items()})
        atomic_write(folder / f"{name}-{k:03d}.npz", write)


def _load_shards(folder: Path, name: str) -> dict[str, np.ndarray] | None:
    parts = [np.load(s, allow_pickle=False) for s in sorted(folder.glob(f"{name}-*.npz"))]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0].files} if parts else None


def cache_key(spec: dict[str, Any], encoders: dict[str, Any]) -> str:
    blob = json.dumps({"spec": spec, "encoders": encoders}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_unimodal(data: DataConfig, seed: int, predictors: dict[str, Any], *,
                   progress: bool = True) -> tuple[dict[str, Pool], Path]:
    """Pools for face/audio/text from the unimodal corpora of ``data``, cached under data.cache_dir/<key>."""
    spec, cache_root = data.spec(seed), data.cache_dir
    encoders = {m: p.describe() for m, p in predictors.items()}
    folder = Path(cache_root) / cache_key(spec, encoders)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        shards = {m: _load_shards(folder, m) for m in ("face", "audio", "text")}
        if all(a is not None for a in shards.values()):
            log.info("feature cache hit: %s", folder)
            return {m: Pool(a["probs"].astype(np.float32), a["embeddings"].astype(np.float32), a["labels"], a["groups"],
                            a["is_val"].astype(bool)) for m, a in shards.items()}, folder
    folder.mkdir(parents=True, exist_ok=True)
    limit = data.max_per_modality
    pools: dict[str, Pool] = {}

    images, labels, groups, is_val = face_examples(data.face_npz, data.val_fraction, seed, limit, data.face_labels)
    probs, embs = [], []
    for i in tqdm(range(0, len(images), 256), desc="features: face", disable=not progress):
        p, e = predictors["face"].predict(images[i:i + 256])
        probs.append(p); embs.append(e)
    pools["face"] = Pool(np.concatenate(probs), np.concatenate(embs), labels, groups, is_val)

    from emotion_pipeline.audio_windows import load_audio_file
    from emotion_pipeline.encoders import audio_window_s
    paths, labels, groups, is_val = audio_examples(data.audio_dirs, data.audio_val_groups, seed, limit)
    window_s = audio_window_s(predictors["audio"])
    probs, embs = [], []
    for path in tqdm(paths, desc="features: audio", disable=not progress):
        p, e = clip_audio_scores(predictors["audio"], load_audio_file(path), window_s)
        probs.append(p); embs.append(e)
    pools["audio"] = Pool(np.stack(probs).astype(np.float32), np.stack(embs).astype(np.float32), labels, groups, is_val)

    texts, labels, groups, is_val = text_examples(data.text_csv, data.val_fraction, seed, limit)
    p, e = predictors["text"].predict(texts)
    pools["text"] = Pool(p.astype(np.float32), e.astype(np.float32), labels, groups, is_val)

    for name, pool in pools.items():
        _save_shards(folder, name, {"probs": pool.probs, "embeddings": pool.embeddings, "labels": pool.labels,
                                    "groups": pool.groups.astype("U64"), "is_val": pool.is_val})
    atomic_write_text(meta_path, json.dumps({
        "encoders": encoders, "spec": spec,
        "counts": {m: {"train": int((~p.is_val).sum()), "val": int(p.is_val.sum())} for m, p in pools.items()}},
        indent=2, default=str))
    return pools, folder


def neutral_text_pool(data: DataConfig, text_predictor, *, progress: bool = True) -> tuple[Pool, dict[str, Any]]:
    """Text-encoder scores of the packaged ASR's transcripts of ``data.neutral_speech`` (every clip;
    labels are the voices' emotions, unused), cached beside the unimodal pools. Returns the pool
    and what made it (ASR name and SHA-256, clip count), for the head's card."""
    from emotion_pipeline.audio_windows import load_audio_file
    from emotion_pipeline.transcribe import DEFAULT_ASR, load_asr, transcribe_audio

    folder = _resolve(data.neutral_speech)
    clips = speech_files(folder)
    if not clips:
        raise ConfigError(f"data.neutral_speech: no audio clips under {folder}")
    asr = load_asr(DEFAULT_ASR, offline=True, progress=False)
    made = {"neutral_speech": data.neutral_speech, "clips": len(clips), "asr": asr.info.name, "asr_sha256": asr.info.sha256}
    names = [str(c.relative_to(folder)) for c in clips]     # the cache follows the files, not just their count
    cache = Path(data.cache_dir) / cache_key({**made, "files": names}, {"text": text_predictor.describe()})
    shards = _load_shards(cache, "neutral_text")
    if shards is None:
        texts = []
        for clip in tqdm(clips, desc="features: neutral-content transcripts", disable=not progress):
            transcript = transcribe_audio(asr, load_audio_file(clip), language="en")
            texts.append(" ".join(seg.text.strip() for seg in transcript.segments).strip())
        keep = [i for i, t in enumerate(texts) if t]
        cache.mkdir(parents=True, exist_ok=True)
        probs, embs = text_predictor.predict([texts[i] for i in keep])
        shards = {"probs": probs.astype(np.float32), "embeddings": embs.astype(np.float32),
                  "texts": np.array([texts[i] for i in keep], dtype="U200")}
        _save_shards(cache, "neutral_text", shards)
        atomic_write_text(cache / "meta.json", json.dumps({**made, "transcribed": len(keep)}, indent=2))
    n = len(shards["probs"])
    log.info("neutral-content text: %d transcripts (%s)", n, cache)
    return Pool(shards["probs"].astype(np.float32), shards["embeddings"].astype(np.float32), np.zeros(n, np.int64),
                np.array(["neutral_speech"] * n), np.zeros(n, bool)), {**made, "transcribed": n}


def _clip_is_val(clip, val_speakers: tuple[str, ...], val_fraction: float, seed: int) -> bool:
    if clip.split:
        return clip.split.lower() in ("val", "valid", "validation", "dev")
    if clip.speaker and val_speakers:
        return clip.speaker in val_speakers
    return _hash_split(clip.speaker or str(clip.path), val_fraction, seed)


def build_manifest(clips: list, analyzer, data: DataConfig, seed: int, *, progress: bool = True) -> ClipFeatures:
    """One example per labelled clip, analysed by the full pipeline: clip-level mean of each
    modality's per-second scores (a modality missing in every second stays masked); cached."""
    spec, cache_root = data.spec(seed), data.cache_dir
    encoders = {m: analyzer.models[m] for m in ("face", "audio", "text")}
    folder = Path(cache_root) / cache_key(spec, encoders)
    if (folder / "meta.json").exists() and (a := _load_shards(folder, "clips")) is not None:
        return ClipFeatures(a["probs"], a["mask"], tuple(a[f"emb{j}"] for j in range(3)), a["labels"], a["is_val"].astype(bool))
    rows, failed = [], 0
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
            emb = [e.embedding for e in entries if e.embedding is not None]
            per_mod.append((np.mean([e.probs for e in entries], 0), np.mean(emb, 0) if emb else None) if entries else None)
        rows.append((per_mod, LABEL_INDEX[clip.label],
                     _clip_is_val(clip, data.val_speakers, data.val_fraction, seed)))
    if not rows:
        raise InputError(f"no clip of the manifest could be analysed ({failed} failed)")
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
    _save_shards(folder, "clips", {"probs": probs, "mask": mask, **{f"emb{j}": e for j, e in enumerate(embs)},
                                   "labels": labels, "is_val": is_val})
    atomic_write_text(folder / "meta.json", json.dumps({"encoders": encoders, "spec": spec, "clips": n,
                                                         "failed": failed, "val": int(is_val.sum())}, indent=2, default=str))
    return ClipFeatures(probs, mask, tuple(embs), labels, is_val)

"""The fusion head's data: encoder outputs scored once and cached, and the examples drawn from them.

Pools, each from the encoder's own validation split so that its scores are out-of-sample: face
(FER2013-format .npz, split by a seeded hash of 50-image blocks), audio (RAVDESS / TESS clips, the
mean over windows, split by speaker), text (MELD-format CSV, split by a seeded hash of the dialogue).
``manifest``: real multimodal clips (pipeline.corpora.clips) through the full pipeline, one example
each with each modality's mean over its seconds. Cached as npz shards (pipeline.fileio.shard_cache) in
a folder named by a digest of the sources and the encoders' SHA-256: a changed one makes a new cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from emotion_pipeline.config import check
from emotion_pipeline.corpora.faces import FER_LABELS, fer_split
from emotion_pipeline.corpora.speech import speech_files, speech_items
from emotion_pipeline.data import data_dir
from emotion_pipeline.errors import ConfigError, InputError
from emotion_pipeline.fileio import json_digest, shard_cache
from emotion_pipeline.labels import LABEL_INDEX, NUM_LABELS
from emotion_pipeline.models.fusion_head import MODALITIES
from emotion_pipeline.train.loop import subset

log = logging.getLogger(__name__)


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
    # emotion although the voice does (TESS: "Say the word ..." in seven emotions), transcribed by
    # the packaged ASR and scored by the text encoder. With probability neutral_text_rate a triple's
    # text is replaced by one of them, label kept: the head learns what words that say nothing look like.
    neutral_speech: str | None = None
    neutral_text_rate: float = 0.0
    # Neutral faces against emotional voices (issue 23): with probability neutral_face_rate a
    # triple of another label gets a face of the pool that is labelled neutral, label kept: on
    # camera a speaker's face is often calm while the voice is not, and a calm face must not
    # outvote a confident voice.
    neutral_face_rate: float = 0.0

    def __post_init__(self):
        check(self, ("kind", self.kind in ("paired_unimodal", "manifest"), "must be paired_unimodal or manifest"),
              ("face_labels", self.face_labels in FER_LABELS, f"must be one of {', '.join(FER_LABELS)}"),
              ("manifest", self.kind != "manifest" or bool(self.manifest),
               "a manifest CSV or clip folder is needed for kind: manifest"),
              ("neutral_text_rate", 0.0 <= self.neutral_text_rate <= 1.0, "must be between 0 and 1"),
              ("neutral_face_rate", 0.0 <= self.neutral_face_rate <= 1.0, "must be between 0 and 1"))

    def spec(self, seed: int) -> dict[str, Any]:
        """What the cached unimodal pools depend on (their cache key), with the run's seed."""
        return {**{k: v for k, v in dataclasses.asdict(self).items()
                   if k not in ("train_examples", "val_examples", "cache_dir", "neutral_speech", "neutral_text_rate",
                                "neutral_face_rate")},
                "seed": seed}


@dataclass(frozen=True)
class Pool:
    """One modality's scored examples."""
    probs: np.ndarray       # (N, 7) float32
    embeddings: np.ndarray  # (N, D) float32
    labels: np.ndarray      # (N,) int64 over LABELS
    is_val: np.ndarray      # (N,) bool

    def subset(self, val: bool) -> Pool:
        m = self.is_val == val
        return Pool(self.probs[m], self.embeddings[m], self.labels[m], self.is_val[m])


@dataclass(frozen=True)
class Batch:
    """The head's examples: every modality's scores, the absent ones masked."""
    probs: torch.Tensor              # (N, 3, 7)
    mask: torch.Tensor               # (N, 3), 1 = present
    embs: tuple[torch.Tensor, ...]   # per modality (N, D_m)
    labels: torch.Tensor             # (N,) int64

    def take(self, idx) -> Batch:
        idx = torch.as_tensor(idx)
        return Batch(self.probs[idx], self.mask[idx], tuple(e[idx] for e in self.embs), self.labels[idx])


def draw_triples(pools: dict[str, Pool], n: int, rng: np.random.Generator, dropout: float,
                 neutral: Pool | None = None, neutral_rate: float = 0.0, neutral_face_rate: float = 0.0) -> Batch:
    """``n`` (face, audio, text) triples with a shared label, balanced over labels, with modality
    dropout; with ``neutral``, each triple's text is replaced with probability ``neutral_rate`` by
    a neutral-content transcript (the label stays: the voice and face still show it); with
    ``neutral_face_rate``, the face of a non-neutral triple by one of the pool's neutral faces
    (the label stays: the voice still shows it)."""
    by_label = {m: [np.flatnonzero(p.labels == k) for k in range(NUM_LABELS)] for m, p in pools.items()}
    usable = [k for k in range(NUM_LABELS) if any(len(by_label[m][k]) for m in MODALITIES)]
    labels = rng.choice(usable, size=n)
    probs = np.zeros((n, len(MODALITIES), NUM_LABELS), np.float32)
    mask = np.zeros((n, len(MODALITIES)), np.float32)
    embs = [np.zeros((n, pools[m].embeddings.shape[1]), np.float32) for m in MODALITIES]
    for j, m in enumerate(MODALITIES):
        for k in usable:
            if len(by_label[m][k]) and len(rows := np.flatnonzero(labels == k)):
                pick = rng.choice(by_label[m][k], size=len(rows))
                probs[rows, j], embs[j][rows], mask[rows, j] = pools[m].probs[pick], pools[m].embeddings[pick], 1
    if neutral is not None and neutral_rate > 0:
        t = MODALITIES.index("text")
        swap = np.flatnonzero((rng.random(n) < neutral_rate) & (mask[:, t] > 0))
        pick = rng.integers(0, len(neutral.probs), size=len(swap))
        probs[swap, t], embs[t][swap] = neutral.probs[pick], neutral.embeddings[pick]
    f, neutral_k = MODALITIES.index("face"), LABEL_INDEX["neutral"]
    if neutral_face_rate > 0 and len(calm := by_label["face"][neutral_k]):
        swap = np.flatnonzero((rng.random(n) < neutral_face_rate) & (mask[:, f] > 0) & (labels != neutral_k))
        pick = rng.choice(calm, size=len(swap))
        probs[swap, f], embs[f][swap] = pools["face"].probs[pick], pools["face"].embeddings[pick]
    batch = Batch(*map(torch.from_numpy, (probs, mask)), tuple(map(torch.from_numpy, embs)),
                  torch.from_numpy(labels.astype(np.int64)))
    return apply_dropout(batch, rng, dropout) if dropout > 0 else batch


def apply_dropout(b: Batch, rng: np.random.Generator, dropout: float) -> Batch:
    """Hide each present modality with probability ``dropout``, never all of an example's."""
    mask = b.mask.numpy().copy()
    drop = (rng.random(mask.shape) < dropout) & (mask > 0)
    drop[(mask * ~drop).sum(1) == 0] = False
    mask[drop] = 0
    return Batch(b.probs, torch.from_numpy(mask), b.embs, b.labels)


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else data_dir() / p


def _hash_split(key: str, val_fraction: float, seed: int) -> bool:
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return (h / 0xFFFFFFFF) < val_fraction


def face_examples(npz: str, val_fraction: float, seed: int, limit: int, label_source: str = "fer2013"):
    """FER2013-format faces with a label (corpora.faces.fer_split: the file's own, or the FER+ crowd
    majority). Groups (buckets of 50 rows) are over the file's row numbers either way."""
    faces = fer_split(_resolve(npz), label_source).labelled()
    idx = np.arange(len(faces.rows))
    if limit:   # a seeded pick, in the permuted order (not loop.subset's sorted one)
        idx = np.random.default_rng(seed).permutation(idx)[:limit]
    groups = np.array([f"img{r // 50}" for r in faces.rows[idx]])  # buckets of 50 consecutive images
    return faces.images[idx], faces.labels[idx], groups, np.array([_hash_split(g, val_fraction, seed) for g in groups])


def build_unimodal(data: DataConfig, seed: int, predictors: dict[str, Any], *,
                   progress: bool = True) -> tuple[dict[str, Pool], Path]:
    """Pools for face/audio/text from the unimodal corpora of ``data``, cached under data.cache_dir/<key>."""
    spec, encoders = data.spec(seed), {m: p.describe() for m, p in predictors.items()}
    folder = Path(data.cache_dir) / json_digest({"spec": spec, "encoders": encoders})

    def make() -> tuple[dict[str, dict[str, np.ndarray]], dict]:
        from emotion_pipeline.audio_windows import DEFAULT_HOP_S, load_audio_file, predict_windows
        from emotion_pipeline.corpora.text import read_grouped
        from emotion_pipeline.encoders import audio_window_s
        from emotion_pipeline.models import SAMPLE_RATE_HZ
        limit, found = data.max_per_modality, {}
        images, *face = face_examples(data.face_npz, data.val_fraction, seed, limit, data.face_labels)
        probs, embs = zip(*(predictors["face"].predict(images[i:i + 256])
                            for i in tqdm(range(0, len(images), 256), desc="features: face", disable=not progress)))
        found["face"] = (np.concatenate(probs), np.concatenate(embs), *face)

        items = [it for d in data.audio_dirs for it in speech_items(_resolve(d))]
        items = [items[i] for i in subset(len(items), limit, seed)]
        window = int(audio_window_s(predictors["audio"]) * SAMPLE_RATE_HZ)
        probs, embs = [], []
        for it in tqdm(items, desc="features: audio", disable=not progress):   # windows every 1 s
            _, p, e = predict_windows(predictors["audio"].predict, load_audio_file(it.path), window,
                                      int(DEFAULT_HOP_S * SAMPLE_RATE_HZ))
            probs.append(p.mean(0))
            embs.append(e.mean(0))
        speakers = np.array([it.speaker for it in items])
        found["audio"] = (np.stack(probs), np.stack(embs), np.array([LABEL_INDEX[it.label] for it in items], np.int64),
                          speakers, np.array([any(v in g for v in data.audio_val_groups) for g in speakers]))

        texts, labels, dialogues, _ = read_grouped(_resolve(data.text_csv))
        idx = subset(len(texts), limit, seed)
        groups = np.array([dialogues[i] for i in idx])
        found["text"] = (*predictors["text"].predict([texts[i] for i in idx]), np.array(labels, np.int64)[idx], groups,
                         np.array([_hash_split(g, data.val_fraction, seed) for g in groups]))
        shards = {m: {"probs": p.astype(np.float32), "embeddings": e.astype(np.float32), "labels": y,
                      "groups": g.astype("U64"), "is_val": v} for m, (p, e, y, g, v) in found.items()}
        return shards, {"encoders": encoders, "spec": spec, "counts": {
            m: {"train": int((~a["is_val"]).sum()), "val": int(a["is_val"].sum())} for m, a in shards.items()}}

    return {m: Pool(a["probs"], a["embeddings"], a["labels"], a["is_val"])
            for m, a in shard_cache(folder, MODALITIES, make).items()}, folder


def neutral_text_pool(data: DataConfig, text_predictor, *, progress: bool = True) -> tuple[Pool, dict[str, Any]]:
    """Text-encoder scores of the packaged ASR's transcripts of ``data.neutral_speech`` (every clip),
    cached beside the unimodal pools. Returns the pool (labels unused) and what made it (ASR name
    and SHA-256, clip count), for the head's card."""
    from emotion_pipeline.audio_windows import load_audio_file
    from emotion_pipeline.transcribe import DEFAULT_ASR, load_asr, transcribe_audio

    folder = _resolve(data.neutral_speech)
    if not (clips := speech_files(folder)):
        raise ConfigError(f"data.neutral_speech: no audio clips under {folder}")
    asr = load_asr(DEFAULT_ASR, offline=True, progress=False)
    made = {"neutral_speech": data.neutral_speech, "clips": len(clips), "asr": asr.info.name,
            "asr_sha256": asr.info.sha256}
    key = {"spec": {**made, "files": [str(c.relative_to(folder)) for c in clips]},   # the files, not just their count
           "encoders": {"text": text_predictor.describe()}}

    def make() -> tuple[dict[str, dict[str, np.ndarray]], dict]:
        texts = [" ".join(seg.text.strip() for seg in transcribe_audio(asr, load_audio_file(c), language="en").segments)
                 .strip() for c in tqdm(clips, desc="features: neutral-content transcripts", disable=not progress)]
        texts = [t for t in texts if t]
        probs, embs = text_predictor.predict(texts)
        return {"neutral_text": {"probs": probs.astype(np.float32), "embeddings": embs.astype(np.float32),
                                 "texts": np.array(texts, dtype="U200")}}, {**made, "transcribed": len(texts)}

    cache = Path(data.cache_dir) / json_digest(key)
    a = shard_cache(cache, ("neutral_text",), make)["neutral_text"]
    n = len(a["probs"])
    log.info("neutral-content text: %d transcripts (%s)", n, cache)
    return Pool(a["probs"], a["embeddings"], np.zeros(n, np.int64), np.zeros(n, bool)), {**made, "transcribed": n}


def _clip_is_val(clip, val_speakers: tuple[str, ...], val_fraction: float, seed: int) -> bool:
    if clip.split:
        return clip.split.lower() in ("val", "valid", "validation", "dev")
    if clip.speaker and val_speakers:
        return clip.speaker in val_speakers
    return _hash_split(clip.speaker or str(clip.path), val_fraction, seed)


def build_manifest(clips: list, analyzer, data: DataConfig, seed: int, *,
                   progress: bool = True) -> tuple[Batch, np.ndarray]:
    """One example per labelled clip, analysed by the full pipeline: clip-level mean of each
    modality's per-second scores (a modality missing in every second stays masked); cached.
    Returns the examples and which are held out for validation."""
    spec, encoders = data.spec(seed), {m: analyzer.models[m] for m in MODALITIES}

    def make() -> tuple[dict[str, dict[str, np.ndarray]], dict]:
        n, failed, labels, is_val, embs = len(clips), 0, [], [], {}
        probs, mask = np.zeros((n, 3, NUM_LABELS), np.float32), np.zeros((n, 3), np.float32)
        for clip in tqdm(clips, desc="features: clips", disable=not progress):
            try:
                res = analyzer.run(clip.path)
            except Exception as e:  # one unreadable clip must not stop feature extraction
                failed += 1
                log.warning("skipped %s: %s", clip.path, e)
                continue
            i = len(labels)
            for j, m in enumerate(MODALITIES):
                if scores := [s for e in res.entries if (s := getattr(e, m)) is not None]:
                    probs[i, j], mask[i, j] = np.mean([s.probs for s in scores], 0), 1
                    if emb := [s.embedding for s in scores if s.embedding is not None]:   # sizes: the first clip's
                        embs.setdefault(j, np.zeros((n, len(emb[0])), np.float32))[i] = np.mean(emb, 0)
            labels.append(LABEL_INDEX[clip.label])
            is_val.append(_clip_is_val(clip, data.val_speakers, data.val_fraction, seed))
        if not (k := len(labels)):
            raise InputError(f"no clip of the manifest could be analysed ({failed} failed)")
        embs = {f"emb{j}": embs.get(j, np.zeros((n, 1), np.float32))[:k] for j in range(3)}
        return {"clips": {"probs": probs[:k], "mask": mask[:k], **embs, "labels": np.array(labels, np.int64),
                          "is_val": np.array(is_val, bool)}}, {
            "encoders": encoders, "spec": spec, "clips": k, "failed": failed, "val": int(sum(is_val))}

    a = shard_cache(Path(data.cache_dir) / json_digest({"spec": spec, "encoders": encoders}), ("clips",), make)["clips"]
    embs = tuple(torch.from_numpy(a[f"emb{j}"]) for j in range(3))
    clips = Batch(torch.from_numpy(a["probs"]), torch.from_numpy(a["mask"]), embs, torch.from_numpy(a["labels"]))
    return clips, a["is_val"]

"""How well CAM++ (pipeline/voices.py) tells voices apart, and what it costs.

    python -m bench.voice_groups [--ravdess DIR] [--talking DIR] [--per-actor 10] [--json out.json]

1. RAVDESS-named folders (Actor_XX/*.wav|flac; any set in that layout): the loudest 1.5 s of
   ``--per-actor`` files per actor (spread over emotions), each embedded alone: cosine similarity of
   same-actor and different-actor pairs, the AUC of the two, and the share of pairs at or above
   VOICE_THRESHOLD (different: joined wrongly; same: joined).
2. Talking clips (one person each): every clip's windows as the pipeline makes them
   (``embed_windows`` over VOICE_CHUNK_S chunks), pairs within a clip against pairs across clips.
3. The cost: CPU and wall seconds per minute of audio for the streamed windows, 3 runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench import emit


def _pairs(emb: np.ndarray, who: np.ndarray, threshold: float) -> dict:
    sim = emb @ emb.T
    iu = np.triu_indices(len(who), 1)
    same = (who[:, None] == who[None])[iu]
    pos, neg = sim[iu][same], sim[iu][~same]
    return {"same": [round(float(pos.mean()), 3), round(float(pos.std()), 3), int(len(pos))],
            "different": [round(float(neg.mean()), 3), round(float(neg.std()), 3), int(len(neg))],
            "auc": round(float((pos[:, None] > neg[None]).mean()), 4),
            "same_joined": round(float((pos >= threshold).mean()), 4),
            "different_joined": round(float((neg >= threshold).mean()), 5),
            "different_max": round(float(neg.max()), 3)}


def ravdess(folder: Path, embedder, per_actor: int) -> dict:
    import librosa
    import soundfile as sf
    from emotion_pipeline import voices
    clips, who = [], []
    for actor in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted([*actor.glob("*.wav"), *actor.glob("*.flac")])
        for f in files[::max(1, len(files) // per_actor)][:per_actor]:
            x, sr = sf.read(f, dtype="float32")
            x = librosa.resample(x if x.ndim == 1 else x.mean(1), orig_sr=sr, target_sr=voices.SAMPLE_RATE)
            n = int(voices.VOICE_WINDOW_S * voices.SAMPLE_RATE)
            if len(x) < n:
                continue
            i = int(np.argmax(np.convolve(x ** 2, np.ones(n), "valid")))
            clips.append(x[i:i + n])
            who.append(actor.name)
    emb = embedder.embed(clips)
    return {"actors": len(set(who)), "windows": len(clips), **_pairs(emb, np.array(who), voices.VOICE_THRESHOLD)}


def _audio(path: Path) -> np.ndarray:
    from emotion_pipeline import demux
    return np.concatenate([c.samples for c in demux.iter_audio(path)]).astype(np.float32)


def talking(folder: Path, embedder) -> dict:
    from emotion_pipeline import voices
    embs, who = [], []
    for clip in sorted(folder.glob("*.mp4")):
        track = voices.VoiceTrack(embedder)
        track.push(_audio(clip))
        _, emb = track.windows()
        embs.append(emb)
        who += [clip.stem] * len(emb)
    return {"clips": len(embs), "windows": len(who), **_pairs(np.concatenate(embs), np.array(who), voices.VOICE_THRESHOLD)}


def cost(clip: Path, embedder, repeat: int = 3) -> dict:
    from emotion_pipeline import voices
    x = _audio(clip)
    x = np.tile(x, int(np.ceil(60 * voices.SAMPLE_RATE / len(x))))[:60 * voices.SAMPLE_RATE]
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        track = voices.VoiceTrack(embedder)
        for k in range(0, len(x), 30 * voices.SAMPLE_RATE):
            track.push(x[k:k + 30 * voices.SAMPLE_RATE])
        track.windows()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_s_per_min": [round(w, 2) for w in wall], "cpu_s_per_min": [round(c, 2) for c in cpu]}


def main() -> int:
    from emotion_pipeline.data import data_path
    from emotion_pipeline.voices import load_voice_embedder
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=None, help="RAVDESS-named folders (default: the shared set)")
    parser.add_argument("--talking", type=Path, default=None, help="one-person talking clips (default: the shared ones)")
    parser.add_argument("--per-actor", type=int, default=10)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    embedder = load_voice_embedder(offline=True)
    folder = args.talking or data_path("video", "talking")
    report = {"ravdess": ravdess(args.ravdess or data_path("speech", "ravdess"), embedder, args.per_actor),
              "talking": talking(folder, embedder),
              "cost": cost(sorted(folder.glob("*.mp4"))[0], embedder)}
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())

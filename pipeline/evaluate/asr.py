"""Word error rate of the transcription model: ``run(data, model=..., device=...) -> dict``.

``data`` is one of
* a folder of RAVDESS-named speech (``03-01-EE-II-SS-RR-AA.flac|wav``, any depth): the reference
  is the statement in the name (01 "Kids are talking by the door", 02 "Dogs are sitting by the door");
* a folder of TESS ``<speaker>_<emotion>/<speaker>_<word>_<emotion>.flac|wav`` files: the reference
  is "Say the word <word>";
* a CSV with columns ``path,text`` (relative paths resolved against the CSV's folder).

Each file goes through the same path as ``analyze`` (``transcribe.transcribe_audio``: Silero
regions, language identification, faster-whisper). WER = (substitutions + deletions + insertions)
/ reference words over the whole set, after lower-casing and dropping punctuation. Also reported:
the share of files identified as English (every reference here is English) and seconds of
compute per minute of audio.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import jiwer
import numpy as np

from emotion_pipeline.corpora.speech import transcribed_speech
from emotion_pipeline.errors import bad_file

log = logging.getLogger(__name__)

_PUNCT = re.compile(r"[^\w\s']+")


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation (apostrophes inside words kept: "we're")."""
    text = _PUNCT.sub(" ", text.lower().replace("-", " "))
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_ops(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimum word-level alignment (jiwer)."""
    if not ref:   # nothing to align to (older jiwer refuses an empty reference): every word inserted
        return 0, 0, len(hyp)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions, out.deletions, out.insertions


def run(data: Path, *, model: str = "auto", device: str = "cpu", language: str | None = None,
        limit: int | None = None) -> dict:
    """WER of ``model`` (the ``whisper_model`` setting: auto, tiny.en, base, a folder, ...) on ``data``."""
    from emotion_pipeline.audio_windows import load_audio_file
    from emotion_pipeline.models import SAMPLE_RATE_HZ
    from emotion_pipeline.transcribe import load_for_analysis, transcribe_audio

    pairs, fmt = transcribed_speech(data)
    if limit:
        pairs = pairs[:limit]
    asr, language_id = load_for_analysis(model, device=device, language=language)
    totals = np.zeros(3, dtype=np.int64)
    n_ref = n_files = skipped = english = 0
    audio_s = compute_s = 0.0
    worst: list[tuple[float, str, str, str]] = []
    for path, reference in pairs:
        try:
            wave = load_audio_file(path, SAMPLE_RATE_HZ)
        except Exception as exc:  # unreadable file: counted, the rest go on
            log.warning("%s: skipped (%s)", path, exc)
            skipped += 1
            continue
        t0 = time.perf_counter()
        tr = transcribe_audio(asr, wave, language_id=language_id, language=language)
        compute_s += time.perf_counter() - t0
        audio_s += len(wave) / SAMPLE_RATE_HZ
        hypothesis = " ".join(s.text for s in tr.segments)
        ref, hyp = normalize(reference), normalize(hypothesis)
        ops = np.array(edit_ops(ref, hyp))
        totals += ops
        n_ref += len(ref)
        n_files += 1
        english += tr.language == "en"
        if ops.sum():
            worst.append((float(ops.sum()) / max(1, len(ref)), str(path), reference, hypothesis))
    if not n_files:
        raise bad_file(data, f"none of the {len(pairs)} listed audio files could be read")
    worst.sort(key=lambda w: -w[0])
    s, d, i = (int(x) for x in totals)
    result = {
        "wer": round((s + d + i) / max(1, n_ref), 4), "substitutions": s, "deletions": d, "insertions": i,
        "reference_words": n_ref, "n": n_files, "skipped": skipped,
        "files_with_errors": len(worst), "identified_english": round(english / n_files, 4),
        "audio_s": round(audio_s, 1), "compute_s": round(compute_s, 1),
        "compute_s_per_audio_minute": round(compute_s / audio_s * 60, 2) if audio_s else None,
        "model": asr.info.describe(), "language_id": language_id.info.describe() if language_id else None,
        "data": str(data), "format": fmt,
        "worst": [{"path": p, "reference": r, "hypothesis": h, "wer": round(w, 3)} for w, p, r, h in worst[:10]],
    }
    log.info("%s on %s (%s, n=%d): WER %.4f, English identified %.1f%%, %.2f s compute per audio minute",
             asr.info.name, data, fmt, n_files, result["wer"], 100 * result["identified_english"],
             result["compute_s_per_audio_minute"] or 0)
    return result

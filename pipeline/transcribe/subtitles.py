"""Transcript files: a subtitle file (.srt, .vtt) or the project's own JSON (a timeline file, or
{"segments": [...]}) read into a ``Transcript`` that stands in for Whisper.

Subtitle cues carry no word times, so a cue's words are spread evenly over it, weighted by length
(a documented approximation; Whisper's word timestamps are used when Whisper runs).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from emotion_pipeline.errors import InputError
from emotion_pipeline.records import Segment, Transcript, Word

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_TAG = re.compile(r"<[^>]+>|\{[^}]+\}")


def _seconds(text: str) -> float:
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad timestamp {text!r}")
    h, mnt, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mnt) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def spread_words(start_s: float, end_s: float, text: str) -> tuple[Word, ...]:
    """Words of a cue with times spread evenly over it, weighted by length."""
    tokens = text.split()
    if not tokens:
        return ()
    weights = np.array([len(t) + 1 for t in tokens], dtype=float)
    edges = start_s + (end_s - start_s) * np.concatenate([[0], np.cumsum(weights)]) / weights.sum()
    return tuple(Word(round(float(a), 3), round(float(b), 3), t) for t, a, b in zip(tokens, edges[:-1], edges[1:]))


def parse_subtitles(path: str | Path) -> Transcript:
    """Read .srt, .vtt or the project's JSON into a Transcript."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: transcript file not found")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: transcript is not UTF-8 text") from e
    if path.suffix.lower() == ".json":
        return _parse_json(path, raw)
    segments = []
    for block in re.split(r"\n\s*\n", raw.replace("\r\n", "\n")):
        lines = [ln for ln in block.strip().split("\n") if ln.strip()]
        idx = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if idx is None:
            continue
        left, right = lines[idx].split("-->", 1)
        try:
            start, end = _seconds(left), _seconds(right.strip().split()[0])
        except (ValueError, IndexError) as e:
            raise InputError(f"{path}: bad cue timing {lines[idx]!r}") from e
        text = " ".join(_TAG.sub("", ln).strip() for ln in lines[idx + 1:]).strip()
        if text and end > start:
            segments.append(Segment(start, end, text, spread_words(start, end, text)))
    if not segments and raw.strip():
        raise InputError(f"{path}: no subtitle cues found (expected .srt, .vtt or the project's JSON)")
    return Transcript(tuple(sorted(segments, key=lambda s: s.start_s)), None, f"file:{path}")


def _parse_json(path: Path, raw: str) -> Transcript:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e
    if isinstance(data, dict) and isinstance(data.get("transcript"), dict):
        data = data["transcript"]  # a timeline file written by this project
    items = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a list of segments or an object with 'segments'")
    segments = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item["text"], str):   # an object's repr is not words
                raise InputError(f"{path}: segment {i} text must be a string, got {type(item['text']).__name__}")
            start, end, text = float(item["start_s"]), float(item["end_s"]), item["text"].strip()
            if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
                raise InputError(f"{path}: segment {i} has bad times start_s={start!r}, end_s={end!r} "
                                 f"(finite, >= 0, end after start)")
            words = tuple(Word(float(w["start_s"]), float(w["end_s"]), str(w["text"]).strip())
                          for w in item.get("words") or ()) or spread_words(start, end, text)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path}: segment {i} needs start_s, end_s and text ({e})") from e
        segments.append(Segment(start, end, text, words))
    language = data.get("language") if isinstance(data, dict) else None
    return Transcript(tuple(segments), language, f"file:{path}")

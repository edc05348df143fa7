"""The one place JSON is made: the timeline document, written atomically, valid against the schema."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from emotion_pipeline.fileio import atomic_write_text
from emotion_pipeline.labels import LABELS
from emotion_pipeline.records import ModalityScores, Person, SecondEntry, Transcript, VideoInfo

SCHEMA_VERSION = "1.1"   # 1.1: input, settings_key, skip_key, coverage, warnings, complete, per-second lost
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "timeline.schema.json"
SCORE_DECIMALS = 4
# top-level parts besides the ones every document has: the file's identity, run timings, a live run's record
SECTIONS = ("input", "settings_key", "skip_key", "timings_s", "live", "people")


def _scores(probs: np.ndarray) -> dict[str, float]:
    return {label: round(float(p), SCORE_DECIMALS) for label, p in zip(LABELS, probs)}


def _prediction(entry: ModalityScores | None, keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    if entry is None:
        return None
    out = {"label": LABELS[int(np.argmax(entry.probs))], "scores": _scores(entry.probs)}
    out.update({k: entry.details[k] for k in keys if k in entry.details})
    return out


def _fused(entry: SecondEntry | Any) -> dict[str, Any] | None:
    """A second's (or a person's second's) fused verdict: smoothed, with the raw one."""
    if entry.fused is None:
        return None
    out = _prediction(entry.fused, ("method", "modalities", "weights"))
    out["raw"] = _prediction(entry.fused_raw or entry.fused)
    return out


def person_json(p: Person) -> dict[str, Any]:
    """One person of the top-level ``people`` list, with their own per-second timeline."""
    return {"person_id": p.person_id, "face_ids": list(p.face_ids), "first_s": p.first_s, "last_s": p.last_s,
            "seconds_on_screen": p.seconds_on_screen, "seconds_speaking": p.seconds_speaking,
            "timeline": [{"start_s": float(t.second), "end_s": float(t.second + 1), "speaking": t.speaking,
                          "face": _prediction(t.face), "fused": _fused(t)} for t in p.timeline]}


def timeline_entry(e: SecondEntry) -> dict[str, Any]:
    """One second of the timeline, as the JSON has it (also the body of a live line)."""
    return {
        "start_s": e.start_s, "end_s": e.end_s,
        "face": _prediction(e.face, ("n_faces", "face_id", "person_id", "faces")),
        "audio": _prediction(e.audio, ("speech_fraction",)),
        "text": _prediction(e.text, ("words", "context")),
        "fused": _fused(e),
        **({} if e.speaker is None else {"speaker": e.speaker.person_id, "speaker_basis": e.speaker.basis}),
        **({} if e.speaker is None or e.speaker.voice is None else {"voice": e.speaker.voice}),
    }


def timeline_document(*, info: VideoInfo, entries: list[SecondEntry], transcript: Transcript | None,
                      models: dict[str, Any], software: dict[str, Any], config: dict[str, Any],
                      modalities: dict[str, dict[str, Any]], coverage: dict[str, dict[str, Any]] | None = None,
                      warnings: list[str] | None = None, **sections: Any) -> dict[str, Any]:
    """``sections``: the schema's other top-level parts (SECTIONS), given by the caller that has them."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise TypeError(f"timeline_document: {unknown} are not top-level parts of the schema ({', '.join(SECTIONS)})")
    coverage = coverage or {}
    if sections.get("people") is not None:
        sections["people"] = [person_json(p) for p in sections["people"]]
    timeline = [timeline_entry(e) for e in entries]
    for row in timeline:   # streams that lost more than half of this second
        lost = [k for k, c in coverage.items()
                if sum(max(0.0, min(b, row["end_s"]) - max(a, row["start_s"])) for a, b in c["lost_s"])
                > 0.5 * (row["end_s"] - row["start_s"])]
        if lost:
            row["lost"] = lost
    counts = Counter(t["fused"]["label"] for t in timeline if t["fused"])
    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "video": {"path": info.path, "duration_s": info.duration_s, "fps": info.fps, "width": info.width,
                  "height": info.height, "has_audio": info.has_audio, "has_video": info.has_video,
                  "rotation_deg": info.rotation_deg, "video_codec": info.video_codec, "audio_codec": info.audio_codec,
                  "origin_s": info.origin_s, "tracks": [t.json() for t in info.tracks],
                  "timestamp_restarts_s": list(info.restarts_s)},
        "labels": list(LABELS),
        "models": models,
        "software": software,
        "config": config,
        "modalities": modalities,
        "coverage": coverage,
        "complete": not warnings,
        "warnings": list(warnings or []),
        "transcript": None if transcript is None else {
            "source": transcript.source, "language": transcript.language,
            "segments": [{"start_s": s.start_s, "end_s": s.end_s, "text": s.text,
                          "words": [{"start_s": w.start_s, "end_s": w.end_s, "text": w.text,
                                     "probability": None if w.probability is None else round(w.probability, 3)}
                                    for w in s.words]} for s in transcript.segments]},
        "timeline": timeline,
        "summary": {"dominant_label": counts.most_common(1)[0][0] if counts else None,
                    "label_seconds": {label: counts.get(label, 0) for label in LABELS}},
        **{k: v for k, v in sections.items() if v is not None},
    }


def validate(document: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))


def write_json_atomic(path: str | Path, document: dict[str, Any]) -> Path:
    """Serialise first (so a bad value writes nothing), then write atomically."""
    text = json.dumps(document, indent=1, allow_nan=False) + "\n"
    return atomic_write_text(path, text)

"""The one place JSON is made: the timeline document, written atomically, valid against the schema."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import atomic_write_text
from pipeline.labels import LABELS
from pipeline.records import ModalityScores, SecondEntry, Transcript, VideoInfo

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "timeline.schema.json"
SCORE_DECIMALS = 4


def _scores(probs: np.ndarray) -> dict[str, float]:
    return {label: round(float(p), SCORE_DECIMALS) for label, p in zip(LABELS, probs)}


def _prediction(entry: ModalityScores | None, keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    if entry is None:
        return None
    out = {"label": LABELS[int(np.argmax(entry.probs))], "scores": _scores(entry.probs)}
    out.update({k: entry.details[k] for k in keys if k in entry.details})
    return out


def _fused(entry: SecondEntry) -> dict[str, Any] | None:
    if entry.fused is None:
        return None
    out = _prediction(entry.fused, ("method", "modalities"))
    out["raw"] = _prediction(entry.fused_raw or entry.fused)
    return out


def timeline_document(*, info: VideoInfo, entries: list[SecondEntry], transcript: Transcript | None,
                      models: dict[str, Any], software: dict[str, Any], config: dict[str, Any],
                      modalities: dict[str, dict[str, Any]]) -> dict[str, Any]:
    timeline = [{
        "start_s": e.start_s, "end_s": e.end_s,
        "face": _prediction(e.face, ("n_faces", "face_id", "faces")),
        "audio": _prediction(e.audio, ("speech_fraction",)),
        "text": _prediction(e.text, ("words", "context")),
        "fused": _fused(e),
    } for e in entries]
    counts = Counter(t["fused"]["label"] for t in timeline if t["fused"])
    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "video": {"path": info.path, "duration_s": info.duration_s, "fps": info.fps, "width": info.width,
                  "height": info.height, "has_audio": info.has_audio, "has_video": info.has_video,
                  "rotation_deg": info.rotation_deg, "video_codec": info.video_codec, "audio_codec": info.audio_codec},
        "labels": list(LABELS),
        "models": models,
        "software": software,
        "config": config,
        "modalities": modalities,
        "transcript": None if transcript is None else {
            "source": transcript.source, "language": transcript.language,
            "segments": [{"start_s": s.start_s, "end_s": s.end_s, "text": s.text} for s in transcript.segments]},
        "timeline": timeline,
        "summary": {"dominant_label": counts.most_common(1)[0][0] if counts else None,
                    "label_seconds": {label: counts.get(label, 0) for label in LABELS}},
    }


def validate(document: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))


def write_json_atomic(path: str | Path, document: dict[str, Any]) -> Path:
    """Serialise first (so a bad value writes nothing), then write atomically."""
    text = json.dumps(document, indent=1, allow_nan=False) + "\n"
    return atomic_write_text(path, text)

"""The Python API: analyse videos, get tables, plots and files.

    from emotion_pipeline.api import analyze, Session

    result = analyze("talk.mp4")                       # default profile, models loaded for this call
    df = result.to_pandas()                            # one row per second
    faces = result.to_pandas(faces=True)               # one row per second and face
    result.save("out", formats=("json", "csv", "html"))

    session = Session(frames_per_second=2)             # settings as in configs/analyze.yaml / --set
    for r in session.analyze_many(["a.mp4", "b.mp4"]):  # models load once
        r.save("out", formats=("json", "csv"))

    Result.load("out/talk.json")                       # a result the command line wrote

A ``Result`` holds the timeline document (the JSON, ``result.document``); nothing is computed
twice: the table, the files and the plot are all made from it.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from emotion_pipeline import exports
from emotion_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "analyze.yaml"


@dataclass(frozen=True)
class Result:
    """One analysed video: the timeline document and where the video is."""
    document: dict[str, Any]                  # valid against pipeline/schema/timeline.schema.json
    video: Path | None                        # the analysed file (None when unknown)
    detector: Any = field(default=None, repr=False, compare=False)   # the run's face detector (for mp4)

    @classmethod
    def load(cls, json_path: str | Path, video: str | Path | None = None) -> "Result":
        """A result from a timeline JSON; the video defaults to the one it records, if still there."""
        from emotion_pipeline import writers

        try:
            doc = json.loads(Path(json_path).read_text())
        except (OSError, ValueError) as e:
            raise PipelineError(f"{json_path}: cannot read the timeline ({e})") from e
        writers.validate(doc)
        if video is None:
            recorded = (doc.get("input") or {}).get("path") or doc["video"]["path"]
            video = recorded if Path(recorded).exists() else None
        return cls(doc, Path(video) if video else None)

    # ---- what is in it
    @property
    def timeline(self) -> list[dict[str, Any]]:
        return self.document["timeline"]

    @property
    def summary(self) -> dict[str, Any]:
        """Dominant label, seconds per label, share of time per label, moments of strongest change."""
        return {**self.document["summary"], "label_shares": exports.label_shares(self.document),
                "strongest_changes": exports.strongest_changes(self.document)}

    @property
    def modalities(self) -> dict[str, Any]:
        return self.document["modalities"]

    @property
    def transcript(self) -> dict[str, Any] | None:
        return self.document.get("transcript")

    def __len__(self) -> int:
        return len(self.timeline)

    # ---- as data
    def to_pandas(self, faces: bool = False):
        """A DataFrame: one row per second, or with ``faces=True`` one row per second and face
        (columns: see ``pipeline.exports.table_rows``; NaN where a modality is missing)."""
        import pandas as pd

        return pd.DataFrame(exports.table_rows(self.document, faces=faces))

    def to_json(self, path: str | Path | None = None, *, indent: int = 1) -> str:
        """The timeline document as JSON text; with ``path``, also written there atomically."""
        from emotion_pipeline.fileio import atomic_write_text

        text = json.dumps(self.document, indent=indent, allow_nan=False) + "\n"
        if path is not None:   # validated when it was made (Session.analyze) or read (Result.load)
            atomic_write_text(path, text)
        return text

    def plot(self, path: str | Path | None = None):
        """The timeline figure (a matplotlib Figure), or with ``path`` the PNG written there."""
        from emotion_pipeline import plots

        return plots.timeline_figure(self.document) if path is None else plots.plot_timeline(self.document, path)

    def save(self, out: str | Path, formats: Iterable[str] | str = ("json",)) -> dict[str, Path]:
        """Write ``<stem>.<ext>`` for each format (json, csv, png, mp4, html, srt): ``out`` is a
        folder (the stem is the video's) or a ``.json`` path. Returns {format: path}."""
        formats = exports.parse_formats(formats)
        out = Path(out)
        stem = Path(self.document["video"]["path"]).stem
        out_json = out if out.suffix.lower() == ".json" else out / f"{stem}.json"
        written = {"json": Path(out_json)}
        self.to_json(out_json)
        if "mp4" in formats and self.video is None:
            raise PipelineError(f"{out_json}: the mp4 needs the video, which is not available")
        written.update(exports.write_formats(self.document, self.video, out_json, formats, detector=self.detector))
        return written


def _config(config: str | Path | None, settings: dict[str, Any]):
    from emotion_pipeline.config import AnalyzeConfig, load

    settings = dict(settings)
    settings.setdefault("progress", sys.stderr.isatty())
    path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    return load(AnalyzeConfig, path, [f"{k}={json.dumps(v, default=str)}" for k, v in settings.items()], label="setting")


class Session:
    """Models loaded once (``pipeline.analyze.Analyzer``), any number of videos analysed with them.
    ``config``: a YAML file (default configs/analyze.yaml); ``settings``: keys of AnalyzeConfig
    overriding it (``frames_per_second=2``, ``whisper_model="none"``, ``device="cpu"``, ...);
    progress bars show only when stderr is a terminal unless ``progress`` is given."""

    def __init__(self, config: str | Path | None = None, **settings: Any):
        from emotion_pipeline.analyze import Analyzer

        self.config = _config(config, settings)
        self.analyzer = Analyzer(self.config)

    @classmethod
    def from_analyzer(cls, analyzer) -> "Session":
        """A session around an already loaded ``pipeline.analyze.Analyzer``."""
        session = cls.__new__(cls)
        session.config, session.analyzer = analyzer.cfg, analyzer
        return session

    def analyze(self, video: str | Path, *, transcript: str | Path | None = None) -> Result:
        """Analyse one video (``transcript``: a .srt/.vtt/.json file used instead of Whisper)."""
        from emotion_pipeline import preflight, writers
        from emotion_pipeline.errors import InputError

        video = Path(video)
        if not video.exists():
            raise InputError(f"{video}: no such file")
        if transcript is not None:
            preflight.load_transcript(transcript)
        doc = self.analyzer.analyze(video, transcript_file=transcript)
        writers.validate(doc)
        for w in doc["warnings"]:
            log.warning("%s: %s", video, w)
        return Result(doc, video, self.analyzer.face.detector)

    def analyze_many(self, videos: Iterable[str | Path], *, skip_errors: bool = False) -> Iterator[Result]:
        """Analyse each video in turn with the loaded models; ``skip_errors``: log a failing video
        (one line naming it) and go on, instead of raising."""
        from emotion_pipeline.batch import expected_errors, one_line

        for video in videos:
            try:
                yield self.analyze(video)
            except Exception as e:
                if not skip_errors or isinstance(e, KeyboardInterrupt):
                    raise
                log.error("%s", one_line(video, e), exc_info=log.isEnabledFor(logging.DEBUG)
                          and not isinstance(e, expected_errors()))


def analyze(video: str | Path, *, transcript: str | Path | None = None, config: str | Path | None = None,
            **settings: Any) -> Result:
    """Analyse one video with models loaded for this call (use ``Session`` for several videos).
    With a ``transcript`` file, Whisper is not loaded (unless ``whisper_model`` is given)."""
    if transcript is not None:
        settings.setdefault("whisper_model", "none")
    return Session(config, **settings).analyze(video, transcript=transcript)


def analyze_many(videos: Iterable[str | Path], *, config: str | Path | None = None, skip_errors: bool = False,
                 **settings: Any) -> Iterator[Result]:
    """Analyse several videos, loading the models once."""
    return Session(config, **settings).analyze_many(videos, skip_errors=skip_errors)


__all__ = ["Result", "Session", "analyze", "analyze_many"]

"""The Python API: analyse videos, get tables, plots and files.

    from emotion_pipeline.api import analyze, Session

    result = analyze("talk.mp4")                       # default profile, models loaded for this call
    df = result.to_pandas()                            # one row per second
    faces = result.to_pandas(faces=True)               # one row per second and face
    result.save("out", formats=("json", "csv", "html"))

    session = Session(frames_per_second=2)             # settings as in configs/analyze.yaml / --set
    for r in session.analyze_many(["a.mp4", "b.mp4"]):  # models load once
        r.save("out", formats=("json", "csv"))
    for r in session.analyze_many(["a.mp4", "b.mp4"], out="out", formats="json,csv"):
        r.skipped                                      # as `analyze --out out`: up-to-date videos skipped,
                                                       # another video's output refused (force=True replaces it)

    Result.load("out/talk.json")                       # a result the command line wrote

A ``Result`` holds the timeline document (the JSON, ``result.document``); nothing is computed
twice: the table, the files and the plot are all made from it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from emotion_pipeline import exports
from emotion_pipeline.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One analysed video: the timeline document and where the video is."""
    document: dict[str, Any]                  # valid against pipeline/schema/timeline.schema.json
    video: Path | None                        # the analysed file (None when unknown)
    detector: Any = field(default=None, repr=False, compare=False)   # the run's face detector (for mp4)
    skipped: bool = field(default=False, compare=False)   # analyze_many(out=...): up to date, read back

    @classmethod
    def load(cls, json_path: str | Path, video: str | Path | None = None) -> "Result":
        """A result from a timeline JSON. ``video``: the analysed file; by default the one the JSON
        records, but only while it is that very file (same size and modification time as recorded):
        a JSON is data, and must not make a report embed whatever path it names."""
        from emotion_pipeline.fileio import read_bounded
        from emotion_pipeline.jobs import MAX_TIMELINE_BYTES

        try:
            doc = json.loads(read_bounded(json_path, MAX_TIMELINE_BYTES, "a timeline"))
        except (OSError, ValueError) as e:
            raise PipelineError(f"{json_path}: cannot read the timeline ({e})") from e
        validate(doc, json_path)
        if video is None:
            video = recorded_video(doc)
            if video is None and (doc.get("input") or {}).get("path"):
                log.info("%s: the recorded video %s is not there or has changed; no video attached",
                         json_path, doc["input"]["path"])
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

    def save(self, out: str | Path, formats: Iterable[str] | str = ("json",), *, blur_faces: bool = False) -> dict[str, Path]:
        """Write ``<stem>.<ext>`` for each format (json, csv, png, mp4, html, srt): ``out`` is a
        folder (the stem is the video's) or a ``.json`` path; ``blur_faces``: the MP4 shows every
        face blurred. Returns {format: path}."""
        formats = exports.parse_formats(formats)
        out = Path(out)
        stem = Path(self.document["video"]["path"]).stem
        out_json = out if out.suffix.lower() == ".json" else out / f"{stem}.json"
        written = {"json": Path(out_json)}
        exports.check_not_source(self.video, out_json, formats)   # never over the user's video
        self.to_json(out_json)
        if "mp4" in formats and self.video is None:
            raise PipelineError(f"{out_json}: the mp4 needs the video, which is not available")
        written.update(exports.write_formats(self.document, self.video, out_json, formats, detector=self.detector,
                                             blur_faces=blur_faces))
        return written


def recorded_video(doc: dict[str, Any]) -> Path | None:
    """The video a timeline records as its input, when the file there is still that one (same
    size and modification time as recorded); else None."""
    recorded = doc.get("input") if isinstance(doc.get("input"), dict) else {}
    path = recorded.get("path")
    if not isinstance(path, str):
        return None
    try:
        st = Path(path).stat()
    except (OSError, ValueError):
        return None
    same = st.st_size == recorded.get("size_bytes") and st.st_mtime_ns == recorded.get("mtime_ns")
    return Path(path) if same and Path(path).is_file() else None


def validate(doc: Any, json_path: str | Path) -> None:
    """PipelineError naming the file and the first problem when ``doc`` is not a valid timeline."""
    import jsonschema

    from emotion_pipeline import writers

    try:
        writers.validate(doc)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "top level"
        raise PipelineError(f"{json_path}: not a valid timeline at {where} ({' '.join(e.message.split())[:200]})") from e
    for i, row in enumerate(doc["timeline"]):
        try:
            start, end = float(row["start_s"]), float(row["end_s"])
        except OverflowError:
            raise PipelineError(f"{json_path}: not a valid timeline: timeline/{i} has a time too large "
                                f"for a number") from None
        if not (math.isfinite(start) and math.isfinite(end) and end >= start):
            raise PipelineError(f"{json_path}: not a valid timeline: timeline/{i} ends before it starts "
                                f"(start_s={start:g}, end_s={end:g})")


def _config(config: str | Path | None, settings: dict[str, Any]):
    from emotion_pipeline.jobs import analysis_config

    settings = dict(settings)
    settings.setdefault("progress", sys.stderr.isatty())
    return analysis_config(config, [f"{k}={json.dumps(v, default=str)}" for k, v in settings.items()], label="setting")


class Session:
    """Models loaded once (``pipeline.analyze.Analyzer``), any number of videos analysed with them.
    ``config``: a YAML file (default: AnalyzeConfig's defaults, which configs/analyze.yaml lists);
    ``settings``: keys of AnalyzeConfig
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
        from emotion_pipeline import writers
        from emotion_pipeline.errors import InputError

        from emotion_pipeline.jobs import check_transcript

        video = Path(video)
        if not video.exists():
            raise InputError(f"{video}: no such file")
        if transcript is not None:
            check_transcript(transcript, video)   # parsed, checked and bounded by the video's length
        doc = self.analyzer.analyze(video, transcript_file=transcript)
        writers.validate(doc)
        for w in doc["warnings"]:
            log.warning("%s: %s", video, w)
        return Result(doc, video, self.analyzer.face.detector)

    def analyze_many(self, videos: Iterable[str | Path], *, skip_errors: bool = False, out: str | Path | None = None,
                     formats: Iterable[str] | str = ("json",), force: bool = False,
                     strict: bool = False) -> Iterator[Result]:
        """Analyse each video in turn with the loaded models. ``skip_errors``: log a failing video
        (one line naming it) and go on, instead of raising PipelineError with that line.

        With ``out`` (a folder), each result is also written there as ``analyze --out`` writes it,
        by the same job layer (``pipeline.jobs``): a video whose output is up to date is not
        analysed again (its Result is read back, ``skipped=True``, and the formats missing beside it
        are made), an output made from another video is refused unless ``force``, an output that
        would replace an input is refused, ``strict`` makes a partial result a failure."""
        from emotion_pipeline.errors import expected_errors, one_line

        if out is not None:
            yield from self._analyze_into(videos, Path(out), formats, force=force, strict=strict,
                                          skip_errors=skip_errors)
            return
        for video in videos:
            try:
                yield self.analyze(video)
            except Exception as e:
                if not skip_errors or isinstance(e, KeyboardInterrupt):
                    raise
                log.error("%s", one_line(video, e), exc_info=log.isEnabledFor(logging.DEBUG)
                          and not isinstance(e, expected_errors()))

    def _analyze_into(self, videos: Iterable[str | Path], out: Path, formats, *, force: bool, strict: bool,
                      skip_errors: bool) -> Iterator[Result]:
        from emotion_pipeline import batch, jobs

        listed = [Path(v) for v in videos]
        prepared = jobs.prepare([(v, v.parent) for v in listed], self.config,
                                jobs.Request(out, exports.parse_formats(formats), force=force, strict=strict))
        for k, job in enumerate(prepared.jobs):
            outcome = prepared.early.get(k)
            doc = None
            if outcome is None:
                outcome, doc = batch.analyze_doc(self.analyzer, job, prepared.options)
            if outcome.failed:
                if not skip_errors:
                    raise PipelineError(outcome.message)
                log.error("%s", outcome.message)
                continue
            if outcome.status == "partial":
                log.warning("%s: %s", job.video, outcome.message)
            if doc is None:   # skipped: the up-to-date result, read back
                yield dataclasses.replace(Result.load(job.out, job.video), skipped=True)
            else:
                yield Result(doc, job.video, self.analyzer.face.detector)


def analyze(video: str | Path, *, transcript: str | Path | None = None, config: str | Path | None = None,
            **settings: Any) -> Result:
    """Analyse one video with models loaded for this call (use ``Session`` for several videos).
    With a ``transcript`` file, Whisper is not loaded (unless ``whisper_model`` is given)."""
    if transcript is not None:
        settings.setdefault("whisper_model", "none")
    return Session(config, **settings).analyze(video, transcript=transcript)


def analyze_many(videos: Iterable[str | Path], *, config: str | Path | None = None, skip_errors: bool = False,
                 out: str | Path | None = None, formats: Iterable[str] | str = ("json",), force: bool = False,
                 strict: bool = False, **settings: Any) -> Iterator[Result]:
    """Analyse several videos, loading the models once (``out`` etc.: see ``Session.analyze_many``)."""
    return Session(config, **settings).analyze_many(videos, skip_errors=skip_errors, out=out, formats=formats,
                                                    force=force, strict=strict)


__all__ = ["Result", "Session", "analyze", "analyze_many"]

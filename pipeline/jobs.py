"""The per-video job, written once: what ``analyze`` on the command line and ``Session.analyze_many``
in the Python API both do around the analysis itself.

    analysis_config(path, overrides)   the settings: AnalyzeConfig's defaults (the one source; the
                                       file configs/analyze.yaml lists the same values, a test keeps
                                       them equal), a YAML file over them, then ``key=value`` overrides
    collect(paths, manifests, out_dir) files, folders, globs and manifests -> (video, base folder);
                                       what this project wrote (a results folder inside the input
                                       folder, annotated MP4s and PNGs beside their JSON) left out
    prepare(videos, cfg, request)      before any model loads: one output per video, each checked
                                       (writable; never an input; an output of another video refused
                                       unless ``force``; up to date: skipped, and the formats missing
                                       beside it made from its JSON); a transcript parsed and bounded
                                       by what the video can hold
    Prepared.early / Prepared.todo     the outcomes known before analysing / the jobs left to analyse

Errors are one line naming the file (``errors.one_line``); the caller prints them (the command
line) or logs or raises them (the API).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from emotion_pipeline import batch, config, exports, preflight
from emotion_pipeline.config import AnalyzeConfig
from emotion_pipeline.errors import InputError, PipelineError, one_line
from emotion_pipeline.fileio import read_bounded
from emotion_pipeline.preflight import Job

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = frozenset({
    ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ogv", ".y4m",
    ".ts", ".mts", ".m2ts", ".mxf",
    ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".aac", ".mka", ".weba",
    ".jpg", ".jpeg", ".png"})
# Found in a folder but not analysed from it, with a word: playlists (their segments are analysed
# one by one instead, or the playlist given by name) and raw elementary streams (no container, no
# timestamps: give them by name, or remux them into .mkv).
NOT_SCANNED_SUFFIXES = frozenset({".m3u8", ".m3u", ".h264", ".264", ".h265", ".265", ".hevc", ".m2v", ".ivf"})
# Outputs of ours that are also media: an annotated MP4 or a timeline PNG beside its JSON.
OUR_MEDIA_FORMATS = frozenset({".mp4", ".png"})
MAX_TIMELINE_BYTES = 256 << 20     # a timeline JSON read back (an hour is ~20 MB)

# What a transcript for a video of D seconds can hold: fast speech is ~4 words/s; subtitles
# rarely change more than twice a second. Anything far past that is not a transcript of it.
TRANSCRIPT_SLACK_BYTES = 256 << 10
TRANSCRIPT_BYTES_PER_S = 2_000
TRANSCRIPT_SEGMENTS_PER_S = 4
TRANSCRIPT_WORDS_PER_S = 12
TRANSCRIPT_SLACK_ITEMS = 100
TRANSCRIPT_UNBOUNDED_S = 4 * 3600   # a video whose length is unknown: bounded as four hours
TRANSCRIPT_END_SLACK_S = 1.0        # cues may overrun the video's end by this much


def analysis_config(path: str | Path | None, overrides: Iterable[str] = (), *, label: str = "--set") -> AnalyzeConfig:
    """The analysis settings, the same for the command line and the API: AnalyzeConfig's defaults
    (shipped in the package, so an installed wheel runs on the same settings as a checkout), the
    YAML file ``path`` over them, then ``key=value`` overrides; checked before anything loads."""
    cfg = config.load(AnalyzeConfig, path, list(overrides), label=label)
    check_model_files(cfg)
    return cfg


MODEL_SETTINGS = ("face_model", "audio_model", "text_model", "fusion_head", "whisper_model", "face_detector",
                  "face_expert")
MODEL_FILE_SUFFIXES = (".safetensors", ".onnx", ".pt", ".bin")


def check_model_files(cfg: AnalyzeConfig) -> None:
    """ConfigError, before anything loads, for a model setting that names a file or folder that
    is not there (``fusion_head=/missing.safetensors``): a model asked for by path never falls
    back to another in silence. Registry names and hub ids (``org/repo``) are left to the loader."""
    for key in MODEL_SETTINGS:
        if (key == "fusion_head" and cfg.fusion == "average") or (key == "face_expert" and cfg.face_expression == "off"):
            continue
        value = str(getattr(cfg, key))
        looks_like_path = (os.path.isabs(value) or value.startswith(("./", "../", "~"))
                           or Path(value).suffix.lower() in MODEL_FILE_SUFFIXES)
        if looks_like_path and not Path(value).expanduser().exists():
            raise config.ConfigError(f"{key}={value}: no such file or folder")


# ------------------------------------------------------------------ inputs
def _real(path: str | Path) -> str:
    return os.path.realpath(path)


def _timeline_input(json_path: Path) -> str | None:
    """The ``input.path`` a timeline JSON records, or None when the file is not one of ours."""
    try:
        if json_path.stat().st_size > MAX_TIMELINE_BYTES:
            return None
        doc = json.loads(json_path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or "schema_version" not in doc or "timeline" not in doc:
        return None
    recorded = doc.get("input") if isinstance(doc.get("input"), dict) else {}
    path = recorded.get("path") or (doc.get("video") or {}).get("path")
    return path if isinstance(path, str) else None


def is_our_output(path: Path) -> bool:
    """An annotated MP4 or timeline PNG this project wrote: a ``.mp4``/``.png`` beside a timeline
    JSON of the same stem that records another file as its input."""
    if path.suffix.lower() not in OUR_MEDIA_FORMATS:
        return False
    recorded = _timeline_input(path.with_suffix(".json"))
    if recorded is None:
        return False
    try:
        return not os.path.samefile(recorded, path)
    except OSError:
        return _real(recorded) != _real(path)


def _scan(found: Iterable[Path], where: Path, out_dir: Path | None) -> list[Path]:
    """The media files of ``found``, minus the results folder (when it lies inside ``where``) and
    our own outputs; the others are named in one warning line."""
    out_real = _real(out_dir) if out_dir is not None else None
    inside = out_real is not None and out_real != _real(where) and Path(out_real).is_relative_to(_real(where))
    keep, ours, other = [], 0, []
    for f in found:
        if not f.is_file():
            continue
        if inside and Path(_real(f)).is_relative_to(out_real):
            ours += 1
            continue
        suffix = f.suffix.lower()
        if suffix in NOT_SCANNED_SUFFIXES:
            other.append(f.name)
        elif suffix in MEDIA_SUFFIXES:
            if is_our_output(f):
                ours += 1
            else:
                keep.append(f)
    if ours:
        log.info("%s: %d file(s) of earlier results left out (the output folder, annotated videos and plots)",
                 where, ours)
    if other:
        log.warning("%s: not analysed from the folder (playlists and raw streams; give them by name): %s",
                    where, ", ".join(sorted(other)[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else ""))
    return sorted(keep)


def collect(paths: Iterable[str | Path], manifests: Iterable[str | Path] = (),
            out_dir: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(video, the folder its output path is relative to), each file once. Files as given (their
    own folder); folders expanded to the media files inside them, recursively, sorted (the folder
    given); glob patterns (``'talks/**/*.mp4'``, quoted so the shell leaves them) expanded (the
    folder before the first wildcard); manifests read (one path per line, or a CSV ``path``
    column). Inside folders and globs, the output folder and our own outputs are left out. The
    same file named twice (``a/../b/x.mp4`` and its absolute path) is analysed once."""
    out_dir = Path(out_dir) if out_dir is not None else None
    out: list[tuple[Path, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = _scan(p.rglob("*"), p, out_dir)
            if not found:
                log.warning("%s: folder holds no media files", p)
            out.extend((f, p) for f in found)
        elif not p.exists() and glob.has_magic(str(p)):
            wild = next(i for i, x in enumerate(p.parts) if glob.has_magic(x))
            base = Path(*p.parts[:wild]) if wild else Path(".")
            if ".." in p.parts[wild:]:
                raise PipelineError(f"{p}: '..' after a wildcard is not supported; put the folder before the wildcard")
            found = _scan((Path(f) for f in glob.glob(str(p), recursive=True)), base, out_dir)
            if not found:
                log.warning("%s: no file matches", p)
            out.extend((f, base) for f in found)
        else:
            out.append((p, p.parent))  # a missing file is reported by the run, with the others
    for m in manifests:   # structure kept relative to the manifest's folder
        folder = os.path.abspath(Path(m).parent)
        out.extend((v, Path(m).parent if Path(os.path.abspath(v)).is_relative_to(folder) else v.parent)
                   for v in batch.read_manifest(m))
    unique: dict[str, tuple[Path, Path]] = {}
    for v, base in out:
        unique.setdefault(_real(v), (v, base))
    return list(unique.values())


# ------------------------------------------------------------------ transcripts
def check_transcript(transcript: str | Path, video: str | Path | None = None):
    """Parse and check a transcript file before any model loads, bounded by what ``video`` can hold
    (bytes, segments and words per second of its duration): InputError, one line, otherwise.
    Returns the parsed Transcript."""
    from emotion_pipeline import demux

    transcript = Path(transcript)
    duration = None
    if video is not None and Path(video).is_file():
        try:
            duration = demux.probe(video).duration_s
        except PipelineError:
            duration = None       # the video's own problem is reported with it
    span = duration if duration and duration > 0 else TRANSCRIPT_UNBOUNDED_S
    try:
        read_bounded(transcript, TRANSCRIPT_SLACK_BYTES + int(TRANSCRIPT_BYTES_PER_S * span),
                     f"a transcript for {span:.0f} s of video")
    except OSError as e:
        raise InputError(f"{transcript}: cannot read the transcript ({e.strerror or e})") from e
    tr = preflight.load_transcript(transcript)
    n_words = sum(len(s.words) for s in tr.segments)
    for what, n, per_s in (("segments", len(tr.segments), TRANSCRIPT_SEGMENTS_PER_S),
                           ("words", n_words, TRANSCRIPT_WORDS_PER_S)):
        limit = TRANSCRIPT_SLACK_ITEMS + int(per_s * span)
        if n > limit:
            raise InputError(f"{transcript}: {n:,} {what} for {span:.0f} s of video (at most {limit:,})")
    if duration and tr.segments and min(s.start_s for s in tr.segments) > duration + TRANSCRIPT_END_SLACK_S:
        raise InputError(f"{transcript}: every cue starts after the video's end ({duration:.1f} s); "
                         f"is it the transcript of this video?")
    return tr


# ------------------------------------------------------------------ planning
@dataclass(frozen=True)
class Request:
    """What is asked of a batch, besides the analysis settings."""
    out_dir: Path
    formats: tuple[str, ...] = ("json",)      # pipeline.exports.FORMATS; json always
    transcript: str | None = None            # a transcript file (one video only)
    force: bool = False                      # re-analyse up-to-date videos, replace other videos' outputs
    strict: bool = False                     # a partial result is a failure
    shard: tuple[int, int] | None = None     # (i, n): only shard i of n
    blur_faces: bool = False                 # the annotated MP4 blurs every face (an existing one is made again)


@dataclass
class Prepared:
    """A batch planned before any model loads."""
    cfg: AnalyzeConfig                       # the settings the analysis runs with
    settings: str                            # preflight.settings_key of them
    options: batch.Options
    jobs: list[Job]                          # every job of this shard, in order
    early: dict[int, batch.Outcome] = field(default_factory=dict)   # index -> failed or skipped now
    todo: list[tuple[int, Job]] = field(default_factory=list)       # index, job left to analyse


def prepare(videos: list[tuple[Path, Path]], cfg: AnalyzeConfig, request: Request) -> Prepared:
    """Plan a batch: settings key, outputs, and every check that needs no model. Raises
    PipelineError for what stops the whole run (no videos, a bad transcript); a problem of one
    video becomes its failed Outcome in ``early``."""
    if not videos:
        raise PipelineError("no videos to analyse")
    formats = exports.parse_formats(request.formats)
    if request.transcript:
        if len(videos) > 1:
            raise PipelineError("--transcript applies to one video; give one video with it")
        check_transcript(request.transcript, videos[0][0])   # a bad transcript fails now, not after the analysis
        cfg = dataclasses.replace(cfg, whisper_model="none")   # the words are given: no ASR model to load
    settings = preflight.settings_key(cfg, request.transcript)
    options = batch.Options(transcript=request.transcript, strict=request.strict, formats=formats,
                            blur_faces=request.blur_faces)
    jobs = batch.shard_of(preflight.plan(videos, request.out_dir), request.shard)
    inputs = {_real(v) for v, _ in videos} | ({_real(request.transcript)} if request.transcript else set())
    prepared = Prepared(cfg, settings, options, jobs)
    writable: set[Path] = set()
    for k, job in enumerate(jobs):
        existing = preflight.existing_result(job)
        try:
            preflight.check_output(job, writable)
            exports.check_not_source(job.video, job.out, formats, inputs)
            if not job.video.exists():
                raise InputError(f"{job.video}: no such file")
            preflight.check_owner(job, existing, force=request.force)
        except PipelineError as e:
            prepared.early[k] = batch.failed(job, one_line(job.video, e))
            continue
        if not request.force and preflight.up_to_date(job, existing, settings):
            log.info("%s: up to date (same file, settings and models), skipped", job.out)
            prepared.early[k] = batch.skipped(job, existing)
            try:   # formats asked for now but not made then: from the JSON, without analysing again
                for fmt, path in exports.complete_existing(job.video, job.out, formats,
                                                           blur_faces=request.blur_faces).items():
                    log.info("%s: made %s from the up-to-date timeline", job.out, path)
            except Exception as e:   # one video's problem, never the batch's
                log.debug("%s: making the missing formats failed", job.out, exc_info=True)
                prepared.early[k] = batch.failed(job, one_line(job.video, e))
            continue
        prepared.todo.append((k, job))
    return prepared


def counts(outcomes: Iterable[batch.Outcome]) -> dict[str, int]:
    rows = list(outcomes)
    return {s: sum(o.status == s for o in rows) for s in ("ok", "partial", "skipped", "failed")}

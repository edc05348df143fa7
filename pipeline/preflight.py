"""Checks that run before any model loads: where each result goes, whether it is up to date,
whether the output locations can be written, whether a transcript file makes sense, whether
the configured device exists. Cheap (no torch import except for a CUDA check), so a re-run of a
finished batch, a typo in a setting or an unwritable output folder is answered in a second.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_pipeline.config import AnalyzeConfig, to_dict
from emotion_pipeline.errors import ConfigError, InputError, PipelineError
from emotion_pipeline.fileio import json_digest
from emotion_pipeline.records import Transcript

# Settings that change how a run looks or reaches the network, never what it finds: left out of
# the key that decides whether an existing result is up to date. (``device``: CPU and GPU give
# the same labels; float differences in the fourth decimal are not worth a re-run.)
NOT_RESULT_SETTINGS = frozenset({"progress", "offline", "device"})
WORD_OUTSIDE_SEGMENT_S = 1.0  # a word may overrun its segment by this much (recognisers' timings drift); no further
NAME_MAX_BYTES = 255          # longest file name on ext4, XFS, APFS, NTFS (in UTF-16 units there)


@dataclass(frozen=True)
class Job:
    video: Path                  # as given (or found in a folder)
    out: Path                    # OUT/<path relative to the inputs' common folder>/<stem>.json


def _name_ok(name: str) -> bool:
    return len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX_BYTES


def plan(videos: list[tuple[Path, Path]], out_dir: str | Path) -> list[Job]:
    """One output per video that can never collide. ``videos`` holds (video, base folder): a
    folder given on the command line keeps its structure under ``out_dir``
    (``OUT/<path inside it>/<stem>.json``), a file given alone goes to ``OUT/<stem>.json``.
    Videos that would still share an output (``a/clip.mp4`` and ``b/clip.mp4``) keep their
    folders relative to the folder they share (``OUT/a/clip.json``); two in one folder that
    differ only in extension keep it (``clip.mp4.json``)."""
    out_dir = Path(out_dir)
    absolute = [Path(os.path.abspath(v)) for v, _ in videos]
    rel_dirs = [a.parent.relative_to(os.path.abspath(base)) for a, (_, base) in zip(absolute, videos)]
    outs = [out_dir / r / f"{a.stem}.json" for r, a in zip(rel_dirs, absolute)]
    groups: dict[Path, list[int]] = {}
    for i, o in enumerate(outs):
        groups.setdefault(o, []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        common = os.path.commonpath([str(absolute[i].parent) for i in members])
        for i in members:
            outs[i] = out_dir / rel_dirs[i] / absolute[i].parent.relative_to(common) / f"{absolute[i].stem}.json"
        names: dict[Path, int] = {}
        for i in members:
            names[outs[i]] = names.get(outs[i], 0) + 1
        for i in members:
            if names[outs[i]] > 1:
                outs[i] = outs[i].with_name(f"{absolute[i].name}.json")
    return [Job(v, o) for (v, _), o in zip(videos, outs)]


def check_output(job: Job, writable: set[Path] | None = None) -> None:
    """Raise InputError (naming the output) when the result could not be written there.
    ``writable``: folders already shown writable in this run (each is tried once, not per video)."""
    out = job.out
    if not _name_ok(out.name):
        raise InputError(f"{job.video}: output name {out.name[:40]}...json is longer than {NAME_MAX_BYTES} bytes; "
                         f"rename the video")
    if out.is_dir():
        raise InputError(f"{job.video}: output path {out} is a folder")
    folder = out.parent
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{job.video}: output folder {folder}: {probe} is a file, not a folder")
    if writable is not None and folder in writable:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", suffix=".part", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(f"{job.video}: cannot write to output folder {folder} ({e.strerror or e})") from e
    if writable is not None:
        writable.add(folder)


def existing_result(job: Job) -> dict[str, Any] | None:
    """The timeline already at ``job.out`` (None when there is none or it is not ours); read once
    per video for the ownership and up-to-date checks and the summary row."""
    try:
        doc = json.loads(job.out.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def check_owner(job: Job, existing: dict[str, Any] | None, force: bool = False) -> None:
    """An existing output made from another video (``a/clip.mp4`` analysed into the folder that
    holds ``b/clip.mp4``'s result by an earlier run) is never overwritten silently: InputError,
    unless ``force``. An unreadable file is not a result of ours: replaced like any stale file."""
    if force or existing is None:
        return
    owner = (existing.get("input") or {}).get("path") if isinstance(existing.get("input"), dict) else None
    if owner and owner != os.path.abspath(job.video):
        raise InputError(f"{job.video}: {job.out} holds the result of another video ({owner}); "
                         f"use another --out, or --force to replace it")


def video_identity(path: str | Path) -> dict[str, Any]:
    """What identifies a video file without reading it: absolute path, size, modification time."""
    st = Path(path).stat()
    return {"path": os.path.abspath(path), "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def settings_key(cfg: AnalyzeConfig, transcript_file: str | Path | None = None) -> str:
    """Hash of everything that changes results: the result-relevant settings, the pipeline's
    version, the shipped weights' recorded checksums, and the transcript file given (if any)."""
    from emotion_pipeline import __version__

    settings = {k: v for k, v in to_dict(cfg).items() if k not in NOT_RESULT_SETTINGS}
    # the package's own file (importlib.resources: the same in a checkout and an installed wheel;
    # emotion_pipeline.models imports no torch)
    checksums_file = importlib.resources.files("emotion_pipeline.models").joinpath("weights", "checksums.json")
    try:
        checksums = json.loads(checksums_file.read_text())
    except (OSError, ValueError):
        checksums = None
    material = {"settings": settings, "pipeline": __version__, "weights": checksums,
                "transcript": video_identity(transcript_file) if transcript_file else None}
    return json_digest(material)


def skip_key(video: str | Path, settings: str) -> str:
    material = json.dumps({"video": video_identity(video), "settings": settings}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def up_to_date(job: Job, existing: dict[str, Any] | None, settings: str) -> bool:
    """True when ``existing`` (the output at ``job.out``) is the result of this very file (same
    path, size, mtime) made with the same result-relevant settings and models."""
    key = existing.get("skip_key") if existing is not None else None
    return key is not None and key == skip_key(job.video, settings)


def _finite_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def check_transcript(tr: Transcript, path: str | Path) -> Transcript:
    """A parsed transcript whose times are finite, non-negative and ordered, texts strings and the
    language a short code; InputError naming the file and the first problem otherwise."""
    if tr.language is not None and not (isinstance(tr.language, str) and 1 <= len(tr.language) <= 16):
        raise InputError(f"{path}: 'language' must be a language code such as \"en\", got {tr.language!r}")
    for i, seg in enumerate(tr.segments):
        if not (_finite_time(seg.start_s) and _finite_time(seg.end_s) and seg.end_s >= seg.start_s):
            raise InputError(f"{path}: segment {i} has bad times start_s={seg.start_s!r}, end_s={seg.end_s!r} "
                             f"(finite, >= 0, end after start)")
        if not isinstance(seg.text, str):
            raise InputError(f"{path}: segment {i} text is not a string")
        for w in seg.words:
            if not (_finite_time(w.start_s) and _finite_time(w.end_s) and w.end_s >= w.start_s):
                raise InputError(f"{path}: segment {i} has a word with bad times start_s={w.start_s!r}, "
                                 f"end_s={w.end_s!r}")
            if w.start_s < seg.start_s - WORD_OUTSIDE_SEGMENT_S or w.end_s > seg.end_s + WORD_OUTSIDE_SEGMENT_S:
                raise InputError(f"{path}: segment {i} ({seg.start_s:g}-{seg.end_s:g} s) has a word outside it "
                                 f"({w.text!r} at {w.start_s:g}-{w.end_s:g} s)")
    return tr


def load_transcript(path: str | Path) -> Transcript:
    """Parse and validate a transcript file up front; every failure is one InputError line."""
    from emotion_pipeline.transcribe.subtitles import parse_subtitles

    try:
        tr = parse_subtitles(path)
    except PipelineError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError) as e:
        raise InputError(f"{path}: unreadable transcript ({type(e).__name__}: {e})") from e
    return check_transcript(tr, path)


def select_device(spec: str = "auto"):
    """The torch device for a ``device`` setting: ``auto`` picks CUDA when present; anything else
    is checked to exist here first (ConfigError, one line). Used by analysis and training."""
    import torch

    check_device(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def check_device(spec: str) -> None:
    """ConfigError when the configured device does not exist on this machine."""
    kind = spec.split(":")[0]
    if kind in ("auto", "cpu"):
        return
    import torch

    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec}: no CUDA device on this machine (torch {torch.__version__}); "
                              f"use device=auto or device=cpu")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"device={spec}: no Apple MPS device on this machine")

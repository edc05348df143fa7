"""Labelled video clips (fusion training, ``evaluate clips``): a manifest and adapters for common corpora.

Every adapter yields ``Clip(path, label, split, speaker)``; labels go through pipeline.labels.
- ``csv``: a file with columns ``path,label[,split][,speaker]`` (paths relative to the file);
- ``ravdess``: a folder of RAVDESS audio-visual files (``01-01-EE-II-SS-RR-AA.mp4`` / ``02-...``);
- ``mead``: a folder of MEAD clips named ``<actor>_<view>_<emotion>_level<k>_<nnn>.mp4``;
- ``meld``: a MELD CSV (Dialogue_ID, Utterance_ID, Emotion, Speaker) with its clips
  ``dia{D}_utt{U}.mp4`` in the CSV's folder or a ``clips`` sub-folder.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from emotion_pipeline.corpora.manifest import labelled_csv
from emotion_pipeline.errors import InputError
from emotion_pipeline.labels import UnknownLabelError, canonical, mead_label, ravdess_fields

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm")


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    split: str | None = None     # "train" / "val" when the manifest says; else decided by speaker
    speaker: str | None = None


def _csv_clips(path: Path) -> list[Clip]:
    return [Clip(clip, label, row.get("split") or None, row.get("speaker") or None)
            for clip, label, row in labelled_csv(path)]


def _ravdess_clips(folder: Path) -> list[Clip]:
    clips = []
    for f in sorted(folder.rglob("*")):
        fields = ravdess_fields(f.stem) if f.suffix.lower() in VIDEO_EXTS else None
        if fields and fields["modality"] in ("01", "02"):   # 01 audio-visual, 02 video-only
            clips.append(Clip(f, fields["label"], None, f"actor{fields['actor']}"))
    return clips


def mead_files(folder: Path) -> list[tuple[Path, str | None]]:
    """MEAD-named clips under ``folder`` with their label (None: no Ekman class, i.e. contempt);
    files whose names carry no MEAD emotion are left out."""
    out = []
    for f in sorted(Path(folder).rglob("*.mp4")):
        try:
            out.append((f, mead_label(f.name)))
        except (UnknownLabelError, IndexError):
            continue
    return out


def _mead_clips(folder: Path) -> list[Clip]:
    return [Clip(f, label, None, f.name.split("_")[0]) for f, label in mead_files(folder) if label is not None]


def _meld_clips(path: Path) -> list[Clip]:
    clips = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = canonical(row["Emotion"])
            name = f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4"
            for folder in (path.parent, path.parent / "clips"):
                if (folder / name).exists() and label is not None:
                    clips.append(Clip(folder / name, label, None, f"dia{row['Dialogue_ID']}"))
                    break
    return clips


ADAPTERS = {"csv": _csv_clips, "ravdess": _ravdess_clips, "mead": _mead_clips, "meld": _meld_clips}


def read_clips(source: str | Path, adapter: str) -> list[Clip]:
    source = Path(source)
    if adapter not in ADAPTERS:
        raise InputError(f"unknown manifest adapter {adapter!r}; known: {', '.join(ADAPTERS)}")
    if not source.exists():
        raise InputError(f"{source}: manifest or clip folder not found")
    clips = ADAPTERS[adapter](source)
    if not clips:
        raise InputError(f"{source}: no labelled clips found with the {adapter!r} adapter")
    return clips

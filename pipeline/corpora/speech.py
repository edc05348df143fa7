"""Labelled and transcribed speech: RAVDESS-named files (``03-01-EE-II-SS-RR-AA.flac|wav``, any depth, symlinks
followed), TESS folders (``<speaker>_<emotion>/*.wav|flac``), and path,label CSV manifests."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emotion_pipeline.corpora.manifest import labelled_csv, manifest_rows
from emotion_pipeline.errors import bad_file
from emotion_pipeline.labels import LABEL_INDEX, UnknownLabelError, ravdess_fields, tess_label

AUDIO_SUFFIXES = (".flac", ".wav")
# what is said in each file, for word error rates (pipeline.evaluate.asr)
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
TESS_CARRIER = "Say the word {}"


@dataclass(frozen=True)
class SpeechItem:
    path: Path
    label: str                 # one of LABELS
    speaker: str               # "ravdess_actor07", "tess_OAF"
    emotion8: str | None = None  # RAVDESS's own eight-class name (calm kept), None for TESS
    actor: int | None = None     # RAVDESS actor number (1-24), None for TESS


def speech_files(root: Path) -> list[Path]:
    paths = [Path(d) / f for d, _, files in os.walk(root, followlinks=True) for f in files]
    return sorted(p for p in paths if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def speech_items(root: str | Path) -> list[SpeechItem]:
    items = []
    for path in speech_files(Path(root)):
        fields = ravdess_fields(path.stem)
        if fields is not None:
            items.append(SpeechItem(path, fields["label"], f"ravdess_actor{fields['actor']}", fields["emotion8"],
                                    int(fields["actor"])))
            continue
        folder = path.parent.name
        if "_" in folder:
            try:
                label = tess_label(folder)
            except UnknownLabelError:
                continue
            if label is not None:
                items.append(SpeechItem(path, label, f"tess_{folder.split('_')[0]}"))
    return items


def labelled_audio(data: str | Path) -> tuple[list[tuple[Path, int]], str]:
    """((audio path, label index) pairs, format 'ravdess-folder' | 'csv') of a folder of
    RAVDESS-named files or a path,label CSV; DataError when unusable."""
    data = Path(data)
    if data.is_dir():
        items = [(it.path, LABEL_INDEX[it.label]) for it in speech_items(data) if it.emotion8 is not None]
        if not items:
            raise bad_file(data, "no RAVDESS-named audio files (03-01-EE-II-SS-RR-AA.flac|wav) in this folder")
        return items, "ravdess-folder"
    if data.is_file() and data.suffix.lower() == ".csv":
        items = [(audio, LABEL_INDEX[label]) for audio, label, _ in labelled_csv(data)]
        if not items:
            raise bad_file(data, "the manifest has no labelled rows")
        return items, "csv"
    if data.exists():
        raise bad_file(data, "expected a folder of RAVDESS-named audio or a .csv manifest (path,label)")
    raise bad_file(data, "no such file or folder")


def transcribed_speech(data: str | Path) -> tuple[list[tuple[Path, str]], str]:
    """((audio path, reference text) pairs, format); DataError naming the file when unusable."""
    data = Path(data)
    if data.is_dir():
        pairs, formats = [], set()
        for item in speech_items(data):
            fields = ravdess_fields(item.path.stem)
            if fields is not None:
                if fields["statement"] in RAVDESS_STATEMENTS:
                    pairs.append((item.path, RAVDESS_STATEMENTS[fields["statement"]]))
                    formats.add("ravdess-folder")
                continue
            parts = item.path.stem.split("_")
            if len(parts) >= 3:   # TESS: <speaker>_<word>_<emotion>
                pairs.append((item.path, TESS_CARRIER.format(parts[1])))
                formats.add("tess-folder")
        if not pairs:
            raise bad_file(data, "no RAVDESS-named or TESS-named speech files in this folder")
        return pairs, "+".join(sorted(formats))
    if data.is_file() and data.suffix.lower() == ".csv":
        pairs = [(item, (row["text"] or "").strip()) for _, item, row in manifest_rows(data, ("text",))]
        if not pairs:
            raise bad_file(data, "the manifest has no rows")
        return pairs, "csv"
    if data.exists():
        raise bad_file(data, "expected a RAVDESS or TESS folder, or a .csv manifest (path,text)")
    raise bad_file(data, "no such file or folder")

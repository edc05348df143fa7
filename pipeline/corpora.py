"""Reading labelled corpora from disk: one reader per layout, shared by training, evaluation and
fusion features (labels always go through pipeline.labels).

- ``speech_items(root)``: audio files named the RAVDESS way (``03-01-EE-II-SS-RR-AA.flac|wav``,
  any depth, symlinks followed) or in TESS folders (``<speaker>_<emotion>/*.wav|flac``);
- ``labelled_csv(path)``: a ``path,label[,...]`` manifest (relative paths resolved against its
  folder; labels in any spelling ``canonical`` knows; rows with no Ekman class dropped).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.labels import canonical, ravdess_fields, tess_label, UnknownLabelError

AUDIO_SUFFIXES = (".flac", ".wav")


@dataclass(frozen=True)
class SpeechItem:
    path: Path
    label: str                 # one of LABELS
    speaker: str               # "ravdess_actor07", "tess_OAF"
    emotion8: str | None = None  # RAVDESS's own eight-class name (calm kept), None for TESS


def _files(root: Path) -> list[Path]:
    paths = [Path(d) / f for d, _, files in os.walk(root, followlinks=True) for f in files]
    return sorted(p for p in paths if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def speech_items(root: str | Path) -> list[SpeechItem]:
    items = []
    for path in _files(Path(root)):
        fields = ravdess_fields(path.stem)
        if fields is not None:
            items.append(SpeechItem(path, fields["label"], f"ravdess_actor{fields['actor']}", fields["emotion8"]))
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


def labelled_csv(path: str | Path) -> list[tuple[Path, str, dict[str, str]]]:
    """(resolved path, canonical label, the whole row) per usable row; ValueError naming the file."""
    path = Path(path)
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            header = [c.strip().lstrip("\ufeff").lower() for c in (reader.fieldnames or [])]
            if "path" not in header or "label" not in header:
                raise ValueError(f"{path}: a manifest needs columns path,label (found {','.join(header) or 'none'})")
            reader.fieldnames = header
            for line_no, row in enumerate(reader, 2):
                try:
                    label = canonical(row["label"] or "")
                except UnknownLabelError:
                    raise ValueError(f"{path}:{line_no}: unknown emotion label {row['label']!r}") from None
                if label is None:
                    continue
                item = Path((row["path"] or "").strip())
                rows.append((item if item.is_absolute() else path.parent / item, label, row))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    return rows

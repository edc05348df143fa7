"""A ``path,label[,...]`` manifest (paths relative to the file; labels in any spelling
``pipeline.labels.canonical`` knows; rows with no Ekman class dropped)."""
from __future__ import annotations

import csv
from pathlib import Path

from emotion_pipeline.errors import bad_file
from emotion_pipeline.labels import UnknownLabelError, canonical


def labelled_csv(path: str | Path) -> list[tuple[Path, str, dict[str, str]]]:
    """(resolved path, canonical label, the whole row) per usable row; DataError naming the file."""
    path = Path(path)
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            header = [c.strip().lstrip("\ufeff").lower() for c in (reader.fieldnames or [])]
            if "path" not in header or "label" not in header:
                raise bad_file(path, f"a manifest needs columns path,label (found {','.join(header) or 'none'})")
            reader.fieldnames = header
            for line_no, row in enumerate(reader, 2):
                try:
                    label = canonical(row["label"] or "")
                except UnknownLabelError as exc:
                    raise bad_file(f"{path}:{line_no}", f"unknown emotion label {row['label']!r}") from exc
                if label is None:
                    continue
                item = Path((row["path"] or "").strip())
                rows.append((item if item.is_absolute() else path.parent / item, label, row))
    except OSError as exc:
        raise bad_file(path, f"cannot read ({exc.strerror})") from exc
    return rows

"""A ``path,label[,...]`` manifest (paths relative to the file; labels in any spelling
``pipeline.labels.canonical`` knows; rows with no Ekman class dropped), and the same reader for
any ``path,<columns>`` CSV."""
from __future__ import annotations

import csv
from pathlib import Path

from emotion_pipeline.errors import bad_file
from emotion_pipeline.labels import UnknownLabelError, canonical


def manifest_rows(path: str | Path, columns: tuple[str, ...]) -> list[tuple[int, Path, dict[str, str]]]:
    """(line number, the row's path resolved against the CSV's folder, the whole row) of a CSV with
    at least ``path`` and ``columns`` (header case and a BOM ignored); DataError naming the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            header = [c.strip().lstrip("\ufeff").lower() for c in (reader.fieldnames or [])]
            if any(c not in header for c in ("path", *columns)):
                raise bad_file(path, f"a manifest needs columns {','.join(('path', *columns))} "
                                     f"(found {','.join(header) or 'none'})")
            reader.fieldnames = header
            rows = []
            for line_no, row in enumerate(reader, 2):
                item = Path((row["path"] or "").strip())
                rows.append((line_no, item if item.is_absolute() else path.parent / item, row))
            return rows
    except OSError as exc:
        raise bad_file(path, f"cannot read ({exc.strerror})") from exc


def labelled_csv(path: str | Path) -> list[tuple[Path, str, dict[str, str]]]:
    """(resolved path, canonical label, the whole row) per usable row; DataError naming the file."""
    rows = []
    for line_no, item, row in manifest_rows(path, ("label",)):
        try:
            label = canonical(row["label"] or "")
        except UnknownLabelError as exc:
            raise bad_file(f"{path}:{line_no}", f"unknown emotion label {row['label']!r}") from exc
        if label is not None:
            rows.append((item, label, row))
    return rows

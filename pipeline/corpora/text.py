"""Labelled text files: ``read_grouped`` / ``read_examples`` (texts, label indices into LABELS).

Three file formats are recognised (``detect_format``), all mapped onto LABELS with
``pipeline.labels.canonical``; rows whose label has no Ekman class (dair-ai "love") are dropped:

* MELD CSV: a header with ``Utterance`` and ``Emotion`` columns (other columns ignored).
* GoEmotions TSV: ``text \\t comma-separated label ids \\t comment id``, no header, with
  ``labels.txt`` (one name per line, line number = id) in the same folder. Multi-label rows
  whose labels map to more than one of our classes are *skipped* (ambiguous; 480 of the
  5,426 Ekman dev rows), so every kept row has exactly one gold class.
* dair-ai emotion: ``text;label`` lines after a ``text;label_name`` (or ``text;label``) header.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from emotion_pipeline.errors import bad_file
from emotion_pipeline.labels import LABEL_INDEX, canonical

log = logging.getLogger(__name__)



def detect_format(path: str | Path) -> str:
    """'meld', 'goemotions' or 'dair' from the file's first line; DataError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise bad_file(path, "no such file")
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            first = fh.readline().strip("\r\n").lstrip("\ufeff")
    except OSError as exc:
        raise bad_file(path, f"cannot read ({exc.strerror})") from exc
    header = [c.strip() for c in next(csv.reader([first]), [])]
    if "Utterance" in header and "Emotion" in header:
        return "meld"
    if first.lower().replace(" ", "") in ("text;label_name", "text;label"):
        return "dair"
    fields = first.split("\t")
    if len(fields) in (2, 3) and all(x.strip().isdigit() for x in fields[1].split(",")) and fields[1].strip():
        if not (path.parent / "labels.txt").is_file():
            raise bad_file(path, "looks like GoEmotions TSV but labels.txt is missing beside it")
        return "goemotions"
    raise bad_file(path, "unrecognised format (expected a MELD CSV, a GoEmotions TSV or a dair-ai 'text;label' file)")


def _meld(path: Path) -> tuple[list[str], list[str], list[str]]:
    texts, names, dialogues = [], [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for row in csv.DictReader(fh):
            texts.append(row["Utterance"])
            names.append(row["Emotion"])
            dialogues.append(f"dia{row.get('Dialogue_ID', len(dialogues))}")
    return texts, names, dialogues


def _goemotions(path: Path) -> tuple[list[str], list[str], list[str]]:
    id_names = [l.strip() for l in (path.parent / "labels.txt").read_text().splitlines() if l.strip()]
    texts, names, skipped = [], [], 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 2:
                continue
            try:
                ids = [int(x) for x in fields[1].split(",")]
                mapped = {canonical(id_names[i]) for i in ids}
            except (ValueError, IndexError) as exc:
                raise bad_file(path, f"line {line_no}: bad label ids {fields[1]!r}") from exc
            mapped.discard(None)
            if len(mapped) != 1:
                skipped += 1
                continue
            texts.append(fields[0])
            names.append(mapped.pop())
    log.info("%s: skipped %d multi-label rows with more than one class", path.name, skipped)
    return texts, names, [f"row{i}" for i in range(len(texts))]


def _dair(path: Path) -> tuple[list[str], list[str], list[str]]:
    texts, names = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        next(fh)  # header
        for line in fh:
            text, sep, label = line.rstrip("\r\n").rpartition(";")
            if sep:
                texts.append(text)
                names.append(label)
    return texts, names, [f"row{i}" for i in range(len(texts))]


def read_rows(path: str | Path, fmt: str | None = None) -> tuple[list[str], list[str], list[str], str]:
    """Every row as the file has it: (texts, the file's own label names, groups, format)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    texts, names, groups = {"meld": _meld, "goemotions": _goemotions, "dair": _dair}[fmt](path)
    return texts, names, groups, fmt


def read_grouped(path: str | Path, fmt: str | None = None) -> tuple[list[str], list[int], list[str], str]:
    """(texts, label indices into LABELS, groups, format); groups are MELD dialogues (rows elsewhere),
    so splits can keep a conversation together. Rows whose label maps to None are dropped."""
    path = Path(path)
    texts, names, groups, fmt = read_rows(path, fmt)
    out_t, out_y, out_g = [], [], []
    for text, name, group in zip(texts, names, groups):
        try:
            label = canonical(name)
        except ValueError as exc:
            raise bad_file(path, f"unknown label {name!r}") from exc
        if label is not None and text.strip():
            out_t.append(text)
            out_y.append(LABEL_INDEX[label])
            out_g.append(group)
    if not out_t:
        raise bad_file(path, "no labelled rows")
    return out_t, out_y, out_g, fmt


def read_examples(path: str | Path, fmt: str | None = None) -> tuple[list[str], list[int], str]:
    """(texts, label indices into LABELS, format); rows whose label maps to None are dropped."""
    texts, labels, _, fmt = read_grouped(path, fmt)
    return texts, labels, fmt

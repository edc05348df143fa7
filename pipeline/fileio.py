"""Atomic file writes, hashing and npz shard caches, used by every writer (timelines, weights, caches, checkpoints)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from emotion_pipeline.errors import InputError, OutputError, PipelineError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent exports there are the user's to avoid
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SHARD_ROWS = 2000   # rows per npz shard of a cache

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, so temporary files end up with the usual permissions


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename over ``path``: readers never see a partial file,
    and an error leaves no file behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name stays short: ".<up to 40 chars of the name>.<random>.part" fits any file system
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".part", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write it ({e.strerror or e})") from e
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, PipelineError):   # a full disk, a quota, a size limit
            raise OutputError(f"{path}: cannot write it ({e.strerror or e})") from e
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...), @SUM(...),
# +cmd|...); a tab or carriage return first hides such a start. OWASP's advice: prefix the cell with '.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: a string starting with ``= + - @``, tab
    or CR gets a leading ``'`` (shown, not run); numbers, None and other strings are unchanged, so
    ``pandas.read_csv`` still reads the numeric columns as numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def read_bounded(path: str | os.PathLike, max_bytes: int, what: str) -> bytes:
    """The bytes of ``path``, refused with one InputError line when the file is larger than
    ``max_bytes`` (``what``: "a transcript for 4 s of video"): a small input cannot make us read
    gigabytes."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        size = path.stat().st_size if path.is_file() else len(data)
        raise InputError(f"{path}: {size:,} bytes is more than {what} can hold ({max_bytes:,} bytes)")
    return data


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` for a read-modify-write of ``path``,
    so two processes updating the same small index file (e.g. checksums.json) do not lose entries."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def json_digest(obj: Any, chars: int = 16) -> str:
    """The first ``chars`` hex digits of the SHA-256 of ``obj`` as sorted JSON (other values as str):
    a cache folder named by what the cache depends on."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:chars]


def save_shards(folder: str | os.PathLike, name: str, arrays: dict[str, np.ndarray], rows: int = SHARD_ROWS) -> None:
    """``arrays`` (of one length) as ``name-000.npz``, ``name-001.npz``, ... of ``rows`` rows, each
    written atomically (no pickle)."""
    n = len(next(iter(arrays.values())))
    for k, start in enumerate(range(0, max(n, 1), rows)):
        def write(tmp: str, part: slice = slice(start, start + rows)) -> None:
            with open(tmp, "wb") as fh:   # a file, not a name: np.savez would add ".npz" to the name
                np.savez(fh, **{key: a[part] for key, a in arrays.items()})
        atomic_write(Path(folder) / f"{name}-{k:03d}.npz", write)


def load_shards(folder: str | os.PathLike, name: str) -> dict[str, np.ndarray] | None:
    """The arrays ``save_shards`` wrote (concatenated), None when there are no shards."""
    parts = []
    for path in sorted(Path(folder).glob(f"{name}-*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            parts.append(dict(npz))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]} if parts else None


def shard_cache(folder: str | os.PathLike, names: tuple[str, ...],
                make: Callable[[], tuple[dict[str, dict[str, np.ndarray]], dict]]) -> dict[str, dict[str, np.ndarray]]:
    """The arrays of ``names`` from the shards in ``folder`` when its meta.json is there; else
    ``make()`` -> ({name: arrays}, meta), saved as shards and then meta.json, which marks a complete cache."""
    folder = Path(folder)
    if (folder / "meta.json").exists():
        found = {name: load_shards(folder, name) for name in names}
        if all(a is not None for a in found.values()):
            log.info("cache hit: %s", folder)
            return found
    arrays, meta = make()
    for name, named in arrays.items():
        save_shards(folder, name, named)
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2, default=str))
    return arrays

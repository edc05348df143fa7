"""Pretrained models from the network: Whisper checkpoints, Hugging Face repos, the YuNet detector.

Everything lands in one cache ($EMOTION_CACHE_DIR, else $XDG_CACHE_HOME/emotion-pipeline, else
~/.cache/emotion-pipeline). Downloads are streamed to a temporary file in the cache folder,
hashed, verified and renamed into place, so two runs sharing a cache never see a partial file.
Files with a published SHA-256 are checked against it; the others are pinned on first download
in ``manifest.json`` and checked against that ever after. Offline (``offline=True``,
EMOTION_OFFLINE=1 or HF_HUB_OFFLINE=1) nothing touches the network: a missing file is an error
that names it and says how to get it. Only safetensors are taken from Hugging Face repos.
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

from models.registry import ChecksumError, ModelUnavailableError
from models.weights_io import atomic_write, sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "EMOTION_CACHE_DIR"
OFFLINE_ENVS = ("EMOTION_OFFLINE", "HF_HUB_OFFLINE")


@dataclass(frozen=True)
class HubModel:
    name: str
    kind: str                 # whisper | hf-audio | hf-text | hf-face | detector
    source: str               # URL (whisper, detector) or Hugging Face repo id
    sha256: str | None = None  # published checksum of a URL file; None -> pinned on first download
    revision: str = "main"
    licence: str = ""


def _whisper_entries() -> dict[str, HubModel]:
    import whisper  # the package lists the official URLs; the SHA-256 is the URL's second-last part

    return {f"whisper-{n}": HubModel(f"whisper-{n}", "whisper", url, url.split("/")[-2], licence="MIT")
            for n, url in whisper._MODELS.items()}


HUB_MODELS: dict[str, HubModel] = {
    **_whisper_entries(),
    "yunet": HubModel("yunet", "detector",
                      "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
                      "face_detection_yunet_2023mar.onnx", licence="MIT"),
    # `full` profile classifiers (labels mapped onto ours by pipeline.labels.canonical)
    "wav2vec2-emotion": HubModel("wav2vec2-emotion", "hf-audio", "superb/wav2vec2-base-superb-er", licence="Apache-2.0"),
    "distilroberta-emotion": HubModel("distilroberta-emotion", "hf-text",
                                      "j-hartmann/emotion-english-distilroberta-base", licence="see model card"),
    "vit-face-expression": HubModel("vit-face-expression", "hf-face", "trpakov/vit-face-expression", licence="see model card"),
}

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    return bool(_HF_ID.match(name)) and not Path(name).exists()


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "emotion-pipeline"


def is_offline(flag: bool | None = None) -> bool:
    if flag:
        return True
    return any(os.environ.get(e, "").lower() in ("1", "true", "yes", "on") for e in OFFLINE_ENVS)


def _manifest_path() -> Path:
    return cache_dir() / "manifest.json"


def _pinned(key: str) -> str | None:
    path = _manifest_path()
    return json.loads(path.read_text()).get(key) if path.exists() else None


def _pin(key: str, digest: str) -> None:
    path = _manifest_path()
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = digest
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True)))


def verify(path: Path, key: str, expected: str | None) -> str:
    """Check a cached file against its published or pinned SHA-256; pin it if neither exists."""
    digest = sha256_file(path)
    want = expected or _pinned(key)
    if want is None:
        _pin(key, digest)
    elif digest != want:
        raise ChecksumError(f"{path}: SHA-256 {digest[:12]}… differs from the expected {want[:12]}…; "
                            f"delete it and fetch again")
    return digest


def fetch_url(url: str, dest: Path, *, sha256: str | None, offline: bool | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (atomically, verified) unless a verified copy is there."""
    key = url
    if dest.exists():
        verify(dest, key, sha256)
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
        _pin(key, digest.hexdigest())
    return dest


def whisper_checkpoint(name_or_path: str, *, offline: bool | None = None, progress: bool = True) -> tuple[Path, str]:
    """Path and SHA-256 of a Whisper checkpoint given by name (tiny, base, ...) or file path."""
    path = Path(name_or_path)
    if path.suffix == ".pt" and path.exists():
        return path, sha256_file(path)
    entry = HUB_MODELS.get(f"whisper-{name_or_path}") or HUB_MODELS.get(name_or_path)
    if entry is None or entry.kind != "whisper":
        names = sorted(k.removeprefix("whisper-") for k, v in HUB_MODELS.items() if v.kind == "whisper")
        raise ModelUnavailableError(f"{name_or_path}: not a Whisper model file or name; names: {', '.join(names)}")
    dest = cache_dir() / "whisper" / Path(entry.source).name
    fetch_url(entry.source, dest, sha256=entry.sha256, offline=offline, progress=progress)
    return dest, entry.sha256


def yunet_model(*, offline: bool | None = None, search: tuple[Path, ...] = ()) -> Path | None:
    """A YuNet .onnx: first any in ``search`` folders, then the cache (fetched when online); None if neither."""
    for folder in search:
        found = sorted(Path(folder).glob("face_detection_yunet*.onnx"))
        if found:
            return found[-1]
    entry = HUB_MODELS["yunet"]
    dest = cache_dir() / "detectors" / Path(entry.source).name
    try:
        return fetch_url(entry.source, dest, sha256=entry.sha256, offline=offline, progress=False)
    except ModelUnavailableError as e:
        log.info("YuNet unavailable (%s); using the Haar cascade", e)
        return None


def hf_snapshot(repo_id: str, *, revision: str = "main", offline: bool | None = None) -> Path:
    """Local folder of a Hugging Face repo (config, tokenizer, *.safetensors only), verified."""
    try:
        from huggingface_hub import snapshot_download
        folder = Path(snapshot_download(
            repo_id, revision=revision, cache_dir=str(cache_dir() / "hf"), local_files_only=is_offline(offline),
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.*"]))
    except Exception as e:  # huggingface_hub raises many types: offline, 404, network, auth
        raise ModelUnavailableError(
            f"{repo_id}: cannot get this Hugging Face model ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            f"run `make models PROFILE=full` with a network, or pass a local folder") from e
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ModelUnavailableError(f"{repo_id}: the repo has no safetensors weights (pickle files are refused)")
    for w in weights:
        verify(w, f"hf:{repo_id}@{revision}/{w.name}", None)
    return folder


def resolve_hf(name_or_path: str, *, offline: bool | None = None) -> tuple[Path, str]:
    """A local HF-layout folder for a registry name, a repo id or a folder; returns (folder, source)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path, str(path)
    entry = HUB_MODELS.get(name_or_path)
    repo, rev = (entry.source, entry.revision) if entry else (name_or_path, "main")
    return hf_snapshot(repo, revision=rev, offline=offline), f"hf:{repo}@{rev}"

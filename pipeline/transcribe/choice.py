"""Which speech recogniser a ``whisper_model`` setting gets, and building it: ``load_asr`` (one
named model, through ``models.registry``: the packaged offline ``tiny.en`` and ``base``, a
faster-whisper size or Hugging Face repo id, a converted-model folder, a ``.pt`` file or
``openai:<size>``) and ``load_for_analysis`` (the policy: ``auto`` by device, and the packaged
multilingual model that names the language for an English-only one).
"""
from __future__ import annotations

import dataclasses
import logging

from emotion_pipeline.errors import ModelUnavailableError
from emotion_pipeline.transcribe.backends import (ASR, ASRInfo, DeferredASR, FasterWhisperASR, OpenAIWhisperASR,
                                                  load_whisper)

log = logging.getLogger(__name__)

DEFAULT_ASR = "tiny.en"        # packaged, offline in every install; chosen by measurement (README, "Words")
LANGUAGE_ID_MODEL = "base"     # packaged multilingual model that names the language for English-only models
GPU_ASR = "small"              # tried first on a GPU (hub cache only); else the packaged multilingual base
CPU_BEAM = 1                   # greedy on CPU, the cheapest decoding (README figures are measured with it)
GPU_BEAM = 5                   # faster-whisper's default beam


def _threads() -> int:
    import torch
    return max(1, torch.get_num_threads())


def load_asr(name: str, *, device: str = "cpu", offline: bool | None = None, progress: bool = True) -> ASR:
    """A transcription model (FasterWhisperASR or OpenAIWhisperASR) for the ``whisper_model`` setting.

    Raises models.registry.ModelUnavailableError (not there, says how to get it) or ChecksumError."""
    from emotion_pipeline.models import registry

    if name.endswith(".pt") or name.startswith("openai:"):
        try:
            model, winfo = load_whisper(name.removeprefix("openai:"), device=device, offline=offline, progress=progress)
        except ImportError as e:
            raise ModelUnavailableError(f"{name}: openai-whisper checkpoints need the optional package: "
                                        f"pip install -e '.[openai-whisper]'") from e
        info = ASRInfo(name, "openai-whisper", f"file:{winfo.path}", None, winfo.sha256, winfo.path,
                       bool(model.is_multilingual))
        return OpenAIWhisperASR(model, info)

    files = registry.load(name, kind="asr", offline=offline)     # found and checksum-verified now
    cuda = str(device).startswith("cuda")
    compute_type = "float16" if cuda else "int8"
    info = ASRInfo(name, "faster-whisper", files.source, files.revision, files.sha256, str(files.path),
                   bool(files.multilingual), compute_type)

    def construct() -> FasterWhisperASR:
        from faster_whisper import WhisperModel

        logging.getLogger("faster_whisper").setLevel(logging.WARNING)   # it logs every call at INFO
        try:
            model = WhisperModel(str(files.path), device="cuda" if cuda else "cpu", compute_type=compute_type,
                                 cpu_threads=_threads(), local_files_only=True)
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelUnavailableError(f"{files.path}: faster-whisper cannot load this model ({e})") from e
        return FasterWhisperASR(model, info, beam_size=GPU_BEAM if cuda else CPU_BEAM, batched=cuda)

    deferred = DeferredASR(info, construct)
    if files.multilingual is None:    # a hub or local model: only loading it tells whether it is multilingual
        built = deferred.model
        info = dataclasses.replace(info, multilingual=bool(built.model.model.is_multilingual))
        deferred.info = built.info = info
    return deferred


def load_for_analysis(name: str, *, device: str = "cpu", offline: bool | None = None, progress: bool = True,
                      language: str | None = None) -> tuple[ASR, ASR | None]:
    """(asr, language_id or None) for ``analyze``'s ``whisper_model`` setting.

    ``auto``: on CPU the packaged DEFAULT_ASR; on a GPU, GPU_ASR when it is already in the cache,
    else the packaged multilingual LANGUAGE_ID_MODEL (a GPU makes its extra cost negligible).
    An English-only model gets the packaged multilingual LANGUAGE_ID_MODEL to name the language
    (unless ``language`` is forced)."""
    if name == "auto":
        name = DEFAULT_ASR
        if str(device).startswith("cuda"):
            name = LANGUAGE_ID_MODEL
            try:
                return load_for_analysis(GPU_ASR, device=device, offline=True, progress=progress, language=language)
            except ModelUnavailableError as e:
                log.info("%s not cached (%s); using the packaged %s", GPU_ASR, e, name)
    asr = load_asr(name, device=device, offline=offline, progress=progress)
    language_id = None
    if not asr.multilingual and language is None:
        try:
            language_id = load_asr(LANGUAGE_ID_MODEL, device=device, offline=True, progress=progress)
        except ModelUnavailableError as e:
            log.warning("no language identification (%s): speech will be taken as English", e)
    return asr, language_id

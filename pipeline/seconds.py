"""The per-second assembly, written once, fed by the file analysis and by the live stream.

    face scores ----\
    voice windows --(VAD-gated, scored)--+--> Timeline: one row per second --> fused raw --> smoothed
    words (now or as amendments) -------/       (centred for a file, causal for a stream)

- ``VoiceSeconds``: 16 kHz samples as they come (any chunking) -> one voice window per second,
  its speech fraction judged over the VAD_CONTEXT_S of audio ending with the window, so a file
  and a stream of the same audio give the same voice scores;
- ``Timeline``: face, voice and words per second, words amended later; fused and smoothed a second
  at a time. With ``keep_s`` its state is a window: older seconds are handed, final, to
  ``on_final`` and forgotten (a stream may run all day);
- the modality statuses, the coverage report and the timeline document: one place each.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from emotion_pipeline import demux, fuse, writers
from emotion_pipeline.audio_windows import SecondCutter, VoiceWindow
from emotion_pipeline.languages import normalise_language
from emotion_pipeline.models import SAMPLE_RATE_HZ
from emotion_pipeline.records import (ModalityScores, Segment, SecondEntry, StreamCoverage, Transcript, VideoInfo,
                                      Word)

log = logging.getLogger(__name__)

# The VAD judges a second on the 10 s of audio that end with its voice window (noise floor and peaks
# of that stretch): long enough to hold pauses to learn the noise floor from, short enough that a
# stream's second is judged 1 s after it ends, as a file's is. Measured on the shared talking clips:
# speech fractions within 0.05 of whole-30-s-chunk VAD on 18 of 20 seconds; 5 ms per second on CPU.
VAD_CONTEXT_S = 10.0

# A stream missing more than this many seconds makes the result partial (a warning, exit code 3,
# a failure with --strict). Below it: rounding of stream lengths, a lost AAC packet or two.
PARTIAL_TOLERANCE_S = 0.5

_KEEP = object()   # "leave this modality as it is" in Timeline.add


@dataclass(frozen=True)
class Status:
    ok: bool
    reason: str | None = None
    coverage: float | None = None     # share of the stream behind this modality that decoded

    def json(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "missing", "reason": self.reason, "coverage": self.coverage}


@dataclass(frozen=True)
class Fuser:
    """How a second's modalities are fused: the confidence-weighted average or the trained head."""
    method: str                        # "average" or "head"
    weights: tuple[float, ...]         # modality_weights (face, audio, text)
    head: fuse.HeadFuser | None = None

    def fuse(self, rows: list[fuse.Row]) -> list[ModalityScores | None]:
        return fuse.fuse_all(rows, method=self.method, weights=self.weights, head=self.head)


# ---------------------------------------------------------------------------- voice
class VoiceSeconds:
    """Audio -> per-second voice scores. ``push``/``finish`` cut the windows (cheap, bounded);
    ``score`` runs the audio model on those with enough speech, equal-length windows batched
    (zero-padding would shift the model's per-window normalisation)."""

    def __init__(self, encoder, *, vad_context_s: float = VAD_CONTEXT_S):
        self.encoder = encoder             # encoders.AudioEncoder: predictor, window_s, min_speech_fraction
        self.cutter = SecondCutter(float(encoder.window_s), SAMPLE_RATE_HZ, vad_context_s=vad_context_s)

    @property
    def next_second(self) -> int:
        """Seconds below this have their window cut."""
        return self.cutter.next_second

    def push(self, samples: np.ndarray) -> list[VoiceWindow]:
        return self.cutter.push(samples)

    def finish(self) -> list[VoiceWindow]:
        return self.cutter.finish()

    def gated(self, w: VoiceWindow) -> bool:
        """Silence, music, noise, or a sliver of a second: the voice stays null."""
        return w.own_samples < SAMPLE_RATE_HZ // 10 or (w.speech_fraction or 0.0) < self.encoder.min_speech_fraction

    def score(self, windows: Sequence[VoiceWindow]) -> list[tuple[int, ModalityScores | None]]:
        out: list[tuple[int, ModalityScores | None]] = []
        batch: list[VoiceWindow] = []
        size = max(1, int(getattr(self.encoder, "batch_size", 16)))

        def flush():
            if batch:
                probs, embs = self.encoder.predictor.predict(np.stack([w.window for w in batch]))
                for w, p, e in zip(batch, probs, embs):
                    p = np.asarray(p, dtype=np.float32)
                    out.append((w.second, ModalityScores(p / max(float(p.sum()), 1e-8), e, {
                        "speech_fraction": round(float(w.speech_fraction or 0.0), 3)})))
                batch.clear()

        for w in windows:
            if self.gated(w):
                out.append((w.second, None))
                continue
            if batch and (len(batch[0].window) != len(w.window) or len(batch) >= size):
                flush()
            batch.append(w)
        flush()
        return out


def stream_voice(voice: VoiceSeconds, chunks: Iterable, n_seconds: int) -> list[ModalityScores | None]:
    """A whole file's voice rows (``n_seconds`` of them) from its audio chunks."""
    rows: list[ModalityScores | None] = [None] * n_seconds
    pending: list[VoiceWindow] = []

    def take(windows):
        pending.extend(w for w in windows if w.second < n_seconds)
        if len(pending) >= 64:
            place()

    def place():
        for s, scores in voice.score(pending):
            rows[s] = scores
        pending.clear()

    for chunk in chunks:
        take(voice.push(chunk.samples))
    take(voice.finish())
    place()
    return rows


# ---------------------------------------------------------------------------- words
def shifted(segments: Iterable[Segment], by_s: int) -> tuple[Segment, ...]:
    """Segments moved ``by_s`` whole seconds earlier (words keep their seconds on the grid)."""
    return tuple(Segment(g.start_s - by_s, g.end_s - by_s, g.text,
                         tuple(Word(w.start_s - by_s, w.end_s - by_s, w.text, w.probability) for w in g.words))
                 for g in segments)


def text_rows(text_encoder, segments: Sequence[Segment], language: str | None, lo: int, hi: int
              ) -> list[ModalityScores | None]:
    """Text scores of seconds [lo, hi) from the segments near them (the text model's context
    included), computed on a grid starting at ``lo - context`` so the cost is the span's, not the
    stream's."""
    ctx = int(round(text_encoder.context_s)) + 1
    base = max(0, lo - ctx)
    near = [g for g in segments if g.end_s >= base and g.start_s <= hi + ctx]
    rows = text_encoder.per_second(Transcript(shifted(sorted(near, key=lambda g: g.start_s), base), language,
                                              "whisper"), hi + ctx - base)
    return rows[lo - base: hi - base]


# ---------------------------------------------------------------------------- the seconds
class Timeline:
    """One row (face, voice, words) per second, fused and smoothed one second at a time.

    ``causal``: a second is smoothed over itself and the ``smoothing_window_s - 1`` before it (a
    stream cannot look ahead); else over a centred window. ``finalise(upto)`` hands the seconds
    before ``upto``, final, to ``on_final``; with ``keep_s`` only the last ``keep_s`` seconds (and
    the smoothing window before them) are held, older ones finalised as new ones come."""

    def __init__(self, fuser: Fuser, smoothing_window_s: int, *, causal: bool, keep_s: int | None = None,
                 on_final: Callable[[SecondEntry], None] | None = None):
        self.fuser, self.window_s, self.causal = fuser, int(smoothing_window_s), causal
        self.keep_s, self.on_final = keep_s, on_final
        self.rows: dict[int, list[ModalityScores | None]] = {}
        self.raw: dict[int, ModalityScores | None] = {}
        self.dirty: set[int] = set()
        self.n = 0                 # seconds added so far (the last one's index + 1)
        self.final_upto = 0        # seconds below this are final and (with keep_s) forgotten
        self.seen = {"face": False, "audio": False, "text": False}
        self.face_apart: set[int] = set()   # seconds whose face is shown but not fused (a voice from off screen)

    def add(self, s: int, *, face=_KEEP, audio=_KEEP, text=_KEEP) -> None:
        if s < self.final_upto:
            raise ValueError(f"second {s} is final already (seconds from {self.final_upto} are held)")
        row = self.rows.setdefault(s, [None, None, None])
        for i, (name, value) in enumerate((("face", face), ("audio", audio), ("text", text))):
            if value is not _KEEP:
                row[i] = value
                self.seen[name] = self.seen[name] or value is not None
        self.dirty.add(s)
        self.n = max(self.n, s + 1)
        if self.keep_s is not None and self.n - self.final_upto > self.keep_s:
            self.finalise(self.n - self.keep_s)

    def set_text(self, s: int, text: ModalityScores | None) -> bool:
        """Words for a past second (an amendment): False when the second is final or nothing changed."""
        if s < self.final_upto or s not in self.rows:
            return False
        old = self.rows[s][2]
        if text is None or (old is not None and np.allclose(old.probs, text.probs)):
            return False
        self.add(s, text=text)
        return True

    def keep_face_apart(self, s: int) -> None:
        """Second ``s`` keeps its face row (shown) out of the fusion: its voice is not that face's."""
        self.face_apart.add(s)
        self.dirty.add(s)

    def row(self, s: int) -> tuple[ModalityScores | None, ...]:
        return tuple(self.rows.get(s, (None, None, None)))

    def fused_raw(self, s: int) -> ModalityScores | None:
        if self.dirty:
            order = sorted(self.dirty)
            rows = [[None, *self.rows[k][1:]] if k in self.face_apart else self.rows[k] for k in order]
            for k, fused in zip(order, self.fuser.fuse(rows)):
                self.raw[k] = fused
            self.dirty.clear()
        return self.raw.get(s)

    def smoothed(self, s: int) -> ModalityScores | None:
        entry = self.fused_raw(s)
        if entry is None or self.window_s <= 1:
            return entry
        half = self.window_s // 2
        lo, hi = (s - self.window_s + 1, s + 1) if self.causal else (s - half, min(self.n, s + half + 1))
        neighbours = [self.raw.get(k) for k in range(max(0, lo), hi)]
        return fuse.smooth_one(entry, neighbours, self.window_s, causal=self.causal)

    def entry(self, s: int, end_s: float | None = None) -> SecondEntry:
        face, audio, text = self.row(s)
        return SecondEntry(float(s), float(s + 1) if end_s is None else float(end_s), face, audio, text,
                           self.smoothed(s), self.fused_raw(s))

    def entries(self, duration_s: float | None = None) -> list[SecondEntry]:
        """Every held second (a file's whole timeline; the last one ends at ``duration_s``)."""
        return [self.entry(s, duration_s if s == self.n - 1 and duration_s is not None else None)
                for s in range(self.final_upto, self.n)]

    def finalise(self, upto: int) -> None:
        """Seconds before ``upto`` are final: handed to ``on_final`` (embeddings dropped), then
        forgotten but for the smoothing window a later second still needs."""
        for s in range(self.final_upto, min(upto, self.n)):
            if self.on_final is not None:
                e = self.entry(s)
                self.on_final(dataclasses.replace(e, face=_light(e.face), audio=_light(e.audio), text=_light(e.text),
                                                  fused=_light(e.fused), fused_raw=_light(e.fused_raw)))
            self.final_upto = s + 1
        if self.keep_s is not None:
            below = self.final_upto - max(self.window_s, 1)
            for k in [k for k in self.rows if k < below]:
                self.rows.pop(k, None)
                self.raw.pop(k, None)


class Spool:
    """Final seconds on disk (a temporary file), for a ``Timeline``'s ``on_final``: a stream's
    timeline grows with its length, the process's memory must not. Read back once, at the end."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()
        self.n = 0

    def add(self, entry: SecondEntry) -> None:
        pickle.dump(entry, self.file, protocol=pickle.HIGHEST_PROTOCOL)
        self.n += 1

    def entries(self) -> list[SecondEntry]:
        self.file.seek(0)
        out = [pickle.load(self.file) for _ in range(self.n)]
        self.file.close()
        return out


def _light(m: ModalityScores | None) -> ModalityScores | None:
    return m if m is None or m.embedding is None else dataclasses.replace(m, embedding=None)


# ---------------------------------------------------------------------------- statuses, coverage
def face_status(*, has_video: bool, faces_seen: bool, frames_sampled: int) -> Status:
    if not has_video:
        return Status(False, "no video stream")
    return Status(True) if faces_seen else Status(False, f"no face found in {frames_sampled} sampled frames")


def audio_status(*, has_audio: bool, voice_seen: bool) -> Status:
    if not has_audio:
        return Status(False, "no audio track")
    return Status(True) if voice_seen else Status(False, "no speech detected (silence, music or noise)")


def text_status(*, transcript: Transcript | None, english_only: bool, words_seen: bool,
                unavailable: str | None = None, failure: str | None = None,
                language_probability: float | None = None) -> Status:
    """The text modality's status: ``unavailable`` (no transcript could be had, and why),
    ``failure`` (transcription broke off: said even when words came before it), a language the
    text model cannot score, or no words."""
    if failure:
        return Status(False, failure)
    if transcript is None:
        return Status(False, unavailable or "no transcript")
    if transcript.language and normalise_language(transcript.language) != "en" and english_only:   # EN, en-US, English: en
        how = f" (language ID p={language_probability:.2f})" if language_probability is not None else ""
        return Status(False, f"speech is in '{transcript.language}'{how} and the text model is English-only; not scored")
    return Status(True) if words_seen else Status(False, "no words in the transcript")


def with_coverage(status: Status, cov: StreamCoverage | None) -> Status:
    return status if cov is None else dataclasses.replace(status, coverage=round(cov.fraction, 4))


def statuses(timeline: Timeline, *, has_video: bool, has_audio: bool, frames_sampled: int,
             coverage: dict[str, StreamCoverage], text: Status) -> dict[str, Status]:
    """The three modalities' statuses of a file or a stream, face and voice with their stream's coverage."""
    return {"face": with_coverage(face_status(has_video=has_video, faces_seen=timeline.seen["face"],
                                              frames_sampled=frames_sampled), coverage.get("video")),
            "audio": with_coverage(audio_status(has_audio=has_audio, voice_seen=timeline.seen["audio"]),
                                   coverage.get("audio")),
            "text": text}


def coverage_report(info: VideoInfo, video_cov: demux.Coverage | None, audio_cov: demux.Coverage | None
                    ) -> tuple[dict[str, StreamCoverage], tuple[str, ...]]:
    """What each stream delivered against what the header promises, and the warnings of a partial
    result. A stream without its own length in the header (Matroska, WebM; any live stream) is
    expected to run to the container's end only as far as the other stream does: one ending early
    is no loss, both ending early is a cut file."""
    covs = {k: c for k, c in (("video", video_cov if info.has_video else None),
                              ("audio", audio_cov if info.has_audio else None)) if c is not None}
    reached = max([c.cursor for c in covs.values()], default=0.0)
    cut = reached < info.duration_s - PARTIAL_TOLERANCE_S
    spans = {"video": info.video_span_s, "audio": info.audio_span_s}
    coverage = {k: c.result(spans[k] if spans[k] is not None else (info.duration_s if cut else c.cursor))
                for k, c in covs.items()}
    warnings = tuple(_coverage_warning(c) for c in coverage.values() if c.lost_total_s > PARTIAL_TOLERANCE_S)
    return coverage, warnings


def _coverage_warning(c: StreamCoverage) -> str:
    spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in c.lost_s[:4]) + (" ..." if len(c.lost_s) > 4 else "")
    why = f"; {c.decode_errors} damaged packets skipped" if c.decode_errors else ""
    why += f"; demuxer stopped: {c.stopped}" if c.stopped else ""
    return (f"partial result: {c.kind} decoded for {c.expected_s - c.lost_total_s:.1f} of {c.expected_s:.1f} s "
            f"(lost {spans}){why}")


# ---------------------------------------------------------------------------- the document
@dataclass(frozen=True)
class RunRecord:
    """What made a result, for its document: models, software, the settings."""
    models: dict[str, Any]
    software: dict[str, Any]
    config: dict[str, Any]


def document(record: RunRecord, *, info: VideoInfo, entries: list[SecondEntry], transcript: Transcript | None,
             status: dict[str, Status], coverage: dict[str, StreamCoverage], warnings: Sequence[str],
             **sections: Any) -> dict[str, Any]:
    """The timeline document of a file or a stream (``writers.timeline_document``, the one place
    JSON is made); ``sections``: the schema's other top-level parts (input, settings_key, skip_key,
    timings_s, live)."""
    return writers.timeline_document(
        info=info, entries=entries, transcript=transcript, models=record.models, software=record.software,
        config=record.config, modalities={k: v.json() for k, v in status.items()},
        coverage={k: c.json() for k, c in coverage.items()}, warnings=list(warnings), **sections)

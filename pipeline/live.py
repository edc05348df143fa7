"""Live: a stream, a webcam, a pipe, or a file played at its real speed, analysed second by second.

    source --reader thread (demux.decoded, FramePlacer, AudioPlacer: the file analysis's decoding)--> queue
      --> each second, once its voice window has arrived: the file analysis's per-second assembly
          (seconds.py: faces with a tracker kept across seconds, the same voice windows and VAD,
          fusion, causal smoothing) --> one JSON line: the timeline entry + emitted_at + latency_s
      --> Whisper in rolling blocks of voice-detected speech --> "amend" lines that add a past
          second's words and its new fused verdict (the text modality's own, stated delay)
    end (Ctrl-C, SIGTERM, end of stream, --max-seconds, 15 s without data): the full timeline JSON,
    as ``analyze`` writes it

What is live here and nowhere else: reading a source at its pace, shedding work, amendments and the
window. Delay: a second's line waits for the voice model's context after it (half its window minus
half a second: 1 s for the shipped 3 s window) and for its compute. When the lines fall behind the
bound (``--max-delay-s``, default 2 s), the loop sheds work: one frame per second instead of
``frames_per_second``, then no voice window, and says so in the line's ``shed`` field.

Memory is bounded by a window, not by the stream's length: LIVE_WINDOW_S seconds of rows (words
may still amend them), then a second is final and goes to a spool file that the timeline JSON is
made from at the end.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import av
import numpy as np

from emotion_pipeline import demux, seconds, writers
from emotion_pipeline.audio_windows import VoiceWindow
from emotion_pipeline.errors import InputError, Terminated
from emotion_pipeline.models import SAMPLE_RATE_HZ
from emotion_pipeline.records import Frame, SecondEntry, Segment, Transcript, VideoInfo
from emotion_pipeline.viewer import RecentSeconds, Viewer

log = logging.getLogger(__name__)

DEFAULT_MAX_DELAY_S = 2.0
LIVE_ASR_BLOCK_S = 6.0      # seconds of audio gathered before Whisper decodes the finished speech in it
LIVE_LID_SPEECH_S = 8.0     # language named on the first 8 s of speech (files: 30 s)
LIVE_MAX_BUFFER_S = 10.0    # speech without a pause is cut (at its quietest point) after 10 s (files: 180 s)
LIVE_WINDOW_S = 120         # seconds held open for words to amend (ASR lags 6-20 s); older ones are final
ASR_BACKLOG_S = 120         # seconds of audio waiting for Whisper at most; beyond, audio skips the words
ASR_PIECE_S = 0.25          # audio goes to the Whisper thread in pieces of this length
READER_QUEUE = 4096         # decoded items (frames, audio pieces: ~15 s) between the reader and the loop
# A source that delivers nothing for this long has ended (a FIFO or pipe whose writer stalled, a
# camera unplugged): the same 15 s as HTTP sources' rw_timeout. A blocking read cannot be interrupted,
# so the loop stops waiting for the reader thread (and the open) instead.
STALL_S = 15.0
_END = object()


@dataclass(frozen=True)
class LiveOptions:
    max_delay_s: float = DEFAULT_MAX_DELAY_S   # bound on a line's delay after its second ends
    realtime: bool = False                     # play a file at its own speed (as if it were live)
    max_seconds: float | None = None           # stop after this many seconds of stream
    show: bool = False                         # a window with the picture and the analysis, where a display exists


def open_source(source: str) -> av.container.InputContainer:
    """A webcam index (0, 1...), ``-`` (a pipe on stdin), or anything FFmpeg opens (a file, an RTSP,
    HTTP or HLS URL). One-line InputError when it cannot be opened."""
    try:
        if source.isdigit():
            system = platform.system()
            if system == "Linux":
                return av.open(f"/dev/video{source}", format="v4l2")
            if system == "Darwin":
                return av.open(f"{source}:none", format="avfoundation", options={"framerate": "30"})
            return av.open(f"video={source}", format="dshow")
        if source == "-":
            return av.open(sys.stdin.buffer, mode="r")
        if "://" not in source and not Path(source).exists():
            raise InputError(f"{source}: no such file, and not a webcam index or URL")
        options = {"rw_timeout": "15000000"} if "://" in source else {}   # 15 s without data: give up
        return av.open(source, options=options, timeout=15.0 if "://" in source else None)
    except av.error.FFmpegError as e:
        raise InputError(f"{source}: cannot open the source ({e.strerror or type(e).__name__})") from e


class _Reader(threading.Thread):
    """Demuxes and decodes the source through the file analysis's decoding path, puts ("video",
    Frame, arrival) and ("audio", samples, end_s, arrival) on the queue, in stream order; paces a
    file to real time when asked."""

    def __init__(self, container, q: queue.Queue, *, sample_fps: float, max_side_px: int, realtime: bool,
                 stop: threading.Event, max_seconds: float | None, clock: Callable[[], float] = time.monotonic):
        super().__init__(daemon=True, name="live-reader")
        self.container, self.q, self.realtime, self.stop, self.max_seconds = container, q, realtime, stop, max_seconds
        self.clock = clock
        self.vs, self.as_ = demux.video_stream(container), demux.audio_stream(container)
        if self.vs is not None:
            self.vs.thread_type = "AUTO"
        self.sampler = demux.FrameSampler(sample_fps, max_side_px)
        self.video_cov = demux.Coverage("video", demux.VIDEO_GAP_S)
        self.audio_cov = demux.Coverage("audio", demux.AUDIO_GAP_S)
        self.audio_samples = 0
        self.error: str | None = None
        self.limit_reached = False      # stopped at --max-seconds
        self.progress = time.monotonic()   # when the reader last got something from the source (or handed it on)

    def _pace(self, t: float, wall0: float) -> None:
        if self.realtime:
            delay = wall0 + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _audio(self, pieces) -> None:
        for samples in pieces:
            self.audio_samples += len(samples)
            self.q.put(("audio", samples, self.audio_samples / SAMPLE_RATE_HZ, self.clock()))

    def run(self) -> None:
        wall0 = time.monotonic()
        streams = [s for s in (self.vs, self.as_) if s is not None]
        coverage = {s.index: self.video_cov if s is self.vs else self.audio_cov for s in streams}
        frames = audio = None
        try:
            for stream, frame in demux.decoded(self.container, streams, coverage):
                if self.stop.is_set():
                    break
                if frame.time is None:
                    continue
                if frames is None:   # the first frame decoded: a live stream has no start, it is t = 0
                    origin = demux.origin_of(self.container) if not self.realtime_source() else frame.time
                    default_dur = 1.0 / float(self.vs.average_rate) if self.vs and self.vs.average_rate else None
                    frames = demux.FramePlacer(origin, self.sampler, self.video_cov, default_dur_s=default_dur)
                    audio = demux.AudioPlacer(origin, self.audio_cov)
                t = frame.time - frames.origin
                if self.max_seconds is not None and t >= self.max_seconds:
                    self.limit_reached = True
                    self.stop.set()
                    break
                self._pace(t, wall0)
                if stream is self.vs:
                    for kept in frames.push(frame):
                        self.q.put(("video", kept, self.clock()))
                else:
                    self._audio(audio.push(frame))
                self.progress = time.monotonic()
            if audio is not None:
                self._audio(audio.flush())
            stopped = self.video_cov.stopped or self.audio_cov.stopped
            if stopped:
                self.error = f"the source stopped ({stopped})"
        except Exception as e:   # reported by the main loop as one line
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.q.put((_END,))

    def realtime_source(self) -> bool:
        """Webcams and network streams: their clock starts when we join, not at the container's start."""
        name = self.container.format.name or ""
        return name in ("v4l2", "avfoundation", "dshow") or "rtsp" in name or "hls" in name

    def info(self, source: str, n_seconds: int, has_video: bool, has_audio: bool) -> VideoInfo:
        vs, as_ = self.vs, self.as_
        return VideoInfo(path=source, duration_s=float(max(n_seconds, 1)),
                         fps=float(vs.average_rate) if vs is not None and vs.average_rate else None,
                         width=vs.codec_context.width if vs is not None else None,
                         height=vs.codec_context.height if vs is not None else None, rotation_deg=0,
                         has_video=has_video, has_audio=has_audio,
                         video_codec=vs.codec_context.name if vs is not None else None,
                         audio_codec=as_.codec_context.name if as_ is not None else None,
                         audio_sample_rate_hz=SAMPLE_RATE_HZ if has_audio else None)


class _Latencies:
    """Median and maximum of the lines' delays in bounded memory (a histogram of milliseconds)."""

    def __init__(self):
        self.ms: Counter[int] = Counter()
        self.max = 0.0

    def add(self, latency_s: float) -> None:
        self.ms[int(round(latency_s * 1000))] += 1
        self.max = max(self.max, latency_s)

    def json(self) -> dict[str, float | None]:
        total, seen = sum(self.ms.values()), 0
        for ms in sorted(self.ms):
            seen += self.ms[ms]
            if seen * 2 >= total:
                return {"median": round(ms / 1000, 3), "max": round(self.max, 3)}
        return {"median": None, "max": None}   # no line yet


class LiveSession:
    """Second-by-second analysis with bounded delay and bounded memory, using an ``Analyzer``'s
    models and its per-second assembly. ``clock``: monotonic seconds (injected by tests); ``shed``:
    whether falling behind sheds work (not for a file read at its own pace: nothing waits for it)."""

    def __init__(self, analyzer, options: LiveOptions, emit: Callable[[dict[str, Any]], None], *,
                 clock: Callable[[], float] = time.monotonic, shed: bool = True):
        self.an, self.opt, self.emit, self.clock, self.may_shed = analyzer, options, emit, clock, shed
        self.tracker = None
        self.frames: dict[int, list[Frame]] = {}          # sampled frames of seconds not yet analysed
        self.frames_seen = 0
        self.voice = analyzer.voice()
        self.windows: dict[int, VoiceWindow] = {}         # voice windows of seconds not yet analysed
        self.audio_end_s = 0.0
        self.video_t = -1.0
        self.has_video = self.has_audio = False
        self.reached: dict[int, float] = {}  # second boundary k -> clock time the stream first reached it
        self.next_second = 0
        self.spool = seconds.Spool()
        self.timeline = analyzer.timeline(causal=True, keep_s=LIVE_WINDOW_S, on_final=self.spool.add)
        self.latency = _Latencies()
        self.shed_seconds = 0
        self.lookahead_s = max(0.0, float(analyzer.audio.window_s) / 2 - 0.5)
        self.session = analyzer.transcription(block_s=LIVE_ASR_BLOCK_S, lid_speech_s=LIVE_LID_SPEECH_S,
                                              max_buffer_s=LIVE_MAX_BUFFER_S)
        self.text_failure: str | None = None
        self.n_segments = 0
        self.text_span: tuple[int, int] | None = None      # seconds whose words are known but not yet applied
        self.near_segments: list[Segment] = []            # the transcript's segments the window's words need
        self.asr_queue: queue.Queue | None = None
        self.asr_block: list[np.ndarray] = []
        self.asr_block_start = 0.0
        self.asr_dropped_s = 0.0
        if self.session is not None:
            # Whisper decodes in its own thread (CTranslate2 releases the GIL), so a block of speech
            # being transcribed never holds up the seconds' lines; ASR_BACKLOG_S waiting at most
            self.asr_queue = queue.Queue(maxsize=int(ASR_BACKLOG_S / ASR_PIECE_S))
            self.asr_thread = threading.Thread(target=self._asr_loop, daemon=True, name="live-asr")
            self.asr_thread.start()
        self.end_wall: float | None = None
        self.viewer: Viewer | None = None
        self.recent = RecentSeconds()                     # the window's strip
        self.boxes: list[tuple[int, tuple]] = []          # the last analysed frame's faces
        analyzer.warm_up()

    # ---------------------------------------------------------------- input
    def _reach(self, t: float, wall: float) -> None:
        for k in range(int(math.floor(t)), -1, -1):
            if k in self.reached:
                break
            self.reached[k] = wall

    def on_video(self, frame: Frame, wall: float) -> None:
        if self.viewer is not None:
            segments = [{"start_s": g.start_s, "end_s": g.end_s, "text": g.text,
                         "words": [{"start_s": w.start_s, "text": w.text} for w in g.words]}
                        for g in self.near_segments]
            self.viewer.update(frame, self.recent, self.boxes, segments)
        self.has_video = True
        self.frames_seen += 1
        self.video_t = max(self.video_t, frame.t_s)
        if int(frame.t_s) >= self.next_second:            # a frame of a second already analysed is late: dropped
            self.frames.setdefault(int(frame.t_s), []).append(frame)
        self._reach(frame.t_s, wall)

    def on_audio(self, samples: np.ndarray, end_s: float, wall: float) -> None:
        self.has_audio = True
        start_s = self.audio_end_s
        self.audio_end_s = end_s
        self._reach(end_s, wall)
        for w in self.voice.push(samples):
            self.windows[w.second] = w
        if self.asr_queue is not None:
            if not self.asr_block:
                self.asr_block_start = start_s
            self.asr_block.append(samples)
            if end_s - self.asr_block_start >= ASR_PIECE_S:
                self._to_asr()

    def _to_asr(self) -> None:
        if not self.asr_block:
            return
        block = np.concatenate(self.asr_block)
        self.asr_block = []
        try:
            self.asr_queue.put_nowait((block, self.asr_block_start))
        except queue.Full:   # Whisper is more than ASR_BACKLOG_S behind: this audio gets no words
            if not self.asr_dropped_s:
                log.warning("transcription is %d s behind the stream: audio skipped by the words", ASR_BACKLOG_S)
            self.asr_dropped_s += len(block) / SAMPLE_RATE_HZ

    def end(self, wall: float) -> None:
        """The stream ended: the last voice windows (shifted back to stay whole), the last words."""
        self.end_wall = wall
        for w in self.voice.finish():
            self.windows[w.second] = w
        if self.asr_queue is not None:
            self._to_asr()

    def _asr_loop(self) -> None:
        while True:
            item = self.asr_queue.get()
            try:
                if item is None:
                    return
                if not self.session.skip and self.text_failure is None:
                    try:
                        self.session.feed(item[0], start_s=item[1])
                    except Exception as e:   # words stop; faces and voice go on
                        log.warning("live transcription stopped: %s", e)
                        self.text_failure = f"transcription failed ({type(e).__name__}: {e})"
            finally:
                self.asr_queue.task_done()

    def ready(self, s: int) -> bool:
        video_ok = not self.has_video or self.video_t >= s + 1 - 1e-6 or (self.has_audio and self.video_t < 0)
        audio_ok = not self.has_audio or self.voice.next_second > s
        return (self.has_video or self.has_audio) and video_ok and audio_ok

    def last_second(self) -> int:
        """Seconds the stream reached (none when nothing was decoded)."""
        if not (self.has_video or self.has_audio):
            return 0
        end = max(self.video_t + 1e-6, self.audio_end_s)
        return max(1, int(math.ceil(end - 0.1)))

    # ---------------------------------------------------------------- one second
    def process(self, s: int, *, last: bool = False) -> None:
        started = self.clock()
        fallback = self.end_wall or started
        boundary = self.reached.get(s + 1, fallback)          # when the stream passed the end of second s
        needed = s + 1 + (int(math.ceil(self.lookahead_s)) if self.has_audio else 0)
        wait = started - self.reached.get(needed, fallback)   # how long the data it needs has been waiting
        budget = self.opt.max_delay_s - self.lookahead_s
        shed: list[str] = []
        frames = self.frames.pop(s, [])
        if last:   # frames after the last whole second belong to it (as in the file analysis)
            for k in sorted(k for k in self.frames if k > s):
                frames += self.frames.pop(k)
        if not self.may_shed:
            wait = 0.0
        if wait > 0.5 * budget and len(frames) > 1:          # behind: one frame for this second
            frames = frames[len(frames) // 2: len(frames) // 2 + 1]
            shed.append("frames")
        face = None
        if frames:
            observations, self.tracker, _ = self.an.face.observe(frames, tracker=self.tracker)
            if observations:
                face = self.an.face.per_second(observations, self.tracker, 1)[0]
                last_t = observations[-1].t_s
                self.boxes = [(o.face_id, (o.box.x, o.box.y, o.box.w, o.box.h)) for o in observations if o.t_s == last_t]
        audio = None
        window = self.windows.pop(s, None)
        if window is not None:
            if wait > budget:                                  # far behind: no voice window either
                shed.append("audio")
            else:
                audio = self.voice.score([window])[0][1]
        self.timeline.add(s, face=face, audio=audio)
        entry = writers.timeline_entry(self.timeline.entry(s))
        now = self.clock()
        latency = now - boundary
        self.latency.add(latency)
        line = {"type": "second", **entry, "emitted_at": time.time(), "latency_s": round(latency, 3),
                "compute_s": round(now - started, 3)}
        if shed:
            line["shed"] = shed
            self.shed_seconds += 1
        if self.session is not None:
            line["text_pending"] = True
        self.emit(line)
        self.recent.append(entry)
        for k in [k for k in self.reached if k < s - LIVE_WINDOW_S]:
            del self.reached[k]

    # ---------------------------------------------------------------- words, late
    def amend_text(self, final: bool = False) -> None:
        if self.session is None:
            return
        if final:
            self.asr_queue.put(None)
            self.asr_thread.join()
            if not self.session.skip and self.text_failure is None:
                try:
                    self.session.finish()
                except Exception as e:
                    log.warning("live transcription stopped: %s", e)
                    self.text_failure = f"transcription failed ({type(e).__name__}: {e})"
        segments = self.session.segments
        total = len(segments)
        ctx = int(round(self.an.text.context_s)) + 1
        if total > self.n_segments:
            new = segments[self.n_segments:total]
            self.n_segments = total
            keep_from = self.timeline.final_upto - 2 * ctx
            self.near_segments = sorted([g for g in self.near_segments if g.end_s >= keep_from] + list(new),
                                        key=lambda g: g.start_s)
            lo, hi = int(min(g.start_s for g in new)) - ctx, int(max(g.end_s for g in new)) + ctx + 1
            self.text_span = (min(lo, self.text_span[0]), max(hi, self.text_span[1])) if self.text_span else (lo, hi)
        if not self.text_span:
            return
        lo, hi = max(self.text_span[0], self.timeline.final_upto), min(self.text_span[1], self.timeline.n)
        # words of seconds not yet emitted wait for them: the span keeps what is still to come
        self.text_span = (self.timeline.n, self.text_span[1]) if self.text_span[1] > self.timeline.n else None
        if lo >= hi:
            return
        rows = seconds.text_rows(self.an.text, self.near_segments, self.session.language, lo, hi)
        for s, text in zip(range(lo, hi), rows):
            if not self.timeline.set_text(s, text):
                continue
            entry = writers.timeline_entry(self.timeline.entry(s))
            self.emit({"type": "amend", "start_s": float(s), "end_s": float(s + 1), "text": entry["text"],
                       "fused_raw": entry["fused"]["raw"] if entry["fused"] else None, "emitted_at": time.time(),
                       "text_delay_s": round(self.clock() - self.reached.get(s + 1, self.clock()), 3)})

    # ---------------------------------------------------------------- the whole stream
    def document(self, source: str, reader: _Reader, reason: str) -> dict[str, Any]:
        n = self.timeline.n
        self.timeline.finalise(n)
        entries = self.spool.entries() or [SecondEntry(0.0, 1.0, None, None, None, None, None)]
        info = reader.info(source, n, self.has_video, self.has_audio)
        coverage, warnings = seconds.coverage_report(info, reader.video_cov, reader.audio_cov)
        transcript = None
        if self.session is not None:
            transcript = Transcript(tuple(sorted(self.session.segments, key=lambda g: g.start_s)),
                                    self.session.language, f"whisper:{self.session.name}")
        guess = self.session.guess if self.session is not None else None
        text = seconds.text_status(
            transcript=transcript, english_only=self.an.text.english_only, words_seen=self.timeline.seen["text"],
            unavailable=self.an.text_unavailable or "no ASR model", failure=self.text_failure,
            language_probability=guess.probability if guess else None)
        status = seconds.statuses(self.timeline, has_video=self.has_video, has_audio=self.has_audio,
                                  frames_sampled=self.frames_seen, coverage=coverage, text=text)
        if reason != "end of stream" and not reason.startswith("reached --max-seconds"):
            warnings = (*warnings, f"stopped: {reason}")
        return seconds.document(
            self.an.record(live=dataclasses.asdict(self.opt), smoothing="causal"), info=info, entries=entries,
            transcript=transcript, status=status, coverage=coverage, warnings=warnings,
            input={"path": source, "size_bytes": 0, "mtime_ns": 0}, settings_key="live", skip_key="live",
            live={"latency_s": self.latency.json(), "shed_seconds": self.shed_seconds, "stopped": reason,
                  "seconds": n})


def _open_waiting(source: str) -> av.container.InputContainer:
    """``open_source`` given at most STALL_S to read the start of the stream (opening a FIFO reads
    until the format is known, and its writer may never send that much)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["container"] = open_source(source)
        except BaseException as e:   # handed to the caller
            box["error"] = e

    opener = threading.Thread(target=target, daemon=True, name="live-open")
    opener.start()
    opener.join(STALL_S)
    if opener.is_alive():
        raise InputError(f"{source}: no data from the source for {STALL_S:g} s while opening it "
                         f"(is anything writing to it?)")
    if "error" in box:
        raise box["error"]
    return box["container"]


def run(analyzer, source: str, options: LiveOptions, out_lines: TextIO, timeline_path: Path | None, *,
        clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Analyse ``source`` until it ends (or Ctrl-C, SIGTERM, --max-seconds, STALL_S without data);
    lines go to ``out_lines``."""
    container = _open_waiting(source)
    if demux.video_stream(container) is None and demux.audio_stream(container) is None:
        raise InputError(f"{source}: no video or audio stream")
    lock = threading.Lock()

    def emit(line: dict[str, Any]) -> None:
        with lock:
            out_lines.write(json.dumps(line, allow_nan=False) + "\n")
            out_lines.flush()

    # One math thread: the reader thread decodes on the other core. Measured on 2 cores (busy machine,
    # 10 s clip played in real time): 0.12 s of compute per second with 1 thread, 0.2-1.8 s with 2
    # (OpenMP threads spinning against the decoder), which broke the 2 s bound.
    from emotion_pipeline.batch import limit_threads
    limit_threads(1)
    q: queue.Queue = queue.Queue(maxsize=READER_QUEUE)
    stop = threading.Event()
    reader = _Reader(container, q, sample_fps=analyzer.cfg.frames_per_second, max_side_px=analyzer.cfg.max_frame_side_px,
                     realtime=options.realtime, stop=stop, max_seconds=options.max_seconds, clock=clock)
    # a file read as fast as it decodes waits for the analysis (the reader's queue is bounded): no
    # second needs shedding, and the lines are the file analysis's; a real-time source sheds
    paced = options.realtime or not Path(source).is_file()
    live = LiveSession(analyzer, options, emit, clock=clock, shed=paced)
    if options.show:
        try:
            live.viewer = Viewer(source)
            log.info("showing the stream in a window (close it to stop showing; Ctrl-C to stop)")
        except Exception as e:   # tkinter missing or no display: headless, as asked where there is none
            log.warning("no window (%s): running headless", " ".join(str(e).split()) or type(e).__name__)
    reason = "end of stream"
    reader.start()
    stalled = False
    try:
        ended = False
        while not ended:
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() - reader.progress <= STALL_S:
                    continue
                item, stalled = (_END,), True   # nothing from the source for STALL_S: it has ended
            items = [item]
            while True:   # everything already waiting, so a slow second never leaves a backlog behind
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            for it in items:
                if it[0] is _END:
                    ended = True
                    live.end(clock())
                elif it[0] == "video":
                    live.on_video(it[1], it[2])
                else:
                    live.on_audio(it[1], it[2], it[3])
            while live.next_second < live.last_second() if ended else live.ready(live.next_second):
                live.process(live.next_second, last=ended and live.next_second == live.last_second() - 1)
                live.next_second += 1
            live.amend_text()
        if stalled:
            reason = f"no data from the source for {STALL_S:g} s"
        elif reader.error:
            reason = reader.error
        elif reader.limit_reached:
            reason = f"reached --max-seconds {options.max_seconds:g}"
    except KeyboardInterrupt as e:
        reason = "terminated" if isinstance(e, Terminated) else "interrupted"
        stop.set()
    finally:
        stop.set()
        deadline = time.monotonic() + 2.0
        while reader.is_alive() and time.monotonic() < deadline:   # a reader blocked on a full queue sees the stop
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            reader.join(timeout=0.05)
        if not reader.is_alive():
            container.close()
    if live.viewer is not None:
        log.info("window showed %d frames", live.viewer.shown)
        live.viewer.close()
    live.amend_text(final=True)
    doc = live.document(source, reader, reason)
    if timeline_path is not None:
        writers.validate(doc)
        writers.write_json_atomic(timeline_path, doc)
    return doc

"""Live: a stream, a webcam, a pipe, or a file played at its real speed, analysed second by second.

    source --reader thread (demux, decode, FrameSampler, AudioPlacer: the offline demuxer's parts)--> queue
      --> each second, once its audio context has arrived: the offline encoders (faces with a
          tracker kept across seconds, voice on the same centred window, VAD-gated), fusion,
          causal smoothing --> one JSON line: the timeline entry + emitted_at + latency_s
      --> Whisper in rolling blocks of voice-detected speech --> "amend" lines that add a past
          second's words and its new fused verdict (the text modality's own, stated delay)
    end (Ctrl-C, end of stream, --max-seconds): the full timeline JSON, as ``analyze`` writes it

Delay: a second's line waits for the voice model's context after it (half its window minus half
a second: 1 s for the shipped 3 s window) and for its compute. When the lines fall behind the
bound (``--max-delay-s``, default 2 s), the loop sheds work: one frame per second instead of
``frames_per_second``, then no voice window, and says so in the line's ``shed`` field.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import av
import numpy as np

from emotion_pipeline import demux, fuse, writers
from emotion_pipeline.errors import InputError
from emotion_pipeline.models import SAMPLE_RATE_HZ
from emotion_pipeline.records import AudioChunk, Frame, ModalityScores, SecondEntry, Transcript, VideoInfo

log = logging.getLogger(__name__)

DEFAULT_MAX_DELAY_S = 2.0
LIVE_ASR_BLOCK_S = 6.0      # seconds of audio gathered before Whisper decodes the finished speech in it
LIVE_LID_SPEECH_S = 8.0     # language named on the first 8 s of speech (files: 30 s)
LIVE_MAX_BUFFER_S = 10.0    # speech without a pause is cut (at its quietest point) after 10 s (files: 180 s)
_END = object()


@dataclass(frozen=True)
class LiveOptions:
    max_delay_s: float = DEFAULT_MAX_DELAY_S   # bound on a line's delay after its second ends
    realtime: bool = False                     # play a file at its own speed (as if it were live)
    max_seconds: float | None = None           # stop after this many seconds of stream
    show: bool = False                         # a window with the picture and the analysis, where a display exists


class Viewer:
    """``--show``: the sampled frames in a Tk window, with the MP4 writer's painter drawing the last
    analysed second's face boxes, labels and fused strip on them. Runs in the main thread
    (``update`` pumps Tk's events); never raises: a closed window only stops the showing."""

    def __init__(self, title: str):
        import tkinter

        self.tk = tkinter
        self.root = tkinter.Tk()            # TclError without a display: the caller runs headless
        self.root.title(f"emotion-pipeline live: {title}")
        self.label = tkinter.Label(self.root)
        self.label.pack()
        self.root.protocol("WM_DELETE_WINDOW", self.close)
        self.open, self.painter, self.photo, self.shown = True, None, None, 0

    def close(self) -> None:
        if self.open:
            self.open = False
            try:
                self.root.destroy()
            except self.tk.TclError:
                pass

    def update(self, frame: Frame, timeline: list[dict[str, Any]], boxes: list[tuple[int, tuple]],
               segments: list[dict[str, Any]]) -> None:
        if not self.open:
            return
        from PIL import Image, ImageTk

        from emotion_pipeline.annotate import Painter

        image = np.ascontiguousarray(frame.image[:, :, ::-1])          # BGR -> RGB
        h, w = image.shape[:2]
        if not timeline:          # before the first second is analysed: the picture alone
            try:
                self.photo = ImageTk.PhotoImage(Image.fromarray(image))
                self.label.configure(image=self.photo)
                self.root.update()
                self.shown += 1
            except self.tk.TclError:
                self.open = False
            return
        if self.painter is None or (self.painter.w, self.painter.h) != (w, h):
            self.painter = Painter({"timeline": timeline}, (w, h), w)
        self.painter.set_timeline(timeline, segments)
        try:
            picture = self.painter.paint(image, min(frame.t_s, timeline[-1]["start_s"] + 0.99), boxes)
            self.photo = ImageTk.PhotoImage(Image.fromarray(picture))
            self.label.configure(image=self.photo)
            self.root.update()
            self.shown += 1
        except self.tk.TclError:      # the window was closed
            self.open = False


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
    """Demuxes and decodes the source, puts ("video", Frame, arrival) and ("audio", samples, end_s,
    arrival) on the queue, in stream order; paces a file to real time when asked."""

    def __init__(self, container, q: queue.Queue, *, sample_fps: float, max_side_px: int, realtime: bool,
                 stop: threading.Event, max_seconds: float | None):
        super().__init__(daemon=True, name="live-reader")
        self.container, self.q, self.realtime, self.stop, self.max_seconds = container, q, realtime, stop, max_seconds
        self.vs = container.streams.video[0] if container.streams.video else None
        self.as_ = container.streams.audio[0] if container.streams.audio else None
        if self.vs is not None:
            self.vs.thread_type = "AUTO"
        self.origin: float | None = None
        self.sampler = demux.FrameSampler(sample_fps, max_side_px)
        self.placer: demux.AudioPlacer | None = None
        self.audio_samples = 0
        self.error: str | None = None

    def _pace(self, t: float, wall0: float) -> None:
        if self.realtime:
            delay = wall0 + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def run(self) -> None:
        wall0 = time.monotonic()
        streams = [s for s in (self.vs, self.as_) if s is not None]
        try:
            for packet in self.container.demux(*streams):
                if self.stop.is_set():
                    break
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue   # a damaged packet: skipped, as the offline demuxer does
                for frame in frames:
                    if frame.time is None:
                        continue
                    if self.origin is None:   # the first frame decoded is t = 0 (a live stream has no start)
                        self.origin = demux.origin_of(self.container) if not self.realtime_source() else frame.time
                        self.placer = demux.AudioPlacer(self.origin)
                    t = frame.time - self.origin
                    if self.max_seconds is not None and t >= self.max_seconds:
                        self.stop.set()
                        break
                    self._pace(t, wall0)
                    if packet.stream is self.vs:
                        if self.sampler.keep(t):
                            self.q.put(("video", Frame(max(t, 0.0), self.sampler.image(frame)), time.monotonic()))
                    else:
                        for samples in self.placer.push(frame):
                            self.audio_samples += len(samples)
                            self.q.put(("audio", samples, self.audio_samples / SAMPLE_RATE_HZ, time.monotonic()))
            if self.placer is not None:
                for samples in self.placer.flush():
                    self.audio_samples += len(samples)
                    self.q.put(("audio", samples, self.audio_samples / SAMPLE_RATE_HZ, time.monotonic()))
        except av.error.FFmpegError as e:
            self.error = f"the source stopped ({e.strerror or type(e).__name__})"
        except Exception as e:   # reported by the main loop as one line
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.q.put((_END,))

    def realtime_source(self) -> bool:
        """Webcams and network streams: their clock starts when we join, not at the container's start."""
        name = self.container.format.name or ""
        return name in ("v4l2", "avfoundation", "dshow") or "rtsp" in name or "hls" in name


class LiveSession:
    """Second-by-second analysis with bounded delay, using an ``Analyzer``'s loaded encoders."""

    def __init__(self, analyzer, options: LiveOptions, emit: Callable[[dict[str, Any]], None]):
        self.an, self.opt, self.emit = analyzer, options, emit
        self.cfg = analyzer.cfg
        self.tracker = None
        self.frames: dict[int, list[Frame]] = {}
        self.audio = np.zeros(0, np.float32)
        self.audio_start = 0                 # sample index of self.audio[0]
        self.audio_end_s = 0.0
        self.video_t = -1.0
        self.has_video = self.has_audio = False
        self.reached: dict[int, float] = {}  # second boundary k -> wall time the stream first reached it
        self.next_second = 0
        self.rows: list[tuple] = []          # (face, audio, text) per emitted second
        self.raw: list[ModalityScores | None] = []
        self.shed: list[list[str]] = []
        self.latencies: list[float] = []
        window_s = float(analyzer.audio.window_s)
        self.lookahead_s = max(0.0, window_s / 2 - 0.5)
        self.session = None
        self.asr_queue: queue.Queue | None = None
        if analyzer.whisper is not None:
            from emotion_pipeline import transcribe
            self.session = transcribe.TranscriptionSession(analyzer.whisper, language_id=analyzer.language_id,
                                                           language=self.cfg.language, block_s=LIVE_ASR_BLOCK_S,
                                                           lid_speech_s=LIVE_LID_SPEECH_S,
                                                           max_buffer_s=LIVE_MAX_BUFFER_S)
            # Whisper decodes in its own thread (CTranslate2 releases the GIL), so a block of speech
            # being transcribed never holds up the seconds' lines
            self.asr_queue = queue.Queue()
            self.asr_thread = threading.Thread(target=self._asr_loop, daemon=True, name="live-asr")
            self.asr_thread.start()
        self.n_segments = 0
        self.text_status: str | None = None
        self.end_wall: float | None = None
        self.viewer: Viewer | None = None
        self.entries: list[dict[str, Any]] = []   # emitted timeline entries (the window's strip)
        self.boxes: list[tuple[int, tuple]] = []  # the last analysed frame's faces
        self._warm_up(window_s)

    def _warm_up(self, window_s: float) -> None:
        """One pass of each model on blank input before the stream starts: first calls allocate
        and pick kernels (half a second or more), which would otherwise land on the first lines."""
        from emotion_pipeline.encoders import FACE_CROP_PX

        self.an.face.detector.detect(np.zeros((240, 320, 3), np.uint8))
        self.an.face.predictor.predict(np.zeros((1, FACE_CROP_PX, FACE_CROP_PX, 3), np.uint8))
        self.an.audio.predictor.predict(np.zeros((1, int(window_s * SAMPLE_RATE_HZ)), np.float32))

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
                        for g in (self.session.segments if self.session is not None else [])]
            self.viewer.update(frame, self.entries, self.boxes, segments)
        self.has_video = True
        self.video_t = max(self.video_t, frame.t_s)
        self.frames.setdefault(int(frame.t_s), []).append(frame)
        self._reach(frame.t_s, wall)

    def on_audio(self, samples: np.ndarray, end_s: float, wall: float) -> None:
        self.has_audio = True
        self.audio = np.concatenate([self.audio, samples])
        self.audio_end_s = end_s
        self._reach(end_s, wall)
        if self.asr_queue is not None:
            self.asr_queue.put((samples, (self.audio_start + len(self.audio) - len(samples)) / SAMPLE_RATE_HZ))

    def _asr_loop(self) -> None:
        while True:
            item = self.asr_queue.get()
            if item is None:
                return
            if not self.session.skip:
                try:
                    self.session.feed(item[0], start_s=item[1])
                except Exception as e:   # words stop; faces and voice go on
                    log.warning("live transcription stopped: %s", e)
                    self.text_status = f"transcription failed ({type(e).__name__}: {e})"
                    self.session.skip = True

    def ready(self, s: int, ended: bool) -> bool:
        if ended:
            return True
        video_ok = not self.has_video or self.video_t >= s + 1 - 1e-6 or (self.has_audio and self.video_t < 0)
        audio_ok = not self.has_audio or self.audio_end_s >= s + 1 + self.lookahead_s
        return (self.has_video or self.has_audio) and video_ok and audio_ok

    # ---------------------------------------------------------------- one second
    def _audio_row(self, s: int, end_s: float | None) -> ModalityScores | None:
        lo_s = max(0, s - 2)
        lo = lo_s * SAMPLE_RATE_HZ - self.audio_start
        hi = int(round((s + 1 + self.lookahead_s) * SAMPLE_RATE_HZ)) - self.audio_start
        samples = self.audio[max(0, lo): max(0, hi)]
        if len(samples) < SAMPLE_RATE_HZ // 10:
            return None
        n_local = s - lo_s + 1
        rows = self.an.audio.per_second([AudioChunk(0.0, samples, SAMPLE_RATE_HZ)],
                                        n_local + int(math.ceil(self.lookahead_s)))
        return rows[s - lo_s]

    def process(self, s: int, ended: bool) -> None:
        started = time.monotonic()
        fallback = self.end_wall or started
        boundary = self.reached.get(s + 1, fallback)          # when the stream passed the end of second s
        needed = s + 1 + (int(math.ceil(self.lookahead_s)) if self.has_audio else 0)
        wait = started - self.reached.get(needed, fallback)   # how long the data it needs has been waiting
        budget = self.opt.max_delay_s - self.lookahead_s
        shed: list[str] = []
        frames = self.frames.pop(s, [])
        if wait > 0.5 * budget and len(frames) > 1:          # behind: one frame for this second
            frames = frames[len(frames) // 2: len(frames) // 2 + 1]
            shed.append("frames")
        face = None
        if frames:
            observations, self.tracker, _ = self.an.face.observe(frames, tracker=self.tracker)
            if observations:
                face = self.an.face.per_second(observations, self.tracker, s + 1)[s]
                last_t = observations[-1].t_s
                self.boxes = [(o.face_id, (o.box.x, o.box.y, o.box.w, o.box.h)) for o in observations if o.t_s == last_t]
        audio = None
        if self.has_audio:
            if wait > budget:                                  # far behind: no voice window either
                shed.append("audio")
            else:
                audio = self._audio_row(s, None)
        row = (face, audio, None)
        raw = fuse.fuse_all([row], method=self.an.fusion_method, weights=self.cfg.modality_weights, head=self.an.head)[0]
        self.rows.append(row)
        self.raw.append(raw)
        self.shed.append(shed)
        smoothed = fuse.smooth(self.raw, self.cfg.smoothing_window_s, causal=True)[-1]
        entry = writers.timeline_entry(SecondEntry(float(s), float(s + 1), face, audio, None, smoothed, raw))
        now = time.monotonic()
        latency = now - boundary
        self.latencies.append(latency)
        line = {"type": "second", **entry, "emitted_at": time.time(), "latency_s": round(latency, 3),
                "compute_s": round(now - started, 3)}
        if shed:
            line["shed"] = shed
        if self.session is not None:
            line["text_pending"] = True
        self.emit(line)
        self.entries.append(entry)
        self._trim(s)

    def _trim(self, s: int) -> None:
        keep_from = max(0, s - 2) * SAMPLE_RATE_HZ     # the voice window of the next second starts at most 2 s back
        if keep_from > self.audio_start:
            self.audio = self.audio[keep_from - self.audio_start:]
            self.audio_start = keep_from

    # ---------------------------------------------------------------- words, late
    def amend_text(self, final: bool = False) -> None:
        if self.session is None:
            return
        if final:
            self.asr_queue.put(None)
            self.asr_thread.join()
            if not self.session.skip:
                self.session.finish()
        segments = list(self.session.segments)
        if len(segments) == self.n_segments or not self.rows:
            return
        new = segments[self.n_segments:]
        self.n_segments = len(segments)
        ctx = int(round(self.an.text.context_s)) + 1
        lo = max(0, int(min(g.start_s for g in new)) - ctx)
        hi = min(len(self.rows), int(max(g.end_s for g in new)) + ctx + 1)
        near = tuple(sorted((g for g in segments if g.end_s >= lo - ctx and g.start_s <= hi + ctx), key=lambda g: g.start_s))
        texts = self.an.text.per_second(Transcript(near, self.session.language, "whisper"), hi)
        for s in range(lo, hi):
            text = texts[s]
            face, audio, old = self.rows[s]
            if text is None or (old is not None and np.allclose(old.probs, text.probs)):
                continue
            self.rows[s] = (face, audio, text)
            self.raw[s] = fuse.fuse_all([self.rows[s]], method=self.an.fusion_method,
                                        weights=self.cfg.modality_weights, head=self.an.head)[0]
            entry = writers.timeline_entry(SecondEntry(float(s), float(s + 1), face, audio, text, self.raw[s], self.raw[s]))
            self.emit({"type": "amend", "start_s": float(s), "end_s": float(s + 1), "text": entry["text"],
                       "fused_raw": entry["fused"]["raw"] if entry["fused"] else None, "emitted_at": time.time(),
                       "text_delay_s": round(time.monotonic() - self.reached.get(s + 1, time.monotonic()), 3)})

    # ---------------------------------------------------------------- the whole stream
    def document(self, source: str, transcript: Transcript | None, reason: str) -> dict[str, Any]:
        n = len(self.rows)
        smoothed = fuse.smooth(self.raw, self.cfg.smoothing_window_s, causal=True)
        entries = [SecondEntry(float(i), float(i + 1), f, a, t, sm, r)
                   for i, ((f, a, t), sm, r) in enumerate(zip(self.rows, smoothed, self.raw))]
        info = VideoInfo(path=source, duration_s=float(max(n, 1)), fps=None, width=None, height=None, rotation_deg=0,
                         has_video=self.has_video, has_audio=self.has_audio, video_codec=None, audio_codec=None,
                         audio_sample_rate_hz=SAMPLE_RATE_HZ if self.has_audio else None)

        def status(ok: bool, why: str) -> dict[str, Any]:
            return {"status": "ok" if ok else "missing", "reason": None if ok else why, "coverage": None}

        modalities = {"face": status(any(r[0] for r in self.rows), "no face seen" if self.has_video else "no video stream"),
                      "audio": status(any(r[1] for r in self.rows), "no speech detected" if self.has_audio else "no audio stream"),
                      "text": status(any(r[2] for r in self.rows), self.text_status or (
                          "no words" if self.session is not None else self.an.whisper_problem or "no ASR model"))}
        doc = writers.timeline_document(
            info=info, entries=entries or [SecondEntry(0.0, 1.0, None, None, None, None, None)], transcript=transcript,
            models=self.an.models, software=self.an.software, config=dataclasses.asdict(self.cfg) | {
                "live": dataclasses.asdict(self.opt), "smoothing": "causal"},
            modalities=modalities, coverage={}, warnings=[] if reason == "end of stream" else [f"stopped: {reason}"])
        doc["input"] = {"path": source, "size_bytes": 0, "mtime_ns": 0}
        doc["settings_key"] = doc["skip_key"] = "live"
        doc["live"] = {"latency_s": {"median": round(float(np.median(self.latencies)), 3) if self.latencies else None,
                                     "max": round(float(max(self.latencies)), 3) if self.latencies else None},
                       "shed_seconds": sum(1 for s in self.shed if s), "stopped": reason,
                       "seconds": len(self.rows)}
        return doc


def run(analyzer, source: str, options: LiveOptions, out_lines: TextIO, timeline_path: Path | None) -> dict[str, Any]:
    """Analyse ``source`` until it ends (or Ctrl-C / --max-seconds); lines go to ``out_lines``."""
    container = open_source(source)
    if not container.streams.video and not container.streams.audio:
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
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    reader = _Reader(container, q, sample_fps=analyzer.cfg.frames_per_second, max_side_px=analyzer.cfg.max_frame_side_px,
                     realtime=options.realtime, stop=stop, max_seconds=options.max_seconds)
    live = LiveSession(analyzer, options, emit)
    if options.show:
        try:
            live.viewer = Viewer(source)
            log.info("showing the stream in a window (close it to stop showing; Ctrl-C to stop)")
        except Exception as e:   # tkinter missing or no display: headless, as asked where there is none
            log.warning("no window (%s): running headless", " ".join(str(e).split()) or type(e).__name__)
    reason = "end of stream"
    reader.start()
    try:
        ended = False
        while not ended:
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                continue
            items = [item]
            while True:   # everything already waiting, so a slow second never leaves a backlog behind
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            for it in items:
                if it[0] is _END:
                    ended = True
                    live.end_wall = time.monotonic()
                elif it[0] == "video":
                    live.on_video(it[1], it[2])
                else:
                    live.on_audio(it[1], it[2], it[3])
            while live.ready(live.next_second, False) or (ended and live.next_second < _last_second(live)):
                live.process(live.next_second, ended)
                live.next_second += 1
            live.amend_text()
        if reader.error:
            reason = reader.error
    except KeyboardInterrupt:
        reason = "interrupted"
        stop.set()
    finally:
        stop.set()
        reader.join(timeout=2.0)
        if not reader.is_alive():
            container.close()
    if live.viewer is not None:
        log.info("window showed %d frames", live.viewer.shown)
        live.viewer.close()
    if live.session is not None:
        live.amend_text(final=True)
    transcript = None
    if live.session is not None:
        transcript = Transcript(tuple(sorted(live.session.segments, key=lambda g: g.start_s)),
                                live.session.language, f"whisper:{live.session.name}")
        if live.session.skip:
            live.text_status = (f"speech is in '{live.session.language}' and the text model is English-only; "
                                f"not scored")
    doc = live.document(source, transcript, reason)
    if timeline_path is not None:
        writers.validate(doc)
        writers.write_json_atomic(timeline_path, doc)
    return doc


def _last_second(live: LiveSession) -> int:
    """Seconds the stream reached (none when nothing was decoded)."""
    if not (live.has_video or live.has_audio):
        return 0
    end = max(live.video_t + 1e-6, live.audio_end_s)
    return max(1, int(math.ceil(end - 0.1)))

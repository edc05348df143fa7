"""Demuxer: probe a media file, stream sampled video frames and 16 kHz mono audio in chunks.

PyAV (bundled FFmpeg libraries) decodes; nothing is ever read whole into memory.

One time base: every stream's timestamps are taken relative to one origin, the first video
frame's presentation time (the audio's when there is no video), so the faces, the voice and the
words of a second line up whatever the container's start offset (MPEG-TS starts at about 1.4 s,
``-output_ts_offset`` anywhere). Audio is placed by its timestamps: a gap is filled with silence
and counted as lost, samples before the origin (AAC priming) are dropped.

Damaged input: packets are decoded one by one and a packet the decoder rejects is skipped, so
decoding goes on past damage as ffmpeg does. What each stream actually delivered, against what
the container promises, is recorded in a ``Coverage`` tracker and reported as ``StreamCoverage``.

Frames are sampled by presentation time, so variable frame rate sources are sampled evenly;
display rotation metadata is applied to the pixels; frames are downscaled to ``max_side_px``.
"""
from __future__ import annotations

import logging
import math
import queue
import re
import threading
from pathlib import Path
from typing import Iterator, TypeVar

import av
import numpy as np

from emotion_pipeline.errors import InputError
from emotion_pipeline.languages import normalise_language
from emotion_pipeline.models import SAMPLE_RATE_HZ   # what Whisper, Wav2Vec2 and our audio model expect
from emotion_pipeline.records import AudioChunk, Frame, Segment, StreamCoverage, Track, VideoInfo

log = logging.getLogger(__name__)

STILL_IMAGE_CODECS = {"mjpeg", "png", "bmp", "webp", "tiff", "gif", "jpegls", "jpeg2000"}
STILL_IMAGE_DURATION_S = 1.0  # a still image is analysed as one second of video
# A hole in a stream longer than this is recorded as lost. Video: a frame may legitimately last
# this long (variable frame rate); audio: one AAC packet is 64 ms at 16 kHz, 21 ms at 48 kHz.
VIDEO_GAP_S = 0.5
AUDIO_GAP_S = 0.1
# Audio placed within this of where the previous frame ended counts as contiguous (timestamps
# are rounded to the container's time base; a gap above it is filled with silence).
AUDIO_JITTER_S = 0.03
# AAC encoders put 1024-2112 priming samples before the first real one (21-132 ms at 16-48 kHz);
# audio that starts this little before the picture is priming, dropped rather than a lead-in.
PRIMING_MAX_S = 0.2
# Timestamps that restart mid-file (two MPEG-TS recordings joined with ``cat``, a camera whose clock
# reset): in a format FFmpeg flags as allowing it (AVFMT_TS_DISCONT: MPEG-TS, MPEG-PS), a stream's
# timestamps that go back more than RESTART_BACK_S, or jump ahead more than RESTART_FORWARD_S (ffmpeg's
# own -dts_delta_threshold), continue where the stream was, as the ffmpeg command line joins them.
TS_DISCONT = 0x0200
RESTART_BACK_S = 0.5
RESTART_FORWARD_S = 10.0
TEXT_SUBTITLE_CODECS = {"mov_text", "subrip", "srt", "webvtt", "text", "ass", "ssa"}


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: not a readable media file ({e.strerror or type(e).__name__})") from e
    except (UnicodeDecodeError, ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable media file ({e})") from e


# ---------------------------------------------------------------- which streams
def _language(stream) -> str | None:
    tag = (stream.metadata or {}).get("language")
    return tag if tag and tag.lower() not in ("und", "unk", "zxx", "mul") else None


def _default(stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.default)


def is_cover(stream) -> bool:
    """An attached picture (the cover art of an mp3 or m4a, a thumbnail): a picture, not a video."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def video_stream(container):
    """The video stream to analyse: the default one among those that are not cover art, else the
    first of them; None when there is none."""
    videos = [s for s in container.streams.video if not is_cover(s)]
    return next((s for s in videos if _default(s)), videos[0] if videos else None)


def audio_stream(container):
    """The audio stream to analyse: the default one (English first among several), else an English
    one, else the first; None when there is none."""
    audios = list(container.streams.audio)
    if not audios:
        return None
    return min(audios, key=lambda s: (not _default(s), normalise_language(_language(s)) != "en", s.index))


def subtitle_stream(container):
    """A text subtitle stream (mov_text, SubRip, WebVTT, ASS) to stand in for the transcript: the
    default one (English first), else an English one, else the first; None when there is none."""
    subs = [s for s in container.streams.subtitles if s.codec_context.name in TEXT_SUBTITLE_CODECS]
    if not subs:
        return None
    return min(subs, key=lambda s: (not _default(s), normalise_language(_language(s)) != "en", s.index))


def tracks_of(container) -> tuple[Track, ...]:
    """Every stream of the file, the ones analysed (``video_stream``, ``audio_stream``) marked used."""
    used = {s.index for s in (video_stream(container), audio_stream(container)) if s is not None}
    out = []
    for s in container.streams:
        kind = "cover" if s.type == "video" and is_cover(s) else s.type
        kind = kind if kind in ("video", "audio", "subtitle", "cover") else "data"
        codec = s.codec_context.name if s.codec_context is not None else None
        out.append(Track(s.index, kind, codec, _language(s), _default(s), s.index in used))
    return tuple(out)


class Restarts:
    """Joins timestamps that restart mid-file (RESTART_BACK_S, RESTART_FORWARD_S) by shifting the
    later packets to continue where their stream was. One shift per restart for every stream (so the
    joined recordings keep their own sync) when it fits the stream, else the stream's own. ``at_s``:
    where each restart happened (container seconds, after the shift)."""

    def __init__(self, container):
        self.enabled = bool((container.format.flags or 0) & TS_DISCONT)
        self.shift_s: dict[int, float] = {}      # stream index -> seconds added to its timestamps
        self.end_s: dict[int, float] = {}        # stream index -> end of its last packet (after the shift)
        self.last_shift_s = 0.0                  # the latest restart's shift
        self.at_s: list[float] = []

    def fix(self, packet) -> None:
        if not self.enabled or packet.dts is None or not packet.time_base:
            return
        i, tb = packet.stream.index, packet.time_base
        shift = self.shift_s.get(i, 0.0)
        t = float(packet.dts * tb) + shift
        end = self.end_s.get(i)
        if end is not None and (t < end - RESTART_BACK_S or t > end + RESTART_FORWARD_S):
            raw = t - shift
            shared = self.last_shift_s
            if self.at_s and end - RESTART_BACK_S <= raw + shared <= end + 1.0:
                # the restart another stream has already joined (moved on past this stream's last
                # packet where the two recordings' streams ended a few ms apart: times stay increasing)
                shift = shared + max(0.0, end - (raw + shared))
            else:
                shift = end - raw
                self.last_shift_s = shift
                self.at_s.append(end)
                log.debug("timestamps restart at %.2f s (container time): continued from there", end)
            self.shift_s[i] = shift
            t = raw + shift
        if shift:
            k = int(round(shift / tb))
            packet.dts += k
            if packet.pts is not None:
                packet.pts += k
        self.end_s[i] = max(end or t, t + float((packet.duration or 0) * tb))


def decoded(container, streams, coverage: "dict[int, Coverage] | None" = None
            ) -> Iterator[tuple[av.stream.Stream, av.frame.Frame]]:
    """(stream, frame) for every frame of ``streams`` (demuxed together, in stream order) the decoder
    can make: a rejected packet is skipped and counted in its stream's ``coverage`` (keyed by
    stream index), not the end of decoding; timestamps that restart are joined (``Restarts``); each
    packet's time goes to its ``coverage``, which tells a held frame from lost video by it. The file
    analysis and the live reader both decode here."""
    coverage = coverage or {}
    restarts = Restarts(container)
    try:
        for packet in container.demux(*streams):
            restarts.fix(packet)
            cov = coverage.get(packet.stream.index)
            if cov is not None and packet.dts is not None and packet.time_base:
                cov.packet(float(packet.dts * packet.time_base))
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                if packet.stream.index in coverage:
                    coverage[packet.stream.index].errors += 1
                continue
            for frame in frames:
                yield packet.stream, frame
    except av.error.FFmpegError as e:  # the demuxer itself gave up (truncated or garbled container)
        for cov in coverage.values():
            cov.errors += 1
            cov.stopped = f"{type(e).__name__}: {e.strerror or e}"
        if not coverage:
            raise


def _decoded(container, stream, coverage: "Coverage | None" = None) -> Iterator[av.frame.Frame]:
    """Every frame of ``stream`` the decoder can make (``decoded`` for one stream)."""
    try:
        for _, frame in decoded(container, (stream,), {stream.index: coverage} if coverage is not None else None):
            yield frame
    except av.error.FFmpegError:
        return


def _stream_start(stream) -> float | None:
    if stream.start_time is None or not stream.time_base:
        return None
    return float(stream.start_time * stream.time_base)


def origin_of(container) -> float:
    """Container time that is t = 0 on the timeline: the earliest stream's start, except that audio
    starting a hair before the picture (encoder priming, up to PRIMING_MAX_S) does not move it:
    then the first video frame is t = 0, as a player shows it. A camera that starts seconds after
    the microphone (or the reverse) keeps both: the earlier stream's start is t = 0."""
    starts = {kind: _stream_start(stream) for kind, stream in
              (("video", video_stream(container)), ("audio", audio_stream(container))) if stream is not None}
    starts = {k: v for k, v in starts.items() if v is not None}
    if not starts:
        return container.start_time / av.time_base if container.start_time is not None else 0.0
    if "video" in starts and "audio" in starts and 0 <= starts["video"] - starts["audio"] <= PRIMING_MAX_S:
        return starts["video"]
    return min(starts.values())


def _stream_end(stream) -> float | None:
    """End of a stream in container time, from the stream's own header (None when it has none,
    as in Matroska: then only the container's end is known)."""
    start = _stream_start(stream)
    if stream.duration and stream.time_base and start is not None:
        return start + float(stream.duration * stream.time_base)
    return None


def _container_end(container) -> float | None:
    if container.duration and container.duration > 0:
        c_start = container.start_time / av.time_base if container.start_time is not None else 0.0
        return c_start + container.duration / av.time_base
    return None


def _rotation_of(stream, container) -> int:
    """Display rotation in degrees counter-clockwise, read from the first decodable frame."""
    for frame in _decoded(container, stream):
        return int(round(getattr(frame, "rotation", 0) or 0)) % 360
    return 0


def _is_still(container, stream) -> bool:
    """One picture, not a video: an image codec in an image demuxer (jpeg_pipe, image2...), or a
    one-frame stream. MJPEG in .mkv / .avi is a video (its frames are JPEGs)."""
    if stream.codec_context.name not in STILL_IMAGE_CODECS:
        return False
    fmt = container.format.name or ""
    return fmt == "image2" or fmt.endswith("_pipe") or stream.frames == 1


def probe(path: str | Path) -> VideoInfo:
    path = Path(path)
    with _open(path) as container:
        vs, a = video_stream(container), audio_stream(container)
        if vs is None and a is None:
            raise InputError(f"{path}: no video or audio stream"
                             + (" (only cover art)" if container.streams.video else ""))
        origin = origin_of(container)
        ends: dict[str, float] = {}
        starts: dict[str, float] = {}
        width = height = None
        fps = None
        rotation = 0
        still = False
        vcodec = acodec = None
        if vs is not None:
            vcodec = vs.codec_context.name
            width, height = vs.codec_context.width, vs.codec_context.height
            fps = float(vs.average_rate) if vs.average_rate else (float(vs.guessed_rate) if vs.guessed_rate else None)
            still = _is_still(container, vs)
            starts["video"] = max(0.0, (_stream_start(vs) or origin) - origin)
            end = _stream_end(vs)
            if end is not None:
                ends["video"] = end - origin
            rotation = _rotation_of(vs, container)
            if rotation in (90, 270):
                width, height = height, width
            if not width or not height:
                raise InputError(f"{path}: video stream has no frame size (corrupt header?)")
        rate = None
        if a is not None:
            acodec, rate = a.codec_context.name, a.rate
            starts["audio"] = max(0.0, (_stream_start(a) or origin) - origin)
            end = _stream_end(a)
            if end is not None:
                ends["audio"] = end - origin
        chosen = {k: s for k, s in (("video", vs), ("audio", a)) if s is not None}
        c_end = _container_end(container)
        # the container's end counts only where a stream has no length of its own (it may be a
        # subtitle's or cover art's end, past the picture and the sound)
        lengthless = c_end is not None and any(k not in ends for k in chosen)
        container_end = [c_end - origin] if c_end is not None and (lengthless or not ends) else []
        duration_s = max([*ends.values(), *container_end], default=0.0)
        restarts: tuple[float, ...] = ()
        if still:
            duration_s = STILL_IMAGE_DURATION_S
            ends = {"video": STILL_IMAGE_DURATION_S}
        elif Restarts(container).enabled or not duration_s or not math.isfinite(duration_s) or duration_s <= 0:
            # no length in the header (a raw stream), or timestamps that may restart (MPEG-TS): every
            # packet read once (demux only, ~4 us a packet: 0.5 s for an hour of MPEG-TS)
            scanned, restarts = _scan(path, {s.index: k for k, s in chosen.items()})
            if restarts or not duration_s or not math.isfinite(duration_s) or duration_s <= 0:
                ends = {k: e - origin for k, e in scanned.items()}
                duration_s = max(ends.values(), default=0.0)
                if not restarts:
                    ends = {}   # only the container's end is known (as before: no per-stream lengths)
        if not math.isfinite(duration_s) or duration_s <= 0:
            raise InputError(f"{path}: media has zero duration")
        tracks = tracks_of(container)
    return VideoInfo(path=str(path), duration_s=round(duration_s, 3), fps=fps, width=width, height=height,
                     rotation_deg=rotation, has_video=vs is not None, has_audio=a is not None,
                     video_codec=vcodec, audio_codec=acodec, audio_sample_rate_hz=rate, is_still_image=still,
                     origin_s=round(origin, 6),
                     video_span_s=round(ends["video"], 3) if "video" in ends else None,
                     audio_span_s=round(ends["audio"], 3) if "audio" in ends else None,
                     video_start_s=round(starts.get("video", 0.0), 3), audio_start_s=round(starts.get("audio", 0.0), 3),
                     tracks=tracks, restarts_s=tuple(round(r - origin, 3) for r in restarts))


def _scan(path: Path, kinds: dict[int, str]) -> tuple[dict[str, float], tuple[float, ...]]:
    """(end of each of the streams ``kinds`` names, in container seconds, where the last packet ends;
    the restarts joined on the way), read packet by packet (demux only, no decoding) from a fresh
    opening: a raw stream (.h264) cannot seek back. Packets without timestamps (a raw stream) are
    counted at their stream's frame rate."""
    ends: dict[str, float] = {}
    untimed: dict[str, float] = {}
    with _open(path) as container:
        restarts = Restarts(container)
        try:
            for packet in container.demux():
                kind = kinds.get(packet.stream.index)
                if kind is None:
                    continue
                restarts.fix(packet)
                tb = packet.time_base
                if packet.pts is not None and tb:
                    end = float((packet.pts + (packet.duration or 0)) * tb)
                elif packet.size == 0:
                    continue   # a flush packet
                else:
                    rate = (packet.stream.guessed_rate or packet.stream.average_rate) if kind == "video" else None
                    step = (float(packet.duration * tb) if packet.duration and tb
                            else 1.0 / float(rate) if rate else 0.0)
                    end = untimed[kind] = untimed.get(kind, 0.0) + step
                ends[kind] = max(ends.get(kind, 0.0), end)
        except av.error.FFmpegError:
            pass  # what was read so far is all there is
    return ends, tuple(restarts.at_s)


class Coverage:
    """What one stream delivered: decoded stretches on the timeline and rejected packets.

    Fed by the demuxer while it streams (``packet(t)`` per demuxed packet, ``add(start_s, end_s)``
    per decoded frame); ``result()`` gives the frozen record once the stream is exhausted. A hole
    between decoded frames is lost, unless the container had no packet in it either: then the frame
    before it stayed on screen (variable frame rate: a still screen, a paused camera) and the hole is
    ``held`` (``add`` returns True), not lost."""

    def __init__(self, kind: str, gap_s: float, start_s: float = 0.0):
        self.kind, self.gap_s, self.start_s = kind, gap_s, start_s
        self.errors = 0
        self.stopped: str | None = None
        self.decoded_s = 0.0
        self.cursor = start_s                # end of the decoded stream so far (timeline seconds)
        self.lost: list[tuple[float, float]] = []
        self.held: list[tuple[float, float]] = []
        self.origin_s: float | None = None   # set by the placer: container seconds of t = 0
        self.last_packet_s: float | None = None   # container seconds
        self.silences: list[tuple[float, float]] = []   # container seconds with no packet at all (recent ones)

    def packet(self, t_s: float) -> None:
        """A packet of this stream was demuxed at container time ``t_s`` (its decode time)."""
        if self.last_packet_s is not None and t_s - self.last_packet_s > self.gap_s:
            self.silences = [*self.silences[-7:], (self.last_packet_s, t_s)]
        self.last_packet_s = t_s if self.last_packet_s is None else max(self.last_packet_s, t_s)

    def _silent(self, a: float, b: float) -> bool:
        """Whether the container had no packet in (a, b) (timeline seconds), up to ``gap_s``."""
        if self.origin_s is None:
            return False
        covered = sum(max(0.0, min(b, y - self.origin_s) - max(a, x - self.origin_s)) for x, y in self.silences)
        return covered >= (b - a) - self.gap_s

    def add(self, start_s: float, end_s: float) -> bool:
        """One decoded frame; True when the hole before it was a held frame."""
        held = False
        if start_s - self.cursor > self.gap_s:
            held = self.decoded_s > 0 and self._silent(self.cursor, start_s)
            if held:
                self.held.append((self.cursor, start_s))
                self.decoded_s += start_s - self.cursor
            else:
                self.lost.append((self.cursor, start_s))
        self.decoded_s += max(0.0, end_s - max(start_s, self.cursor))
        self.cursor = max(self.cursor, end_s)
        return held

    def result(self, end_s: float) -> StreamCoverage:
        """``end_s``: where the header says the stream ends on the timeline."""
        lost = list(self.lost)
        if end_s - self.cursor > self.gap_s:
            lost.append((self.cursor, end_s))
        lost_total = sum(b - a for a, b in lost)
        expected_s = max(0.0, end_s - self.start_s)
        decoded = min(self.decoded_s, expected_s) if expected_s > 0 else self.decoded_s
        return StreamCoverage(kind=self.kind, expected_s=round(expected_s, 3), decoded_s=round(decoded, 3),
                              lost_s=tuple((round(a, 3), round(b, 3)) for a, b in lost),
                              lost_total_s=round(lost_total, 3), decode_errors=self.errors, stopped=self.stopped,
                              held_s=tuple((round(a, 3), round(b, 3)) for a, b in self.held))


def _scaled_size(w: int, h: int, max_side_px: int) -> tuple[int, int]:
    scale = min(1.0, max_side_px / max(w, h))
    # even sizes keep swscale happy with odd-sized sources
    return max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)


class FrameSampler:
    """Which decoded frames to keep for ``sample_fps`` frames per second of presentation time:
    evenly spaced whatever the source's frame rate; a gap (VFR, dropped frames) skips targets,
    never bunches them. Also turns a kept frame into a display-ready BGR image."""

    def __init__(self, sample_fps: float, max_side_px: int):
        self.period, self.max_side_px = 1.0 / sample_fps, max_side_px
        self.tolerance = 0.25 * self.period
        self.next_t = 0.0

    def keep(self, t: float) -> bool:
        if t + self.tolerance < self.next_t:
            return False
        self.next_t = max(self.next_t + self.period, (math.floor((t + self.tolerance) / self.period) + 1) * self.period)
        return True

    def image(self, frame) -> np.ndarray:
        rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
        w, h = _scaled_size(frame.width, frame.height, self.max_side_px)
        image = frame.to_ndarray(format="bgr24", width=w, height=h)
        if rot:
            image = np.ascontiguousarray(np.rot90(image, k=rot // 90))
        return image


class AudioPlacer:
    """Decoded audio frames -> 16 kHz mono float32 samples on the timeline (sample 0 is the origin):
    a late start or a hole becomes silence (in pieces of at most ``max_piece`` samples, so a long
    hole stays bounded), samples before the origin (encoder priming) are dropped."""

    def __init__(self, origin: float, coverage: Coverage | None = None, max_piece: int = 30 * SAMPLE_RATE_HZ):
        self.origin, self.coverage, self.max_piece = origin, coverage, max_piece
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
        self.expected_t: float | None = None   # where the next decoded frame should start, seconds
        self.drop = 0                          # samples still to discard

    def _trim(self, samples: np.ndarray) -> np.ndarray:
        if self.drop:
            cut = min(self.drop, len(samples))
            samples, self.drop = samples[cut:], self.drop - cut
        return samples

    def push(self, frame) -> Iterator[np.ndarray]:
        dur = frame.samples / frame.sample_rate if frame.sample_rate else 0.0
        t = frame.time - self.origin if frame.time is not None else (self.expected_t or 0.0)
        gap = 0
        if self.expected_t is None:
            if t > AUDIO_JITTER_S:               # audio starts after the picture: silence before it
                gap = int(round(t * SAMPLE_RATE_HZ))
            elif t < 0:                          # before the origin (encoder priming): drop it
                self.drop = int(round(-t * SAMPLE_RATE_HZ))
        elif t - self.expected_t > AUDIO_JITTER_S:   # packets lost or a hole in the stream: silence
            gap = int(round((t - self.expected_t) * SAMPLE_RATE_HZ))
        while gap > 0:
            piece = min(gap, self.max_piece)
            yield np.zeros(piece, dtype=np.float32)
            gap -= piece
        self.expected_t = t + dur
        if self.coverage is not None:
            self.coverage.add(max(t, 0.0), max(t + dur, 0.0))
        for out in self.resampler.resample(frame):
            samples = self._trim(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
            if len(samples):
                yield samples

    def flush(self) -> Iterator[np.ndarray]:
        try:
            outs = self.resampler.resample(None)
        except av.error.FFmpegError:
            return  # nothing buffered
        for out in outs:
            samples = self._trim(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
            if len(samples):
                yield samples


def frame_seconds(frame, default_s: float) -> float:
    """How long a decoded video frame lasts, from its own duration when it has one."""
    if getattr(frame, "duration", None) and frame.time_base:
        return float(frame.duration * frame.time_base)
    return default_s


class FramePlacer:
    """Decoded video frames -> the sampled ``Frame``s on the timeline (seconds from ``origin``),
    every decoded frame recorded in ``coverage``. A frame without a timestamp (a raw .h264 stream)
    follows the one before it; a frame that stayed on screen (``Coverage.add``: a held frame) is
    sampled again at each sampling time it covered, as a player shows it."""

    def __init__(self, origin: float, sampler: FrameSampler, coverage: Coverage | None = None, *,
                 still: bool = False, default_dur_s: float | None = None):
        self.origin, self.sampler, self.coverage, self.still = origin, sampler, coverage, still
        self.default_dur_s = default_dur_s or sampler.period
        self.next_t = 0.0                    # where a frame without a timestamp goes
        self.previous = None                 # the last decoded frame, (t, frame)
        if coverage is not None:
            coverage.origin_s = origin

    def push(self, frame) -> list[Frame]:
        """The sampled frames up to and including ``frame`` (none, it, or held ones before it)."""
        dur = STILL_IMAGE_DURATION_S if self.still else frame_seconds(frame, self.default_dur_s)
        t = (frame.time - self.origin) if frame.time is not None else self.next_t
        self.next_t = max(self.next_t, t + dur)
        out: list[Frame] = []
        if self.coverage is not None and self.coverage.add(max(t, 0.0), max(t, 0.0) + dur) and self.previous:
            image = self.sampler.image(self.previous)   # on screen until now: one conversion for every sample
            while (target := self.sampler.next_t) + self.sampler.tolerance < t and self.sampler.keep(target):
                out.append(Frame(t_s=target, image=image))
        self.previous = frame
        if self.sampler.keep(t):
            out.append(Frame(t_s=max(t, 0.0), image=self.sampler.image(frame)))
        return out


def iter_frames(path: str | Path, *, sample_fps: float, max_side_px: int = 640,
                coverage: Coverage | None = None) -> Iterator[Frame]:
    """Yield frames sampled at ``sample_fps`` by presentation time (seconds from the timeline's
    origin), BGR, rotated for display. ``coverage`` (optional) records every decoded frame (held
    frames are sampled again either way, so every caller sees the same frames)."""
    path = Path(path)
    coverage = coverage if coverage is not None else Coverage("video", VIDEO_GAP_S)
    with _open(path) as container:
        stream = video_stream(container)
        if stream is None:
            return
        stream.thread_type = "AUTO"
        placer = FramePlacer(origin_of(container), FrameSampler(sample_fps, max_side_px), coverage,
                             still=_is_still(container, stream),
                             default_dur_s=1.0 / float(stream.average_rate) if stream.average_rate else None)
        for frame in _decoded(container, stream, coverage):
            yield from placer.push(frame)


T = TypeVar("T")
PREFETCH_FRAMES = 8   # decoded ahead of the face pass: on 2 cores decoding overlaps detection and the CNN
                      # (face stage of Obama_clip1 3.97 -> 3.00 s per minute, a 720p copy 7.41 -> 6.28)


def prefetched(items: Iterator[T], depth: int = PREFETCH_FRAMES) -> Iterator[T]:
    """``items`` produced on a thread of their own, at most ``depth`` ahead of the consumer, in the
    same order; an exception of ``items`` is raised here, where the consumer is; a consumer that
    stops early (an error, ``close``) stops the producer, and the producer closes ``items``."""
    box: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def put(entry: tuple) -> bool:
        """Hand ``entry`` over; False once the consumer has stopped (a full box never blocks it)."""
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:   # noqa: BLE001 - handed to the consumer, raised there
            put((end, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = box.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def iter_audio(path: str | Path, *, chunk_s: float = 30.0, coverage: Coverage | None = None) -> Iterator[AudioChunk]:
    """Yield consecutive chunks of 16 kHz mono float32 audio on the timeline (sample 0 is the
    origin); nothing when there is no audio stream. Gaps between decoded frames are silence."""
    path = Path(path)
    chunk_len = int(chunk_s * SAMPLE_RATE_HZ)
    with _open(path) as container:
        stream = audio_stream(container)
        if stream is None:
            return
        placer = AudioPlacer(origin_of(container), coverage, max_piece=chunk_len)
        pending: list[np.ndarray] = []
        n_pending = 0
        emitted = 0          # samples already yielded

        def take(n: int) -> np.ndarray:
            nonlocal pending, n_pending
            buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
            out, rest = buf[:n], buf[n:]
            pending = [rest] if len(rest) else []
            n_pending = len(rest)
            return out

        def pieces() -> Iterator[np.ndarray]:
            for frame in _decoded(container, stream, coverage):
                yield from placer.push(frame)
            yield from placer.flush()

        for samples in pieces():
            pending.append(samples)
            n_pending += len(samples)
            while n_pending >= chunk_len:
                yield AudioChunk(emitted / SAMPLE_RATE_HZ, take(chunk_len), SAMPLE_RATE_HZ)
                emitted += chunk_len
        if n_pending:
            yield AudioChunk(emitted / SAMPLE_RATE_HZ, take(n_pending), SAMPLE_RATE_HZ)


# ---------------------------------------------------------------- subtitles inside the file
_ASS_FIELDS = 8   # ReadOrder, Layer, Style, Name, MarginL, MarginR, MarginV, Effect, then the text
_ASS_TAG = re.compile(r"\{[^}]*\}|<[^>]+>")


def _cue_text(codec: str, data: bytes) -> str:
    """The text of one subtitle packet: mov_text is a 2-byte length then UTF-8 (then style boxes);
    SubRip and WebVTT are the text; ASS a dialogue line whose ninth field is the text."""
    if codec == "mov_text":
        n = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
        data = data[2:2 + n]
    text = data.decode("utf-8", errors="replace")
    if codec in ("ass", "ssa"):
        text = text.split(",", _ASS_FIELDS)[-1].replace("\\N", " ").replace("\\n", " ")
    return " ".join(_ASS_TAG.sub("", text).split())


def subtitle_cues(path: str | Path, max_cues: int) -> tuple[Track, list[Segment]] | None:
    """The text subtitle track ``subtitle_stream`` chooses and its cues (start, end on the timeline,
    text; words not yet spread), at most ``max_cues`` (more is an InputError: bounded by what the
    video can hold); None when the file has no text subtitles."""
    path = Path(path)
    with _open(path) as container:
        stream = subtitle_stream(container)
        if stream is None:
            return None
        origin = origin_of(container)
        codec = stream.codec_context.name
        cues: list[Segment] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is None or not packet.time_base or packet.size == 0:
                    continue
                start = float(packet.pts * packet.time_base) - origin
                end = start + float((packet.duration or 0) * packet.time_base)
                text = _cue_text(codec, bytes(packet))
                if text and end > start >= 0:
                    cues.append(Segment(round(start, 3), round(end, 3), text))
                    if len(cues) > max_cues:
                        raise InputError(f"{path}: its subtitle track #{stream.index} has more than {max_cues} "
                                         f"cues, more than the video can hold")
        except av.error.FFmpegError:
            pass   # the cues read so far
        track = Track(stream.index, "subtitle", codec, _language(stream), _default(stream), True)
    return track, sorted(cues, key=lambda c: c.start_s)

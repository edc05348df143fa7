"""Demuxer: probe a media file, stream sampled video frames and 16 kHz mono audio in chunks.

PyAV (bundled FFmpeg libraries) decodes; nothing is ever read whole into memory. Frames are
sampled by presentation time, so variable frame rate sources are sampled evenly; display
rotation metadata is applied to the pixels; frames are downscaled to ``max_side_px``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from pipeline.errors import InputError
from pipeline.records import AudioChunk, Frame, VideoInfo

log = logging.getLogger(__name__)

AUDIO_RATE_HZ = 16_000  # what Whisper, Wav2Vec2 and our audio model expect
STILL_IMAGE_CODECS = {"mjpeg", "png", "bmp", "webp", "tiff", "gif"}
STILL_IMAGE_DURATION_S = 1.0  # a still image is analysed as one second of video


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
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a readable media file ({e})") from e


def _rotation_of(stream, container) -> int:
    """Display rotation in degrees counter-clockwise, read from the first decodable frame."""
    try:
        for frame in container.decode(stream):
            return int(round(getattr(frame, "rotation", 0) or 0)) % 360
    except av.error.FFmpegError:
        return 0
    return 0


def probe(path: str | Path) -> VideoInfo:
    path = Path(path)
    with _open(path) as container:
        vstreams = [s for s in container.streams.video]
        astreams = [s for s in container.streams.audio]
        if not vstreams and not astreams:
            raise InputError(f"{path}: no video or audio stream")
        duration_s = container.duration / av.time_base if container.duration else 0.0
        width = height = None
        fps = None
        rotation = 0
        still = False
        vcodec = acodec = None
        if vstreams:
            vs = vstreams[0]
            vcodec = vs.codec_context.name
            width, height = vs.codec_context.width, vs.codec_context.height
            fps = float(vs.average_rate) if vs.average_rate else (float(vs.guessed_rate) if vs.guessed_rate else None)
            still = vcodec in STILL_IMAGE_CODECS and (vs.frames or 1) <= 1
            if vs.duration and vs.time_base:
                duration_s = max(duration_s, float(vs.duration * vs.time_base))
            rotation = _rotation_of(vs, container)
            if rotation in (90, 270):
                width, height = height, width
            if not width or not height:
                raise InputError(f"{path}: video stream has no frame size (corrupt header?)")
        rate = None
        if astreams:
            a = astreams[0]
            acodec, rate = a.codec_context.name, a.rate
            if a.duration and a.time_base:
                duration_s = max(duration_s, float(a.duration * a.time_base))
        if still:
            duration_s = STILL_IMAGE_DURATION_S
        if not duration_s or not math.isfinite(duration_s):
            duration_s = _scan_duration(container)
        if duration_s <= 0:
            raise InputError(f"{path}: media has zero duration")
    return VideoInfo(path=str(path), duration_s=round(duration_s, 3), fps=fps, width=width, height=height,
                     rotation_deg=rotation, has_video=bool(vstreams), has_audio=bool(astreams),
                     video_codec=vcodec, audio_codec=acodec, audio_sample_rate_hz=rate, is_still_image=still)


def _scan_duration(container) -> float:
    """Last packet end time, for containers whose header carries no duration (demux only, no decode)."""
    container.seek(0)
    end = 0.0
    for packet in container.demux():
        if packet.pts is not None and packet.time_base:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end


def _scaled_size(w: int, h: int, max_side_px: int) -> tuple[int, int]:
    scale = min(1.0, max_side_px / max(w, h))
    # even sizes keep swscale happy with odd-sized sources
    return max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)


def iter_frames(path: str | Path, *, sample_fps: float, max_side_px: int = 640) -> Iterator[Frame]:
    """Yield frames sampled at ``sample_fps`` by presentation time, BGR, rotated for display."""
    path = Path(path)
    period = 1.0 / sample_fps
    with _open(path) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        next_t = 0.0
        tolerance = 0.25 * period
        try:
            for frame in container.decode(stream):
                t = (float(frame.pts * stream.time_base) - start) if frame.pts is not None else next_t
                if t + tolerance < next_t:
                    continue
                rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                w, h = _scaled_size(frame.width, frame.height, max_side_px)
                image = frame.to_ndarray(format="bgr24", width=w, height=h)
                if rot:
                    image = np.ascontiguousarray(np.rot90(image, k=rot // 90))
                yield Frame(t_s=max(t, 0.0), image=image)
                # the next target after this frame; a gap (VFR, dropped frames) skips targets, never bunches them
                next_t = max(next_t + period, (math.floor((t + tolerance) / period) + 1) * period)
        except av.error.FFmpegError as e:
            log.warning("%s: video decoding stopped at %.1f s (%s); later seconds have no frames", path, next_t, e)


def iter_audio(path: str | Path, *, chunk_s: float = 30.0) -> Iterator[AudioChunk]:
    """Yield consecutive chunks of 16 kHz mono float32 audio; nothing when there is no audio stream."""
    path = Path(path)
    chunk_len = int(chunk_s * AUDIO_RATE_HZ)
    with _open(path) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE_HZ)
        pending: list[np.ndarray] = []
        n_pending = 0
        emitted = 0  # samples already yielded

        def take(n: int) -> np.ndarray:
            nonlocal pending, n_pending
            buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
            out, rest = buf[:n], buf[n:]
            pending = [rest] if len(rest) else []
            n_pending = len(rest)
            return out

        first = True
        try:
            for frame in container.decode(stream):
                if first and frame.time is not None and frame.time > 0.02:
                    pad = np.zeros(int(frame.time * AUDIO_RATE_HZ), dtype=np.float32)  # late-starting audio
                    pending.append(pad); n_pending += len(pad)
                first = False
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    pending.append(samples); n_pending += len(samples)
                while n_pending >= chunk_len:
                    yield AudioChunk(emitted / AUDIO_RATE_HZ, take(chunk_len), AUDIO_RATE_HZ)
                    emitted += chunk_len
            for out in resampler.resample(None):
                samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                pending.append(samples); n_pending += len(samples)
        except av.error.FFmpegError as e:
            log.warning("%s: audio decoding stopped at %.1f s (%s)", path, emitted / AUDIO_RATE_HZ, e)
        if n_pending:
            yield AudioChunk(emitted / AUDIO_RATE_HZ, take(n_pending), AUDIO_RATE_HZ)

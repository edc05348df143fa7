"""The annotated video: every frame of the source with its face boxes (``face_id``, label and
confidence), a moving strip of the fused scores beneath it, the current words as a subtitle, and
the original audio muxed back (its packets copied; re-encoded to AAC only when MP4 cannot hold
the codec). PyAV only: no ffmpeg command-line tool needed.

Face boxes are not in the JSON (it is per second); they are found again by running the run's
detector and tracker on the same sampled frames the analysis used (``frames_per_second``,
``max_frame_side_px`` from the document's config), which gives the same ``face_id``s, and are
interpolated between samples. Labels and scores come from the document; a face's label names its
person (``P<person_id>``) and says ``speaking`` in the seconds that person is the speaker.
``blur_faces``: every face is blurred beyond recognition (a coarse mosaic, then a blur, of its box
and a margin) before the boxes and labels are drawn.
"""
from __future__ import annotations

import bisect
import logging
import textwrap
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from emotion_pipeline.errors import InputError
from emotion_pipeline.fileio import atomic_write
from emotion_pipeline.labels import LABELS

log = logging.getLogger(__name__)

MIN_SHORT_SIDE_PX = 480        # small sources are scaled up so the annotations stay legible
MAX_LONG_SIDE_PX = 1280        # large ones scaled down (encoding time)
STRIP_WINDOW_S = 10.0          # seconds of fused scores shown in the strip, centred on now
COPY_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}   # MP4 can hold these as they are
SUBTITLE_WORDS = 9             # most recent words of the current segment shown
X264_OPTIONS = {"crf": "23", "preset": "veryfast"}
BLUR_MARGIN = 0.15             # fraction of the box added on each side of a blurred face (hair, ears, jaw)
BLUR_CELLS = 8                 # the blurred face is a mosaic of at most 8 cells across
# Output frames are timed in ticks of 1/90000 s (MPEG's clock: 25, 30 and 30000/1001 fps frames fall on
# whole ticks), each at its source frame's time: a variable-frame-rate source stays in step with its
# sound (timed in frames of the average rate, 30 fps frames around a 10 s still bunched up and were
# pushed later: 14 s became 18.9 s).
TICKS_PER_S = 90000


@lru_cache(maxsize=4)
def _font(size: int):
    from matplotlib import font_manager
    from PIL import ImageFont
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def _output_size(w: int, h: int) -> tuple[int, int]:
    scale = max(1.0, MIN_SHORT_SIDE_PX / min(w, h))
    scale = min(scale, MAX_LONG_SIDE_PX / max(w * scale, h * scale) * scale)
    return int(round(w * scale / 2)) * 2, int(round(h * scale / 2)) * 2


def detector_for(doc: dict[str, Any]):
    """The face detector the document's run used: Haar when it ran on Haar, else what its
    ``face_detector`` setting gives now (Analyzer._face_detector, with the same fallback)."""
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.faces import FaceDetector

    if ((doc.get("models", {}).get("face_detector") or {}).get("name", "")).startswith("haar"):
        return FaceDetector(None)
    return Analyzer._face_detector(doc.get("config", {}).get("face_detector", "auto"), True)[0]


def face_tracks(doc: dict[str, Any], video: str | Path, detector) -> tuple[list[float], list[list[tuple[int, tuple]]]]:
    """(sample times, per sample [(face_id, (x, y, w, h) in display pixels of the source)])."""
    from emotion_pipeline import demux
    from emotion_pipeline.faces import FaceTracker, ScaledDetection

    cfg = doc.get("config", {})
    times, faces = [], []
    tracker = FaceTracker()
    detection = ScaledDetection(detector, int(cfg.get("detect_face_px", 0)))   # as the analysis searched (0: before it had a setting)
    width = doc["video"]["width"]
    for frame in demux.iter_frames(video, sample_fps=float(cfg.get("frames_per_second", 4.0)),
                                   max_side_px=int(cfg.get("max_frame_side_px", 640))):
        scale = width / frame.image.shape[1]
        boxes = detection.detect(frame.image, frame.t_s)
        ids = tracker.update(frame.t_s, boxes, image=frame.image)   # cuts end tracks, as in the analysis
        times.append(frame.t_s)
        faces.append([(fid, (b.x * scale, b.y * scale, b.w * scale, b.h * scale)) for fid, b in zip(ids, boxes)])
    return times, faces


def _boxes_at(t: float, times: list[float], faces: list, period: float) -> list[tuple[int, tuple]]:
    k = bisect.bisect_right(times, t) - 1
    prev = faces[k] if k >= 0 else []
    nxt = faces[k + 1] if k + 1 < len(faces) else []
    t0 = times[k] if k >= 0 else None
    t1 = times[k + 1] if k + 1 < len(times) else None
    out = []
    nxt_by_id = dict(nxt)
    for fid, box in prev:
        if t1 is not None and fid in nxt_by_id and t1 - t0 <= 2.5 * period:
            a = (t - t0) / (t1 - t0)
            out.append((fid, tuple((1 - a) * p + a * q for p, q in zip(box, nxt_by_id[fid]))))
        elif t - t0 <= period:
            out.append((fid, box))
    shown = {fid for fid, _ in out}
    if t1 is not None and t1 - t <= 0.5 * period:
        out += [(fid, box) for fid, box in nxt if fid not in shown]
    return out


class Painter:
    """Draws one output frame: the video picture with boxes and subtitle, the strip beneath.
    Used by the annotated MP4 and by the live window (which feeds it a growing timeline)."""

    def __init__(self, doc: dict[str, Any], size: tuple[int, int], src_width: int, *, blur_faces: bool = False):
        from emotion_pipeline.plots import COLOURS
        self.blur_faces = blur_faces
        self.w, self.h = size
        self.scale = self.w / src_width
        self.strip_h = max(72, self.h // 12 * 2)   # even: yuv420p needs even frame sizes
        self.colours = [_rgb(c) for c in COLOURS]
        self.set_timeline(doc["timeline"], (doc.get("transcript") or {}).get("segments") or [])
        self.font = _font(max(12, self.h // 32))
        self.small = _font(max(10, self.h // 42))
        self.sub_font = _font(max(13, self.h // 26))

    def set_timeline(self, timeline: list[dict[str, Any]], segments: list[dict[str, Any]]) -> None:
        self.tl, self.segments = timeline, segments
        self.seg_starts = [s["start_s"] for s in segments]

    def _second(self, t: float) -> dict[str, Any]:
        return self.tl[max(0, min(int(t), len(self.tl) - 1))]

    def words_at(self, t: float) -> str:
        k = bisect.bisect_right(self.seg_starts, t) - 1
        if k < 0 or t > self.segments[k]["end_s"] + 0.3:
            return ""
        seg = self.segments[k]
        words = [w["text"].strip() for w in seg.get("words") or [] if w["start_s"] <= t]
        if not seg.get("words"):
            return " ".join(seg["text"].split())
        return " ".join(words[-SUBTITLE_WORDS:])

    def paint(self, image_rgb: np.ndarray, t: float, boxes: list[tuple[int, tuple]]) -> np.ndarray:
        from PIL import Image, ImageDraw

        if self.blur_faces:
            image_rgb = blurred(image_rgb, [tuple(v * self.scale for v in box) for _, box in boxes])
        canvas = Image.new("RGB", (self.w, self.h + self.strip_h), (24, 24, 24))
        canvas.paste(Image.fromarray(image_rgb), (0, 0))
        draw = ImageDraw.Draw(canvas)
        entry = self._second(t)
        face = entry.get("face") or {}
        by_id = {f["face_id"]: f for f in face.get("faces", [])}
        for fid, (x, y, bw, bh) in boxes:
            x, y, bw, bh = (v * self.scale for v in (x, y, bw, bh))
            info = by_id.get(fid)
            colour = self.colours[LABELS.index(info["label"])] if info else (200, 200, 200)
            primary = fid == face.get("face_id")
            draw.rectangle([x, y, x + bw, y + bh], outline=colour, width=4 if primary else 2)
            who = f" P{info['person_id']}" if info and info.get("person_id", -1) >= 0 else ""
            speaking = " speaking" if info and who and info["person_id"] == entry.get("speaker") else ""
            if speaking and entry.get("voice") is not None:
                speaking += f" (voice {entry['voice']})"
            text = f"#{fid}{who} {info['label']} {max(info['scores'].values()):.0%}{speaking}" if info else f"#{fid}"
            tw, th = draw.textbbox((0, 0), text, font=self.font)[2:]
            ty = y - th - 6 if y - th - 6 >= 0 else y + bh + 2
            draw.rectangle([x, ty, x + tw + 8, ty + th + 6], fill=colour)
            draw.text((x + 4, ty + 2), text, fill=(0, 0, 0), font=self.font)
        words = self.words_at(t)
        if words:
            lines = textwrap.wrap(words, width=max(16, int(self.w / (self.sub_font.size * 0.55))))[-2:]
            y = self.h - 10 - len(lines) * (self.sub_font.size + 6)
            for line in lines:
                lw = draw.textbbox((0, 0), line, font=self.sub_font)[2]
                draw.text(((self.w - lw) / 2, y), line, font=self.sub_font, fill=(255, 255, 255),
                          stroke_width=2, stroke_fill=(0, 0, 0))
                y += self.sub_font.size + 6
        self._strip(draw, t, entry)
        return np.asarray(canvas)

    def _strip(self, draw, t: float, entry: dict[str, Any]) -> None:
        top = self.h
        head = self.small.size + 8
        bar_top, bar_bottom = top + head, top + self.strip_h - 4
        pps = self.w / STRIP_WINDOW_S
        left_t = t - STRIP_WINDOW_S / 2
        first = max(0, int(left_t))
        for e in self.tl[first: int(t + STRIP_WINDOW_S / 2) + 1]:
            fused = e.get("fused")
            x0, x1 = (e["start_s"] - left_t) * pps, (e["end_s"] - left_t) * pps - 1
            if not fused:
                draw.rectangle([x0, bar_top, x1, bar_bottom], outline=(70, 70, 70))
                continue
            y = bar_bottom
            for label, colour in zip(LABELS, self.colours):
                hgt = fused["scores"][label] * (bar_bottom - bar_top)
                if hgt >= 0.5:
                    draw.rectangle([x0, y - hgt, x1, y], fill=colour)
                y -= hgt
        draw.line([self.w / 2, top + head - 2, self.w / 2, top + self.strip_h], fill=(255, 255, 255), width=2)
        fused = entry.get("fused")
        if fused:
            weights = ", ".join(f"{m} {w:.0%}" for m, w in (fused.get("weights") or {}).items())
            text = f"{t:5.1f} s  fused: {fused['label']} {max(fused['scores'].values()):.0%}  ({weights})"
        else:
            text = f"{t:5.1f} s  fused: none (no modality present)"
        draw.text((6, top + 3), text, fill=(235, 235, 235), font=self.small)


def blurred(image_rgb: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    """``image_rgb`` with every box (x, y, w, h in its pixels), widened by BLUR_MARGIN, made a coarse
    mosaic and blurred: no face can be recognised in it."""
    import cv2

    out = image_rgb.copy()
    h, w = out.shape[:2]
    for x, y, bw, bh in boxes:
        x0, y0 = max(0, int(x - BLUR_MARGIN * bw)), max(0, int(y - BLUR_MARGIN * bh))
        x1, y1 = min(w, int(np.ceil(x + bw * (1 + BLUR_MARGIN)))), min(h, int(np.ceil(y + bh * (1 + BLUR_MARGIN))))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        region = out[y0:y1, x0:x1]
        cells = (max(1, min(BLUR_CELLS, x1 - x0)), max(1, min(BLUR_CELLS, int(round(BLUR_CELLS * (y1 - y0) / (x1 - x0))) or 1)))
        mosaic = cv2.resize(cv2.resize(region, cells, interpolation=cv2.INTER_AREA), (x1 - x0, y1 - y0),
                            interpolation=cv2.INTER_NEAREST)
        k = max(3, ((x1 - x0) // 6) | 1)
        out[y0:y1, x0:x1] = cv2.GaussianBlur(mosaic, (k, k), 0)
    return out


def write_mp4(doc: dict[str, Any], video: str | Path, path: str | Path, *, detector=None,
              blur_faces: bool = False) -> Path:
    """Write the annotated video of ``doc`` (made from ``video``) to ``path`` atomically; same
    frames (count and times) as the source, plus its audio; ``blur_faces``: every face blurred."""
    video = Path(video)
    if detector is None:
        detector = detector_for(doc)
    times, faces = face_tracks(doc, video, detector)
    period = 1.0 / float(doc.get("config", {}).get("frames_per_second", 4.0))
    return atomic_write(path, lambda tmp: _render(doc, video, tmp, times, faces, period, blur_faces))


def _render(doc, video: Path, out_path: str, times, faces, period: float, blur_faces: bool = False) -> None:
    import av

    from emotion_pipeline import demux

    try:
        src = av.open(str(video), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{video}: cannot open for the annotated video ({e})") from e
    with src:
        vin, ain = demux.video_stream(src), demux.audio_stream(src)
        if vin is None:
            raise InputError(f"{video}: no video stream to annotate")
        vin.thread_type = "AUTO"
        origin = demux.origin_of(src)
        restarts = demux.Restarts(src)   # joined recordings: the same times as the analysis
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        rate = Fraction(rate).limit_denominator(1001)
        src_w, src_h = doc["video"]["width"], doc["video"]["height"]
        out_w, out_h = _output_size(src_w, src_h)
        painter = Painter(doc, (out_w, out_h), src_w, blur_faces=blur_faces)
        with av.open(out_path, "w", format="mp4") as dst:
            vout = dst.add_stream("libx264", rate=rate, options=dict(X264_OPTIONS))
            vout.width, vout.height, vout.pix_fmt = out_w, out_h + painter.strip_h, "yuv420p"
            tick = Fraction(1, TICKS_PER_S)
            vout.time_base = vout.codec_context.time_base = tick
            aout, resampler, a_shift = None, None, 0
            if ain is not None:
                if ain.codec_context.name in COPY_AUDIO_CODECS:
                    aout = dst.add_stream_from_template(ain)
                    a_shift = int(round(origin / ain.time_base)) if ain.time_base else 0
                else:
                    aout = dst.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
                    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=aout.rate)
            last_pts, untimed_t = -1, 0.0
            streams = [s for s in (vin, ain) if s is not None]
            for packet in src.demux(*streams):
                restarts.fix(packet)
                if packet.stream.type == "audio":
                    if packet.dts is None:
                        continue
                    if resampler is None:
                        packet.pts = None if packet.pts is None else packet.pts - a_shift
                        packet.dts -= a_shift
                        packet.stream = aout
                        dst.mux(packet)
                    else:
                        for frame in _decode(packet):
                            for f in resampler.resample(frame):
                                f.pts = None
                                dst.mux(aout.encode(f))
                    continue
                for frame in _decode(packet):
                    t = max(0.0, (frame.time - origin) if frame.time is not None else untimed_t)   # (a raw stream)
                    untimed_t = t + demux.frame_seconds(frame, float(1 / rate))
                    rot = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                    w, h = (out_h, out_w) if rot in (90, 270) else (out_w, out_h)
                    image = frame.to_ndarray(format="rgb24", width=w, height=h)
                    if rot:
                        image = np.ascontiguousarray(np.rot90(image, k=rot // 90))
                    out = av.VideoFrame.from_ndarray(painter.paint(image, t, _boxes_at(t, times, faces, period)),
                                                     format="rgb24")
                    pts = max(int(round(t * TICKS_PER_S)), last_pts + 1)
                    out.pts, out.time_base, last_pts = pts, tick, pts
                    dst.mux(vout.encode(out))
            dst.mux(vout.encode(None))
            if resampler is not None:
                for f in resampler.resample(None):
                    dst.mux(aout.encode(f))
                dst.mux(aout.encode(None))


def _decode(packet):
    import av
    try:
        return packet.decode()
    except av.error.FFmpegError:   # a damaged packet: skipped, as the analysis does
        return []

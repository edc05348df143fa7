"""The orchestrator: video -> demux -> (faces, audio, transcript) -> encoders -> fusion -> timeline JSON.

    frames --(detect, track, crop)--> face CNN ----\
    audio 16 kHz --(VAD, windows)---> audio model --+--> late fusion --> smoothing --> timeline
    audio --> Whisper / subtitles --> text model --/

Models load once per ``Analyzer``; ``analyze`` streams one video through them.
"""
from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
from tqdm import tqdm

from emotion_pipeline.models import registry, sources
from emotion_pipeline import demux, fuse, preflight, transcribe, writers
from emotion_pipeline.config import AnalyzeConfig, to_dict
from emotion_pipeline.encoders import AudioEncoder, FaceEncoder, TextEncoder, audio_window_s, load_predictor
from emotion_pipeline.faces import FaceDetector
from emotion_pipeline.records import AudioChunk, SecondEntry, StreamCoverage, Transcript, VideoInfo

log = logging.getLogger(__name__)



def software_versions() -> dict[str, str]:
    """Versions of what made a result, read from the installed metadata (importing transformers
    just for its version would cost seconds of start-up)."""
    from importlib import metadata

    from emotion_pipeline import __version__
    out = {"pipeline": __version__, "python": platform.python_version()}
    for key, dist in (("transformers", "transformers"), ("opencv", "opencv-python-headless"),
                      ("av", "av"), ("numpy", "numpy"), ("tokenizers", "tokenizers"),
                      ("faster_whisper", "faster-whisper"), ("ctranslate2", "ctranslate2"),
                      ("onnxruntime", "onnxruntime")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    import torch
    out["torch"] = torch.__version__   # with the build tag (+cpu, +cu128)
    return out


# A stream missing more than this many seconds makes the result partial (a warning, exit code 3,
# a failure with --strict). Below it: rounding of stream lengths, a lost AAC packet or two.
PARTIAL_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class Status:
    ok: bool
    reason: str | None = None
    coverage: float | None = None     # share of the stream behind this modality that decoded

    def json(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "missing", "reason": self.reason, "coverage": self.coverage}


@dataclass(frozen=True)
class VideoResult:
    info: VideoInfo
    entries: list[SecondEntry]
    transcript: Transcript | None
    status: dict[str, Status]
    timings: dict[str, float]     # seconds of compute per stage
    transcript_file: str | None
    coverage: dict[str, StreamCoverage]   # "video" / "audio": what decoded, against the header
    warnings: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.warnings


class Analyzer:
    def __init__(self, cfg: AnalyzeConfig):
        self.cfg = cfg
        self.device = preflight.select_device(cfg.device)
        offline = sources.is_offline(cfg.offline)
        self.offline = offline
        self.models: dict[str, Any] = {}

        detector, detector_file = self._face_detector(cfg.face_detector, offline)
        self.models["face_detector"] = {"name": detector.name, "sha256": (
            sources.sha256_file(detector_file) if detector_file else None)}
        face = load_predictor("face", cfg.face_model, device=self.device, offline=offline)
        self.face = FaceEncoder(face, detector, batch_size=cfg.face_batch_size, primary_face=cfg.primary_face)
        self.models["face"] = face.describe()

        audio = load_predictor("audio", cfg.audio_model, device=self.device, offline=offline)
        self.audio = AudioEncoder(audio, window_s=audio_window_s(audio, cfg.audio_window_s),
                                  min_speech_fraction=cfg.min_speech_fraction)
        self.models["audio"] = audio.describe()

        text = load_predictor("text", cfg.text_model, device=self.device, offline=offline)
        self.text = TextEncoder(text, context_s=cfg.text_context_s)
        self.models["text"] = text.describe()

        # transcription: faster-whisper (packaged tiny.en offline by default) + language identification;
        # a tampered model file (ChecksumError) stops the run, a missing one only turns words off
        self.whisper, self.language_id, self.whisper_problem = None, None, None
        whisper_name = cfg.whisper_model
        if whisper_name.lower() != "none":
            try:
                self.whisper, self.language_id = transcribe.load_for_analysis(
                    whisper_name, device=str(self.device), offline=offline, progress=cfg.progress,
                    language=cfg.language)
                self.models["whisper"] = self.whisper.info.describe() | (
                    {"language_id": self.language_id.info.describe()} if self.language_id else {})
            except registry.ModelUnavailableError as e:
                # the error says how to get the model (reinstall, fetch, a folder); words can also come from a file
                self.whisper_problem = f"no Whisper model '{whisper_name}' ({e}); or pass --transcript FILE"
                log.warning("text modality off: %s", self.whisper_problem)
        else:
            self.whisper_problem = "Whisper disabled (whisper_model=none) and no transcript given"

        self.head, self.fusion_method, self.fusion_reason = self._fusion()
        self.models["fusion"] = {"method": self.fusion_method, "reason": self.fusion_reason,
                                 **(self.head.loaded.describe() if self.head else {})}
        self.software = software_versions()
        self.settings_key = preflight.settings_key(cfg)   # once: only a transcript file changes it per video

    @staticmethod
    def _face_detector(spec: str, offline: bool) -> tuple[FaceDetector, Path | None]:
        """(detector, its verified .onnx) of the ``face_detector`` setting: the packaged YuNet for
        auto / yunet, else the file named; Haar when configured. A tampered file is a ChecksumError;
        a missing one, or one OpenCV cannot create YuNet from, is a ModelUnavailableError, except for
        auto, which then warns and takes Haar (the detector's name goes into the output either way)."""
        if spec == "haar":
            return FaceDetector(None), None
        path = None
        try:
            path = registry.load("yunet" if spec in ("auto", "yunet") else spec, kind="detector", offline=offline).path
            return FaceDetector(path), path
        except (registry.ModelUnavailableError, cv2.error) as e:
            if spec != "auto":
                if isinstance(e, cv2.error):
                    raise registry.ModelUnavailableError(
                        f"{path}: OpenCV cannot create a YuNet detector from it ({e})") from e
                raise
            log.warning("YuNet unavailable (%s); using the Haar cascade", " ".join(str(e).split()))
            return FaceDetector(None), None

    def _fusion(self):
        if self.cfg.fusion == "average":
            return None, "average", "configured"
        try:
            head = registry.load(self.cfg.fusion_head, kind="fusion", device="cpu")
        except (registry.ModelUnavailableError, registry.ChecksumError) as e:
            reason = f"no trained fusion head ({e}); using the confidence-weighted average"
            if self.cfg.fusion == "head":
                raise
            log.info(reason)
            return None, "average", reason
        mismatch = fuse.head_mismatch(head, {m: self.models[m] for m in ("face", "audio", "text")})
        if mismatch:
            log.warning("%s; using the confidence-weighted average", mismatch)
            return None, "average", mismatch
        return fuse.HeadFuser(head), "head", "trained head matches the configured encoders"

    # ------------------------------------------------------------------ one video
    def run(self, path: str | Path, *, transcript_file: str | Path | None = None) -> "VideoResult":
        """Stream one video through every stage; per-second entries, not yet JSON."""
        cfg = self.cfg
        timings: dict[str, float] = {}
        info = demux.probe(path)
        n = info.n_seconds

        t0 = time.perf_counter()
        face_rows: list = [None] * n
        face_status = Status(False, "no video stream")
        video_cov = demux.Coverage("video", demux.VIDEO_GAP_S, info.video_start_s)
        audio_cov = demux.Coverage("audio", demux.AUDIO_GAP_S, info.audio_start_s)
        if info.has_video:
            frames = demux.iter_frames(info.path, sample_fps=cfg.frames_per_second, max_side_px=cfg.max_frame_side_px,
                                       coverage=video_cov)
            frames = tqdm(frames, total=int(math.ceil(info.duration_s * cfg.frames_per_second)), unit="frame",
                          desc=f"faces {Path(info.path).name}", disable=not cfg.progress, leave=False)
            observations, tracker, n_frames = self.face.observe(frames)
            face_rows = self.face.per_second(observations, tracker, n)
            face_status = Status(True) if observations else Status(False, f"no face found in {n_frames} sampled frames")
        timings["faces"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        # Whisper is fed the same stream and transcribes each finished stretch of speech (bounded memory)
        session = (transcribe.TranscriptionSession(self.whisper, language_id=self.language_id, language=cfg.language)
                   if transcript_file is None and self.whisper is not None else None)
        audio_rows: list = [None] * n
        audio_status = Status(False, "no audio track")
        if info.has_audio:
            audio_rows = self.audio.per_second(self._tee(demux.iter_audio(info.path, coverage=audio_cov), session), n)
            audio_status = Status(True) if any(audio_rows) else Status(False, "no speech detected (silence, music or noise)")
        streamed_asr_s = session.compute_s if session else 0.0
        timings["audio"] = time.perf_counter() - t0 - streamed_asr_s

        coverage: dict[str, StreamCoverage] = {}
        # A stream without its own length in the header (Matroska, WebM) is expected to run to the
        # container's end only as far as the other stream does: one ending early is no loss, both
        # ending early is a cut file.
        reached = max(video_cov.cursor if info.has_video else 0.0, audio_cov.cursor if info.has_audio else 0.0)
        cut = reached < info.duration_s - PARTIAL_TOLERANCE_S

        def end_of(span: float | None, cov: demux.Coverage) -> float:
            return span if span is not None else (info.duration_s if cut else cov.cursor)

        if info.has_video:
            coverage["video"] = video_cov.result(end_of(info.video_span_s, video_cov))
            face_status = Status(face_status.ok, face_status.reason, round(coverage["video"].fraction, 4))
        if info.has_audio:
            coverage["audio"] = audio_cov.result(end_of(info.audio_span_s, audio_cov))
            audio_status = Status(audio_status.ok, audio_status.reason, round(coverage["audio"].fraction, 4))
        warnings = tuple(_coverage_warning(c) for c in coverage.values() if c.lost_total_s > PARTIAL_TOLERANCE_S)
        for w in warnings:
            log.debug("%s: %s", info.path, w)   # the caller reports it (the CLI prints one warning line)

        t0 = time.perf_counter()
        transcript, text_status = self._transcript(info, transcript_file, session)
        timings["transcribe"] = time.perf_counter() - t0 + streamed_asr_s
        t0 = time.perf_counter()
        text_rows: list = [None] * n
        if transcript is not None and text_status.ok:
            text_rows = self.text.per_second(transcript, n)
            if not any(text_rows):
                text_status = Status(False, "no words in the transcript")
        timings["text"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows = list(zip(face_rows, audio_rows, text_rows))
        raw = fuse.fuse_all(rows, method=self.fusion_method, weights=cfg.modality_weights, head=self.head)
        smoothed = fuse.smooth(raw, cfg.smoothing_window_s)
        entries = [SecondEntry(float(i), float(info.duration_s) if i == n - 1 else float(i + 1),
                               f, a, t, s, r)
                   for i, (f, a, t, s, r) in enumerate(zip(face_rows, audio_rows, text_rows, smoothed, raw))]
        timings["fusion"] = time.perf_counter() - t0
        return VideoResult(info, entries, transcript, {"face": face_status, "audio": audio_status, "text": text_status},
                           timings, str(transcript_file) if transcript_file else None, coverage, warnings)

    def analyze(self, path: str | Path, *, transcript_file: str | Path | None = None) -> dict[str, Any]:
        """The timeline document of one video (see pipeline/schema/timeline.schema.json)."""
        res = self.run(path, transcript_file=transcript_file)
        doc = writers.timeline_document(
            info=res.info, entries=res.entries, transcript=res.transcript, models=self.models, software=self.software,
            config=to_dict(self.cfg) | {"transcript_file": res.transcript_file},
            modalities={k: v.json() for k, v in res.status.items()},
            coverage={k: c.json() for k, c in res.coverage.items()}, warnings=list(res.warnings))
        settings = preflight.settings_key(self.cfg, transcript_file) if transcript_file else self.settings_key
        doc["input"] = preflight.video_identity(path)
        doc["settings_key"] = settings
        doc["skip_key"] = preflight.skip_key(path, settings)
        doc["timings_s"] = {k: round(v, 3) for k, v in res.timings.items()}
        return doc

    @staticmethod
    def _tee(chunks: Iterator[AudioChunk], session) -> Iterator[AudioChunk]:
        for chunk in chunks:
            if session is not None:
                session.feed(chunk.samples, chunk.start_s)
            yield chunk

    def _transcript(self, info: VideoInfo, transcript_file, session) -> tuple[Transcript | None, Status]:
        guess = None
        if transcript_file is not None:
            tr = preflight.load_transcript(transcript_file)
        elif not info.has_audio:
            return None, Status(False, "no audio track and no transcript given")
        elif self.whisper is None:
            return None, Status(False, self.whisper_problem)
        else:
            tr, guess = session.finish(), session.guess
        if tr.language and tr.language != transcribe.ENGLISH and self.text.english_only:
            how = f" (language ID p={guess.probability:.2f})" if guess else ""
            return tr, Status(False, f"speech is in '{tr.language}'{how} and the text model is English-only; not scored")
        return tr, Status(True)


def _coverage_warning(c: StreamCoverage) -> str:
    spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in c.lost_s[:4]) + (" ..." if len(c.lost_s) > 4 else "")
    why = f"; {c.decode_errors} damaged packets skipped" if c.decode_errors else ""
    why += f"; demuxer stopped: {c.stopped}" if c.stopped else ""
    return (f"partial result: {c.kind} decoded for {c.expected_s - c.lost_total_s:.1f} of {c.expected_s:.1f} s "
            f"(lost {spans}){why}")

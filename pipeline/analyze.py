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
import numpy as np
from tqdm import tqdm

from emotion_pipeline.models import registry, sources
from emotion_pipeline import demux, fuse, preflight, seconds, transcribe
from emotion_pipeline.config import AnalyzeConfig, to_dict
from emotion_pipeline.encoders import AudioEncoder, FaceEncoder, TextEncoder, audio_window_s, load_predictor
from emotion_pipeline.faces import FACE_CROP_PX, FaceDetector
from emotion_pipeline.models import SAMPLE_RATE_HZ
from emotion_pipeline.records import AudioChunk, SecondEntry, StreamCoverage, Transcript, VideoInfo
from emotion_pipeline.seconds import PARTIAL_TOLERANCE_S, Status  # noqa: F401  (importable from here, as before)

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
        self.fuser = seconds.Fuser(self.fusion_method, tuple(cfg.modality_weights), self.head)
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
            if self.cfg.fusion == "head" or self.cfg.fusion_head != AnalyzeConfig.fusion_head:
                raise   # a head asked for by name never falls back in silence
            log.info(reason)
            return None, "average", reason
        mismatch = fuse.head_mismatch(head, {m: self.models[m] for m in ("face", "audio", "text")})
        if mismatch:
            log.warning("%s; using the confidence-weighted average", mismatch)
            return None, "average", mismatch
        return fuse.HeadFuser(head), "head", "trained head matches the configured encoders"

    # ------------------------------------------------------------------ what the file and the live paths share
    @property
    def text_unavailable(self) -> str | None:
        """Why there is no Whisper (None when there is one)."""
        return self.whisper_problem

    def record(self, **config_extra: Any) -> seconds.RunRecord:
        return seconds.RunRecord(self.models, self.software, to_dict(self.cfg) | config_extra)

    def timeline(self, *, causal: bool, keep_s: int | None = None, on_final=None) -> seconds.Timeline:
        return seconds.Timeline(self.fuser, self.cfg.smoothing_window_s, causal=causal, keep_s=keep_s,
                                on_final=on_final)

    def voice(self) -> seconds.VoiceSeconds:
        return seconds.VoiceSeconds(self.audio)

    def transcription(self, **stream_options: Any) -> transcribe.TranscriptionSession | None:
        """A streaming Whisper session (None without Whisper); ``stream_options``: the live mode's
        shorter blocks (block_s, lid_speech_s, max_buffer_s)."""
        if self.whisper is None:
            return None
        return transcribe.TranscriptionSession(self.whisper, language_id=self.language_id, language=self.cfg.language,
                                               **stream_options)

    def warm_up(self) -> None:
        """One pass of the face and voice models on blank input: first calls allocate and pick
        kernels (half a second or more), which a stream would otherwise pay on its first lines."""
        self.face.detector.detect(np.zeros((240, 320, 3), np.uint8))
        self.face.predictor.predict(np.zeros((1, FACE_CROP_PX, FACE_CROP_PX, 3), np.uint8))
        self.audio.predictor.predict(np.zeros((1, int(self.audio.window_s * SAMPLE_RATE_HZ)), np.float32))

    # ------------------------------------------------------------------ one video
    def run(self, path: str | Path, *, transcript_file: str | Path | None = None) -> "VideoResult":
        """Stream one video through every stage; per-second entries, not yet JSON."""
        cfg = self.cfg
        timings: dict[str, float] = {}
        info = demux.probe(path)
        n = info.n_seconds
        timeline = self.timeline(causal=False)

        t0 = time.perf_counter()
        video_cov = demux.Coverage("video", demux.VIDEO_GAP_S, info.video_start_s)
        audio_cov = demux.Coverage("audio", demux.AUDIO_GAP_S, info.audio_start_s)
        n_frames = 0
        if info.has_video:
            frames = demux.iter_frames(info.path, sample_fps=cfg.frames_per_second, max_side_px=cfg.max_frame_side_px,
                                       coverage=video_cov)
            frames = tqdm(frames, total=int(math.ceil(info.duration_s * cfg.frames_per_second)), unit="frame",
                          desc=f"faces {Path(info.path).name}", disable=not cfg.progress, leave=False)
            observations, tracker, n_frames = self.face.observe(frames)
            for s, face in enumerate(self.face.per_second(observations, tracker, n)):
                timeline.add(s, face=face)
        timings["faces"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        # Whisper is fed the same stream and transcribes each finished stretch of speech (bounded memory)
        session = self.transcription() if transcript_file is None else None
        if info.has_audio:
            rows = seconds.stream_voice(self.voice(), self._tee(demux.iter_audio(info.path, coverage=audio_cov), session), n)
            for s, voice in enumerate(rows):
                timeline.add(s, audio=voice)
        streamed_asr_s = session.compute_s if session else 0.0
        timings["audio"] = time.perf_counter() - t0 - streamed_asr_s
        coverage, warnings = seconds.coverage_report(info, video_cov, audio_cov)
        if self.whisper_problem and transcript_file is None and cfg.whisper_model.lower() not in ("auto", "none"):
            warnings = (*warnings, self.whisper_problem)   # a Whisper asked for by name that did not load: said in the JSON
        for w in warnings:
            log.debug("%s: %s", info.path, w)   # the caller reports it (the CLI prints one warning line)

        t0 = time.perf_counter()
        transcript, guess = None, None
        if transcript_file is not None:
            transcript = preflight.load_transcript(transcript_file)
        elif info.has_audio and session is not None:
            transcript, guess = session.finish(), session.guess
        timings["transcribe"] = time.perf_counter() - t0 + streamed_asr_s
        t0 = time.perf_counter()
        text = seconds.text_status(
            transcript=transcript, english_only=self.text.english_only, words_seen=True,
            unavailable=self.whisper_problem if info.has_audio else "no audio track and no transcript given",
            language_probability=guess.probability if guess else None)
        if text.ok:
            for s, words in enumerate(self.text.per_second(transcript, n)):
                timeline.add(s, text=words)
            text = seconds.text_status(transcript=transcript, english_only=self.text.english_only,
                                       words_seen=timeline.seen["text"])
        timings["text"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        timeline.add(n - 1)   # a video with no stream delivering anything still has its seconds
        entries = timeline.entries(float(info.duration_s))
        timings["fusion"] = time.perf_counter() - t0
        status = seconds.statuses(timeline, has_video=info.has_video, has_audio=info.has_audio,
                                  frames_sampled=n_frames, coverage=coverage, text=text)
        return VideoResult(info, entries, transcript, status, timings,
                           str(transcript_file) if transcript_file else None, coverage, warnings)

    def analyze(self, path: str | Path, *, transcript_file: str | Path | None = None) -> dict[str, Any]:
        """The timeline document of one video (see pipeline/schema/timeline.schema.json)."""
        res = self.run(path, transcript_file=transcript_file)
        settings = preflight.settings_key(self.cfg, transcript_file) if transcript_file else self.settings_key
        return seconds.document(
            self.record(transcript_file=res.transcript_file), info=res.info, entries=res.entries,
            transcript=res.transcript, status=res.status, coverage=res.coverage, warnings=res.warnings,
            input=preflight.video_identity(path), settings_key=settings, skip_key=preflight.skip_key(path, settings),
            timings_s={k: round(v, 3) for k, v in res.timings.items()})

    @staticmethod
    def _tee(chunks: Iterator[AudioChunk], session) -> Iterator[AudioChunk]:
        for chunk in chunks:
            if session is not None:
                session.feed(chunk.samples, chunk.start_s)
            yield chunk

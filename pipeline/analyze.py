"""The orchestrator: video -> demux -> (faces, audio, transcript) -> encoders -> fusion -> timeline JSON.

    frames --(detect, track, crop)--> face CNN ----\
    audio 16 kHz --(VAD, windows)---> audio model --+--> late fusion --> smoothing --> timeline
    audio --> Whisper / subtitles --> text model --/

Models load once per ``Analyzer``; ``analyze`` streams one video through them.
"""
from __future__ import annotations

import dataclasses
import functools
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
from emotion_pipeline import cast, demux, fuse, preflight, seconds, speaker, transcribe, voices
from emotion_pipeline.config import AnalyzeConfig, to_dict
from emotion_pipeline.encoders import (AudioEncoder, FaceEncoder, ShippedFace, TextEncoder, audio_window_s,
                                       load_expressions, load_predictor)
from emotion_pipeline.faces import FACE_CROP_PX, FaceDetector
from emotion_pipeline.languages import normalise_language
from emotion_pipeline.models import SAMPLE_RATE_HZ
from emotion_pipeline.records import AudioChunk, Person, SecondEntry, StreamCoverage, Transcript, VideoInfo
from emotion_pipeline.seconds import PARTIAL_TOLERANCE_S, Status  # noqa: F401  (importable from here, as before)

log = logging.getLogger(__name__)
# a subtitle track standing in for the transcript is bounded as a transcript file is
# (jobs.TRANSCRIPT_SEGMENTS_PER_S and TRANSCRIPT_SLACK_ITEMS: 4 cues a second of video, plus 100)
SUBTITLE_CUES_PER_S = 4
SUBTITLE_SLACK_CUES = 100


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
    people: tuple[Person, ...] = ()       # the video's people (pipeline/cast.py); () without video

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
        if isinstance(face, ShippedFace):   # a hub model keeps its own precision
            face = dataclasses.replace(face, precision=cfg.face_precision)
        # the face landmarker on the same crops (blendshapes) and the blendshape expert combined with the CNN;
        # without mediapipe or the landmarker's file the face modality is the CNN's alone, and the JSON says why
        expressions, self.expression_problem = load_expressions(
            cfg.face_expression, cfg.face_expert, cfg.face_expert_weight,
            max(1, round(cfg.frames_per_second / cfg.face_expression_per_second)), offline=offline)
        # primary_face speaker: the speaker's face where a visible person speaks (cast.py), else the dominant one
        self.face = FaceEncoder(face, detector, batch_size=cfg.face_batch_size,
                                primary_face="dominant" if cfg.primary_face == "speaker" else cfg.primary_face,
                                expressions=expressions, detect_face_px=cfg.detect_face_px)
        self.models["face"] = face.describe()
        self.models["face_expression"] = expressions.describe() if expressions else None
        # face identity (SFace): face tracks joined into people; without it every track is its own person
        self.embedder = cast.load_identity(cfg.identity_model, offline=offline)
        self.models["identity"] = self.embedder.describe() if self.embedder else None
        # who speaks: mouths read (MediaPipe face landmarker, in a second pass at speaker.MOUTH_FPS) against the voice
        # loaded on the first video that needs it, then kept (cast closes only its per-track tasks)
        self.mouth_reader = None if cfg.speaker == "off" else functools.cache(lambda: speaker.load_mouth_reader(offline=offline))
        # whose voice: CAM++ embeddings tell the voices apart, so the speaker is decided per voice (voices.py)
        self.voice_embedder = None if cfg.speaker == "off" or cfg.voice_model.lower() == "none" else \
            functools.cache(lambda: voices.load_voice_embedder(offline=offline, name=cfg.voice_model))
        self.models["speaker"] = None if cfg.speaker == "off" else {
            "mode": cfg.speaker, "mouths": "face-landmarker (jawOpen)", "mouth_fps": speaker.MOUTH_FPS,
            "window_s": speaker.SYNC_WINDOW_S, "voices": voices.describe_setting(cfg.voice_model)}

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
        if self.face.expressions is not None:
            self.face.expressions.read(np.zeros((1, FACE_CROP_PX, FACE_CROP_PX, 3), np.uint8))
        self.audio.predictor.predict(np.zeros((1, int(self.audio.window_s * SAMPLE_RATE_HZ)), np.float32))

    # ------------------------------------------------------------------ one video
    def run(self, path: str | Path, *, transcript_file: str | Path | None = None) -> "VideoResult":
        """Stream one video through every stage; per-second entries, not yet JSON."""
        cfg = self.cfg
        timings: dict[str, float] = {}
        info = demux.probe(path)
        n = info.n_seconds
        timeline = self.timeline(causal=False)
        audio_tracks = [t for t in info.tracks if t.kind == "audio"]
        if len(audio_tracks) > 1:
            used = next(t for t in audio_tracks if t.used)
            log.info("%s: %d audio tracks; analysing #%d (%s%s)", info.path, len(audio_tracks), used.index,
                     used.language or "no language tag", ", default" if used.default else "")
        if info.restarts_s:
            log.info("%s: timestamps start again at %s s (recordings joined into one file?): joined", info.path,
                     ", ".join(f"{r:.1f}" for r in info.restarts_s))
        subtitles = None
        if transcript_file is None and self.whisper is None:   # no words otherwise: the file's own subtitles
            subtitles = demux.subtitle_cues(info.path, int(SUBTITLE_CUES_PER_S * info.duration_s) + SUBTITLE_SLACK_CUES)
            if subtitles is not None:
                info = dataclasses.replace(info, tracks=tuple(
                    dataclasses.replace(t, used=True) if t.index == subtitles[0].index else t for t in info.tracks))

        t0, cpu0 = time.perf_counter(), time.process_time()
        video_cov = demux.Coverage("video", demux.VIDEO_GAP_S, info.video_start_s)
        audio_cov = demux.Coverage("audio", demux.AUDIO_GAP_S, info.audio_start_s)
        n_frames = 0
        probes: list = []   # a few sampled frames, looked at upside down when no face is found
        crew = self.cast(info)
        if info.has_video:
            decoded = self.face_frames(info, video_cov)
            frames = tqdm(_kept(decoded, probes), total=int(math.ceil(info.duration_s * cfg.frames_per_second)),
                          unit="frame", desc=f"faces {Path(info.path).name}", disable=not cfg.progress, leave=False)
            try:
                observations, tracker, n_frames = self.face.observe(frames, watchers=crew.watchers)
            finally:
                decoded.close()   # a face pass that fails stops the decoding thread and closes the file now
        timings["faces"] = time.perf_counter() - t0
        timings["faces_cpu"] = time.process_time() - cpu0   # CPU seconds of every thread (decoding included)
        expression = self._expression_status(info.has_video, observations if info.has_video else [])

        t0 = time.perf_counter()
        # Whisper is fed the same stream and transcribes each finished stretch of speech (bounded memory)
        session = self.transcription() if transcript_file is None else None
        if info.has_audio:
            if info.has_video:
                crew.prepare(observations)   # voices embedded as the audio streams where two faces are seen at once
            rows = seconds.stream_voice(self.voice(), self._tee(demux.iter_audio(info.path, coverage=audio_cov), session,
                                                                crew), n)
            for s, voice in enumerate(rows):
                timeline.add(s, audio=voice)
        streamed_asr_s = session.compute_s if session else 0.0
        timings["audio"] = time.perf_counter() - t0 - streamed_asr_s
        t0 = time.perf_counter()
        # people (face tracks re-identified), who speaks each second, the face each second fuses
        found = crew.finish(self.face, tracker, observations, rows if info.has_audio else [], n) if info.has_video else None
        for s, face in enumerate(found.face_rows if found else ()):
            timeline.add(s, face=face)
        for s in (found.face_apart if found else ()):
            timeline.keep_face_apart(s)
        timings["people"] = time.perf_counter() - t0
        coverage, warnings = seconds.coverage_report(info, video_cov, audio_cov)
        if self.whisper_problem and transcript_file is None and cfg.whisper_model.lower() not in ("auto", "none"):
            warnings = (*warnings, self.whisper_problem)   # a Whisper asked for by name that did not load: said in the JSON
        for w in warnings:
            log.debug("%s: %s", info.path, w)   # the caller reports it (the CLI prints one warning line)

        t0 = time.perf_counter()
        transcript, guess = None, None
        if transcript_file is not None:
            transcript = preflight.load_transcript(transcript_file)
        elif subtitles is not None:
            track, cues = subtitles
            transcript = Transcript(tuple(dataclasses.replace(c, words=transcribe.spread_words(c.start_s, c.end_s, c.text))
                                          for c in cues), normalise_language(track.language),
                                    f"subtitles:{info.path}#{track.index} ({track.codec})")
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
        cast_people: tuple[Person, ...] = ()
        if found is not None:
            entries = [dataclasses.replace(e, speaker=sp) for e, sp in zip(entries, found.speakers or [None] * n)]
            cast_people = crew.people(found, self.face, tracker, observations, lambda: self.timeline(causal=False), timeline)
        timings["fusion"] = time.perf_counter() - t0
        status = seconds.statuses(timeline, has_video=info.has_video, has_audio=info.has_audio,
                                  frames_sampled=n_frames, coverage=coverage, text=text)
        status = {**status, "expression": expression}
        hint = _upside_down_hint(probes, self.face.detector) if info.has_video else None
        if hint:
            log.warning("%s: %s", info.path, hint)
            face = status["face"]
            status["face"] = dataclasses.replace(face, reason=f"{face.reason}; {hint}" if face.reason else hint)
        return VideoResult(info, entries, transcript, status, timings,
                           str(transcript_file) if transcript_file else None, coverage, warnings,
                           cast_people)

    def _expression_status(self, has_video: bool, observations: list) -> seconds.Status:
        """Whether the face landmarker read faces of this video (the ``expression`` blocks), and why not."""
        if self.face.expressions is None:
            return seconds.Status(False, self.expression_problem)
        if not has_video:
            return seconds.Status(False, "no video stream")
        read = sum(o.blendshapes is not None for o in observations)
        if read:
            return seconds.Status(True)
        return seconds.Status(False, f"the face landmarker read none of the {len(observations)} face crops" if observations
                              else "no face found")

    def analyze(self, path: str | Path, *, transcript_file: str | Path | None = None) -> dict[str, Any]:
        """The timeline document of one video (see pipeline/schema/timeline.schema.json)."""
        res = self.run(path, transcript_file=transcript_file)
        settings = preflight.settings_key(self.cfg, transcript_file) if transcript_file else self.settings_key
        return seconds.document(
            self.record(transcript_file=res.transcript_file), info=res.info, entries=res.entries,
            transcript=res.transcript, status=res.status, coverage=res.coverage, warnings=res.warnings,
            input=preflight.video_identity(path), settings_key=settings, skip_key=preflight.skip_key(path, settings),
            timings_s={k: round(v, 3) for k, v in res.timings.items()}, people=list(res.people))

    @staticmethod
    def _tee(chunks: Iterator[AudioChunk], session, sink=None) -> Iterator[AudioChunk]:
        for chunk in chunks:
            if session is not None:
                session.feed(chunk.samples, chunk.start_s)
            if sink is not None:
                sink.push(chunk.samples)
            yield chunk

    def face_frames(self, info: VideoInfo, coverage: demux.Coverage) -> Iterator:
        """The face pass's frames of ``info``'s video, decoded ahead on a thread of their own
        (demux.prefetched; ``coverage`` is complete once they are all taken)."""
        cfg = self.cfg
        return demux.prefetched(demux.iter_frames(info.path, sample_fps=cfg.frames_per_second,
                                                  max_side_px=cfg.max_frame_side_px, coverage=coverage))

    def cast(self, info: VideoInfo) -> cast.Cast:
        """One video's people and speakers (pipeline/cast.py), fed by the face pass and the audio."""
        cfg = self.cfg
        return cast.Cast(self.embedder, source_width_px=info.width, speaker_mode=cfg.speaker,
                         primary_face=cfg.primary_face, mouth_reader=self.mouth_reader, voice_embedder=self.voice_embedder,
                         mouth_frames=lambda: demux.iter_frames(info.path, sample_fps=speaker.MOUTH_FPS,
                                                                max_side_px=cfg.max_frame_side_px))


# ---------------------------------------------------------------- upside down without rotation metadata
# A few sampled frames (a second apart) are looked at again turned 180 degrees. YuNet finds an
# upside-down face too, but reads it as upright (mouth corners as eyes), so its crops are upside
# down; its score tells: on 10 shared clips (MEAD, talking, edge cases; 3 frames each) an upright
# face scored 0.93-0.95 as it is and 0.73-0.91 turned, a MEAD clip turned upside down 0.89-0.90 as
# it is and 0.93-0.94 turned. Turned must beat as-is by UPSIDE_DOWN_MARGIN on most probes; with
# Haar (no comparable score) a face found only turned counts.
UPSIDE_DOWN_PROBES = 3
UPSIDE_DOWN_MARGIN = 0.02


def _kept(frames: Iterator, keep: list) -> Iterator:
    """``frames`` passed on; the first UPSIDE_DOWN_PROBES of them, a second apart, also kept in ``keep``."""
    for frame in frames:
        if len(keep) < UPSIDE_DOWN_PROBES and (not keep or frame.t_s >= keep[-1].t_s + 1.0):
            keep.append(frame)
        yield frame


def _upside_down_hint(probes: list, detector) -> str | None:
    """A hint for a video turned upside down without rotation metadata (its faces are read upside
    down), from the detector's scores on ``probes`` as they are and turned 180 degrees; None when
    the frames look the right way up (or show no face either way)."""
    def best(image: np.ndarray) -> float | None:
        boxes = detector.detect(image)
        return max(b.score for b in boxes) if boxes else None

    turned = 0
    for frame in probes:
        as_is, rotated = best(frame.image), best(np.ascontiguousarray(np.rot90(frame.image, 2)))
        if rotated is not None and (as_is is None or (detector.name.startswith("yunet")
                                                      and rotated > as_is + UPSIDE_DOWN_MARGIN)):
            turned += 1
    if probes and turned > len(probes) / 2:
        return (f"faces look upside down ({turned} of {len(probes)} frames show a face more clearly turned 180 "
                f"degrees): the video may lack its rotation metadata; faces were read as they are "
                f"(ffmpeg -vf hflip,vflip turns it)")
    return None

"""The orchestrator: video -> demux -> (faces, audio, transcript) -> encoders -> fusion -> timeline JSON.

    frames --(detect, track, crop)--> face CNN ----\
    audio 16 kHz --(VAD, windows)---> audio model --+--> late fusion --> smoothing --> timeline
    audio --> Whisper / subtitles --> text model --/

Models load once per ``Analyzer``; ``analyze`` streams one video through them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from models import hub, registry
from pipeline import demux, fuse, transcribe, writers
from pipeline.config import AnalyzeConfig, to_dict
from pipeline.data import data_path
from pipeline.encoders import AudioEncoder, FaceEncoder, TextEncoder, audio_window_s, load_predictor
from pipeline.faces import FaceDetector
from pipeline.records import AudioChunk, SecondEntry, Transcript, VideoInfo

log = logging.getLogger(__name__)

ENGLISH = "en"
WHISPER_CPU = "tiny"
WHISPER_GPU = "small"


def software_versions() -> dict[str, str]:
    import av
    import cv2
    import torch
    import transformers

    from pipeline import __version__
    return {"pipeline": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "opencv": cv2.__version__, "av": av.__version__,
            "numpy": np.__version__}


def _device(spec: str):
    from pipeline.train.common import select_device
    return select_device(spec)


@dataclass(frozen=True)
class Status:
    ok: bool
    reason: str | None = None

    def json(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "missing", "reason": self.reason}


@dataclass(frozen=True)
class VideoResult:
    info: VideoInfo
    entries: list[SecondEntry]
    transcript: Transcript | None
    status: dict[str, Status]
    timings: dict[str, float]     # seconds of compute per stage
    transcript_file: str | None


class Analyzer:
    def __init__(self, cfg: AnalyzeConfig):
        self.cfg = cfg
        self.device = _device(cfg.device)
        offline = hub.is_offline(cfg.offline)
        self.offline = offline
        self.models: dict[str, Any] = {}

        detector_file = self._detector_file(cfg.face_detector, offline)
        detector = FaceDetector(detector_file)
        self.models["face_detector"] = {"name": detector.name, "sha256": (
            hub.sha256_file(detector_file) if detector_file else None)}
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

        self.whisper, self.whisper_problem = None, None
        whisper_name = cfg.whisper_model
        if whisper_name == "auto":  # small on a GPU, tiny on CPU (tiny runs ~10x faster than small on 2 cores)
            whisper_name = WHISPER_GPU if self.device.type == "cuda" else WHISPER_CPU
        self.whisper_name = whisper_name
        if whisper_name.lower() != "none":
            try:
                self.whisper, info = transcribe.load_whisper(whisper_name, device=str(self.device),
                                                             offline=offline, progress=cfg.progress)
                self.models["whisper"] = {"name": info.name, "sha256": info.sha256, "path": info.path}
            except registry.ModelUnavailableError as e:
                self.whisper_problem = (f"no Whisper checkpoint '{whisper_name}' ({e}); get one with `make models` "
                                        f"where there is a network, or pass --transcript FILE")
                log.warning("text modality off: %s", self.whisper_problem)
        else:
            self.whisper_problem = "Whisper disabled (whisper_model=none) and no transcript given"

        self.head, self.fusion_method, self.fusion_reason = self._fusion()
        self.models["fusion"] = {"method": self.fusion_method, "reason": self.fusion_reason,
                                 **(self.head.loaded.describe() if self.head else {})}
        self.software = software_versions()
        self.run_key = hashlib.sha256(json.dumps({"config": to_dict(cfg), "models": self.models},
                                                 sort_keys=True, default=str).encode()).hexdigest()[:16]

    @staticmethod
    def _detector_file(spec: str, offline: bool) -> Path | None:
        if spec == "haar":
            return None
        if spec not in ("auto", "yunet"):
            path = Path(spec)
            if not path.is_file():
                raise registry.ModelUnavailableError(f"{path}: face detector model file not found")
            return path
        found = hub.yunet_model(offline=offline, search=(data_path("faces", "detectors"),))
        if found is None and spec == "yunet":
            raise registry.ModelUnavailableError("YuNet model not found; run `make models` or set face_detector=haar")
        return found

    def _fusion(self):
        if self.cfg.fusion == "average":
            return None, "average", "configured"
        try:
            head = registry.load(self.cfg.fusion_head, device="cpu")
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
        if info.has_video:
            frames = demux.iter_frames(info.path, sample_fps=cfg.frames_per_second, max_side_px=cfg.max_frame_side_px)
            frames = tqdm(frames, total=int(math.ceil(info.duration_s * cfg.frames_per_second)), unit="frame",
                          desc=f"faces {Path(info.path).name}", disable=not cfg.progress, leave=False)
            observations, tracker, n_frames = self.face.observe(frames)
            face_rows = self.face.per_second(observations, tracker, n)
            face_status = Status(True) if observations else Status(False, f"no face found in {n_frames} sampled frames")
        timings["faces"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        keep_audio = transcript_file is None and self.whisper is not None
        kept: list[np.ndarray] = []
        audio_rows: list = [None] * n
        audio_status = Status(False, "no audio track")
        if info.has_audio:
            audio_rows = self.audio.per_second(self._tee(demux.iter_audio(info.path), kept, keep_audio), n)
            audio_status = Status(True) if any(audio_rows) else Status(False, "no speech detected (silence, music or noise)")
        timings["audio"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        transcript, text_status = self._transcript(info, transcript_file, kept)
        timings["transcribe"] = time.perf_counter() - t0
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
                           timings, str(transcript_file) if transcript_file else None)

    def analyze(self, path: str | Path, *, transcript_file: str | Path | None = None) -> dict[str, Any]:
        """The timeline document of one video (see pipeline/schema/timeline.schema.json)."""
        res = self.run(path, transcript_file=transcript_file)
        doc = writers.timeline_document(
            info=res.info, entries=res.entries, transcript=res.transcript, models=self.models, software=self.software,
            config=to_dict(self.cfg) | {"transcript_file": res.transcript_file},
            modalities={k: v.json() for k, v in res.status.items()})
        doc["run_key"] = self.run_key
        doc["timings_s"] = {k: round(v, 3) for k, v in res.timings.items()}
        return doc

    @staticmethod
    def _tee(chunks: Iterator[AudioChunk], kept: list[np.ndarray], keep: bool) -> Iterator[AudioChunk]:
        for chunk in chunks:
            if keep:
                kept.append(chunk.samples)
            yield chunk

    def _transcript(self, info: VideoInfo, transcript_file, kept: list[np.ndarray]) -> tuple[Transcript | None, Status]:
        if transcript_file is not None:
            tr = transcribe.parse_subtitles(transcript_file)
        elif not info.has_audio:
            return None, Status(False, "no audio track and no transcript given")
        elif self.whisper is None:
            return None, Status(False, self.whisper_problem)
        else:
            audio = np.concatenate(kept) if kept else np.zeros(0, np.float32)
            kept.clear()
            if len(audio) < demux.AUDIO_RATE_HZ // 2:
                return None, Status(False, "audio too short to transcribe")
            tr = transcribe.transcribe(self.whisper, audio, language=self.cfg.language, name=self.whisper_name)
        if tr.language and tr.language != ENGLISH and self.text.english_only:
            return tr, Status(False, f"speech is in '{tr.language}' and the text model is English-only; not scored")
        return tr, Status(True)


def output_path(out_dir: str | Path, video: str | Path) -> Path:
    return Path(out_dir) / f"{Path(video).stem}.json"


def existing_run_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("run_key")
    except (OSError, ValueError, AttributeError):
        return None

"""Records that cross module boundaries. Frozen; units in the field names; array shapes in comments."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TAIL_TOLERANCE_S = 0.1  # containers often round audio/video lengths by a frame or an AAC packet


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration_s: float
    fps: float | None            # average frame rate of the video stream; None without video
    width: int | None            # display width after rotation
    height: int | None
    rotation_deg: int            # display rotation applied to decoded frames (0, 90, 180, 270)
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    audio_sample_rate_hz: int | None
    is_still_image: bool = False
    origin_s: float = 0.0        # container time of t = 0: the first video frame's (else the audio's)
    video_span_s: float | None = None   # where the stream's own header says the video ends (seconds
    audio_span_s: float | None = None   # from the origin); None when only the container's end is known
    video_start_s: float = 0.0   # where the video starts on the timeline (a camera that starts late)
    audio_start_s: float = 0.0   # where the audio starts on the timeline
    tracks: tuple["Track", ...] = ()   # every stream of the file, with the ones analysed marked
    restarts_s: tuple[float, ...] = ()   # timeline seconds where the timestamps started again (joined files)

    @property
    def n_seconds(self) -> int:
        """Entries on the per-second grid: every started second counts, at least one. A tail
        shorter than TAIL_TOLERANCE_S (stream-length rounding) joins the previous second."""
        import math
        return max(1, math.ceil(self.duration_s - TAIL_TOLERANCE_S))


@dataclass(frozen=True)
class Track:
    """One stream of a media file, as its container describes it."""
    index: int                   # the container's stream index
    kind: str                    # "video", "audio", "subtitle", "cover" (an attached picture), "data"
    codec: str | None
    language: str | None         # the container's language tag as written (``eng``, ``deu``); None: absent, ``und``
    default: bool                # the container marks it as the one to play
    used: bool = False           # analysed (the video, audio or subtitle stream the pipeline chose)

    def json(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "codec": self.codec, "language": self.language,
                "default": self.default, "used": self.used}


@dataclass(frozen=True)
class StreamCoverage:
    """How much of one stream was actually decoded, against what the container promises."""
    kind: str                    # "video" or "audio"
    expected_s: float            # seconds the header promises, from the origin
    decoded_s: float             # seconds of it that decoded
    lost_s: tuple[tuple[float, float], ...]   # (start_s, end_s) stretches with nothing decoded
    lost_total_s: float          # their total length
    decode_errors: int           # packets the decoder rejected (skipped, decoding went on)
    stopped: str | None = None   # why the demuxer gave up early, when it did
    held_s: tuple[tuple[float, float], ...] = ()   # (start_s, end_s) where one frame stayed on screen (VFR): not lost

    @property
    def fraction(self) -> float:
        return 1.0 if self.expected_s <= 0 else max(0.0, min(1.0, 1.0 - self.lost_total_s / self.expected_s))

    def json(self) -> dict[str, Any]:
        return {"expected_s": self.expected_s, "decoded_s": self.decoded_s, "coverage": round(self.fraction, 4),
                "lost_total_s": self.lost_total_s, "lost_s": [list(r) for r in self.lost_s],
                "decode_errors": self.decode_errors, "stopped": self.stopped, "held_s": [list(r) for r in self.held_s]}


@dataclass(frozen=True)
class Frame:
    t_s: float                   # presentation time
    image: np.ndarray            # (H, W, 3) uint8 BGR, rotation already applied


@dataclass(frozen=True)
class AudioChunk:
    start_s: float
    samples: np.ndarray          # (n,) float32 mono in [-1, 1]
    sample_rate_hz: int

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.samples) / self.sample_rate_hz


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    text: str
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    language: str | None         # ISO 639-1 code when known
    source: str                  # "whisper:<model>" or "file:<path>"


@dataclass(frozen=True)
class FaceBox:
    x: float                     # top-left corner, pixels of the (rotated) frame
    y: float
    w: float
    h: float
    score: float
    landmarks: np.ndarray | None = None   # (5, 2) pixels: right eye, left eye, nose, mouth right, mouth left

    @property
    def area(self) -> float:
        return self.w * self.h


@dataclass(frozen=True)
class FaceObservation:
    t_s: float
    face_id: int
    box: FaceBox
    probs: np.ndarray            # (7,) over LABELS: the face CNN's
    embedding: np.ndarray        # (D,)
    blendshapes: np.ndarray | None = None    # (52,) the face landmarker's reading of the crop (None: not read / no face)
    expert_probs: np.ndarray | None = None   # (7,) the blendshape expert's, where it read the crop


@dataclass(frozen=True)
class ModalityScores:
    """One modality's result for one second of the timeline (absent seconds are None, not this)."""
    probs: np.ndarray            # (7,) over LABELS, sums to 1
    embedding: np.ndarray | None = None   # (D,) encoder embedding, used by the fusion head
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able extras (n_faces, text, ...)


@dataclass(frozen=True)
class SecondEntry:
    start_s: float
    end_s: float
    face: ModalityScores | None
    audio: ModalityScores | None
    text: ModalityScores | None
    fused: ModalityScores | None
    fused_raw: ModalityScores | None = None   # before temporal smoothing
    speaker: "Speaker | None" = None          # who speaks this second; None: not asked (the live mode)


@dataclass(frozen=True)
class Speaker:
    """Which visible person speaks in one second (pipeline/speaker.py), and on what grounds."""
    person_id: int | None        # None: nobody visible speaks (silence, an off-screen voice, no face)
    basis: str                   # "silence", "no face", "lips" (mouth against voice), "one face"
                                 # (the only face on screen while someone speaks), "unread" (no mouth reading)
    voice: int | None = None     # the voice heard (pipeline/voices.py: voices told apart, numbered as first
                                 # heard); None: silence, or voices not told apart


@dataclass(frozen=True)
class PersonSecond:
    """One second of one person on screen: their face, and fused with the voice and words when they speak."""
    second: int
    speaking: bool
    face: ModalityScores
    fused: ModalityScores | None              # smoothed over the person's own seconds
    fused_raw: ModalityScores | None = None


@dataclass(frozen=True)
class Person:
    """One person of a video: the face tracks re-identified as them (pipeline/people.py)."""
    person_id: int
    face_ids: tuple[int, ...]
    first_s: float               # first and last sampled frame they were seen in
    last_s: float
    seconds_on_screen: int       # seconds of the grid with one of their faces in a sampled frame
    seconds_speaking: int = 0    # of those, seconds in which they were the speaker
    timeline: tuple[PersonSecond, ...] = ()

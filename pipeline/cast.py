"""The cast of a video: its people (face tracks re-identified as persons), who speaks each second,
and each person's own fused timeline. It sits between the face pass and the fusion of
``analyze.Analyzer.run``:

    face pass ----watchers----> people.IdentitySampler (SFace, a few faces per track) --\\
    audio chunks -------------> speaker.Envelope (voice energy, 100 per second) ---------+--> Cast.finish:
                   (two faces at once) voices.VoiceTrack (CAM++ windows) ----------------+    people, voices,
    face rows, voice rows (VAD-gated) ----------------------------------------------------/    speakers, the face
                                                                                             fused each second

A person's face is fused with the voice and words only in the seconds that person speaks
(``primary_face: speaker``); a voice from off screen keeps its own verdict; a second without
speech fuses the dominant face (the one seen largest and longest, as ``primary_face: dominant``).
"""
from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from emotion_pipeline import people as people_mod, speaker, voices as voices_mod
from emotion_pipeline.records import FaceObservation, ModalityScores, Person, PersonSecond, Speaker

log = logging.getLogger(__name__)

BOX_DECIMALS = 1


def load_identity(setting: str, *, offline: bool) -> people_mod.FaceEmbedder | None:
    """The face embedder of the ``identity_model`` setting (a registry name or an .onnx file; none:
    off). One that cannot be had is a warning (every face track is then its own person); a tampered
    file (ChecksumError) stops the run."""
    if setting.lower() == "none":
        return None
    from emotion_pipeline.errors import ModelUnavailableError
    try:
        return people_mod.load_embedder(offline=offline, name=setting)
    except ModelUnavailableError as e:
        log.warning("no re-identification, every face track is its own person: %s", " ".join(str(e).split()))
        return None


@dataclass(frozen=True)
class CastResult:
    person_of: dict[int, int]                   # face_id -> person_id
    face_rows: list[ModalityScores | None]      # per second: the face fused (the speaker's), every face with
                                                # its person_id and box
    speakers: list[Speaker] | None              # per second; None: not asked (speaker: off)
    face_apart: frozenset[int]                  # seconds whose face stays out of the fusion (an off-screen voice)
    on_screen: list[set[int]]                   # per second: the person_ids seen
    mouth_frames: int = 0                       # video frames read again for the mouths


class Cast:
    """One video's people and speakers. ``watchers`` ride along the face pass, ``envelope`` is fed
    the audio; ``finish`` after both, ``people`` once the words are in the timeline too."""

    def __init__(self, embedder: people_mod.FaceEmbedder | None, *, source_width_px: int | None,
                 speaker_mode: str = "auto", primary_face: str = "speaker", mouth_reader=None,
                 mouth_frames=None, threshold: float = people_mod.REID_THRESHOLD, voice_embedder=None):
        """``mouth_reader``: a callable giving a speaker.MouthReader (None: mouths never read);
        ``mouth_frames``: a callable giving the video's frames at speaker.MOUTH_FPS;
        ``voice_embedder``: a callable giving a voices.VoiceEmbedder (None: voices not told apart)."""
        self.sampler = people_mod.IdentitySampler(embedder)
        self.envelope = speaker.Envelope()
        self.source_width_px, self.threshold = source_width_px, threshold
        self.speaker_mode, self.primary_face = speaker_mode, primary_face
        self.mouth_reader, self.mouth_frames = mouth_reader, mouth_frames
        self.voice_embedder = voice_embedder
        self.voice_track: voices_mod.VoiceTrack | None = None

    def prepare(self, observations: Sequence[FaceObservation]) -> None:
        """After the face pass, before the audio: where two faces are seen at once and mouths may be
        read, the voices are embedded as the audio streams (single-face videos never pay for it)."""
        if self.voice_embedder is None or self.mouth_reader is None or self.speaker_mode == "off":
            return
        at: dict[int, set[int]] = defaultdict(set)
        for o in observations:
            at[int(o.t_s)].add(o.face_id)
        if not (any(len(f) >= 2 for f in at.values()) or (self.speaker_mode == "lips" and at)):
            return
        from emotion_pipeline.errors import ModelUnavailableError
        try:
            self.voice_track = voices_mod.VoiceTrack(self.voice_embedder())
        except ModelUnavailableError as e:
            log.warning("voices not told apart (the speaker decided reading by reading): %s", " ".join(str(e).split()))

    def push(self, samples: np.ndarray) -> None:
        """One chunk of the audio stream (16 kHz mono, on the timeline)."""
        self.envelope.push(samples)
        if self.voice_track is not None:
            self.voice_track.push(samples)

    @property
    def watchers(self) -> tuple:
        return (self.sampler,)

    def _scale(self) -> float:
        """Source pixels per pixel of the sampled (downscaled) frames."""
        width = self.sampler.frame_width_px
        return (self.source_width_px / width) if width and self.source_width_px else 1.0

    def group(self, observations: Sequence[FaceObservation]) -> dict[int, int]:
        tracks, together = people_mod.summarise_tracks(observations, self.sampler.embeddings)
        return people_mod.group_people(tracks, together, threshold=self.threshold)

    def finish(self, face_encoder, tracker, observations: Sequence[FaceObservation],
               voice_rows: Sequence[ModalityScores | None], n_seconds: int) -> CastResult:
        """People, each second's speaker, and the face rows to fuse (``face_encoder.per_second``
        with the speaker's face chosen where a visible person speaks)."""
        person_of = self.group(observations)
        faces_at: list[dict[int, int]] = [defaultdict(int) for _ in range(n_seconds)]   # face_id -> frames
        for o in observations:
            faces_at[_second(o.t_s, n_seconds)][o.face_id] += 1
        on_screen = [{person_of[f] for f in at} for at in faces_at]
        speakers, frames_read = None, 0
        if self.speaker_mode != "off":
            speech = [i < len(voice_rows) and voice_rows[i] is not None for i in range(n_seconds)]
            evidence, in_sync, frames_read, mouths = self._read_lips(observations, speech, on_screen, n_seconds)
            heard, links = None, None
            if mouths is not None and self.voice_track is not None:
                heard = voices_mod.label_seconds(*self.voice_track.windows(), speech, n_seconds)
                links = speaker.voice_links(mouths, self.envelope.band(), heard, person_of, in_sync=in_sync)
                log.debug("voices %d, linked %s", len({v for v in heard if v is not None}), links)
            speakers = speaker.decide(n_seconds, speech, [list(at) for at in faces_at], evidence, person_of,
                                      in_sync=in_sync, voices=heard, links=links)
        chosen, apart = {}, set()
        if speakers is not None and self.primary_face == "speaker":
            for s, sp in enumerate(speakers):
                if sp.person_id is not None:
                    mine = {f: k for f, k in faces_at[s].items() if person_of[f] == sp.person_id}
                    chosen[s] = max(mine, key=mine.get)
                elif sp.basis == "lips":          # a voice from off screen: it keeps its own verdict
                    apart.add(s)
        rows = face_encoder.per_second(list(observations), tracker, n_seconds, chosen=chosen)
        rows = with_people(rows, observations, person_of, self._scale(), n_seconds)
        return CastResult(person_of, rows, speakers, frozenset(apart), on_screen, frames_read)

    def _read_lips(self, observations, speech, on_screen, n_seconds
                   ) -> tuple[speaker.Evidence | None, bool, int, speaker.Mouths | None]:
        """(the mouths' readings against the voice, whether any mouth is in sync with the voice, frames
        read, the mouths); evidence None where mouths are not read: mode auto with no second of speech
        shared by two people on screen, or no mouth reader."""
        shared = any(sp and len(p) >= 2 for sp, p in zip(speech, on_screen))
        if self.mouth_reader is None or not (shared or self.speaker_mode == "lips"):
            return None, True, 0, None
        wanted = {s for s in range(n_seconds) if speech[s] and on_screen[s]}
        margin = int(np.ceil(speaker.SYNC_WINDOW_S / 2))
        wanted = {k for s in wanted for k in range(max(0, s - margin), min(n_seconds, s + margin + 1))}
        from emotion_pipeline.errors import ModelUnavailableError
        try:
            reader = self.mouth_reader()
        except ModelUnavailableError as e:
            log.warning("mouths not read (speakers of seconds with several faces unknown): %s", " ".join(str(e).split()))
            return None, True, 0, None
        try:
            mouths = speaker.read_mouths(self.mouth_frames(), observations, wanted, reader)
        finally:
            reader.close()
        envelope = self.envelope.band()
        z = speaker.sync_z(mouths, envelope)
        log.debug("mouths against the voice: z %.2f over %d frames", z, mouths.frames)
        return speaker.frame_evidence(mouths, envelope), z >= speaker.SYNC_MIN_Z, mouths.frames, mouths

    def people(self, found: CastResult, face_encoder, tracker, observations: Sequence[FaceObservation],
               timeline_of, main) -> tuple[Person, ...]:
        """The Person records with their own timelines: per person, their face each second they are on
        screen, fused with the voice and words of ``main`` (the video's Timeline) in the seconds they
        speak. ``timeline_of()``: a new Timeline with the run's fusion and smoothing."""
        n = len(found.face_rows)
        speakers = found.speakers or []
        by_person: dict[int, list[FaceObservation]] = defaultdict(list)
        for o in observations:
            by_person[found.person_of[o.face_id]].append(o)
        timelines = {}
        for pid, mine in by_person.items():
            rows = face_encoder.per_second(mine, tracker, n)
            own = timeline_of()
            seconds = [s for s in range(n) if rows[s] is not None]
            speaking = {s for s in seconds if s < len(speakers) and speakers[s].person_id == pid}
            for s in seconds:
                _, audio, text = main.row(s)
                own.add(s, face=rows[s], **({"audio": audio, "text": text} if s in speaking else {}))
            timelines[pid] = tuple(PersonSecond(s, s in speaking, rows[s], own.smoothed(s), own.fused_raw(s))
                                   for s in seconds)
        return people_of(observations, found.person_of, n, found.speakers, timelines)


def _second(t_s: float, n_seconds: int) -> int:
    return min(int(t_s), n_seconds - 1)


def with_people(rows: list[ModalityScores | None], observations: Sequence[FaceObservation],
                person_of: dict[int, int], scale: float, n_seconds: int) -> list[ModalityScores | None]:
    """The face rows with each face's ``person_id`` and ``box`` (its mean box over the second's
    sampled frames, x, y, w, h in pixels of the source), and the row's own ``person_id``."""
    boxes: dict[tuple[int, int], list] = defaultdict(list)
    for o in observations:
        boxes[(_second(o.t_s, n_seconds), o.face_id)].append((o.box.x, o.box.y, o.box.w, o.box.h))
    out: list[ModalityScores | None] = []
    for s, row in enumerate(rows):
        if row is None:
            out.append(None)
            continue
        faces = []
        for f in row.details.get("faces", []):
            x, y, w, h = (round(float(v) * scale, BOX_DECIMALS) for v in np.mean(boxes[(s, f["face_id"])], axis=0))
            faces.append({**f, "person_id": person_of.get(f["face_id"], -1),
                          "box": {"x": x, "y": y, "w": w, "h": h}})
        out.append(dataclasses.replace(row, details={**row.details, "faces": faces,
                                                     "person_id": person_of.get(row.details["face_id"], -1)}))
    return out


def people_of(observations: Sequence[FaceObservation], person_of: dict[int, int], n_seconds: int,
              speakers: Sequence[Speaker] | None = None,
              timelines: dict[int, tuple[PersonSecond, ...]] | None = None) -> tuple[Person, ...]:
    """The ``Person`` records, in person_id order."""
    faces: dict[int, set[int]] = defaultdict(set)
    times: dict[int, list[float]] = defaultdict(list)
    secs: dict[int, set[int]] = defaultdict(set)
    for o in observations:
        pid = person_of[o.face_id]
        faces[pid].add(o.face_id)
        times[pid].append(o.t_s)
        secs[pid].add(_second(o.t_s, n_seconds))
    speaking: dict[int, int] = defaultdict(int)
    for sp in speakers or ():
        if sp.person_id is not None:
            speaking[sp.person_id] += 1
    return tuple(Person(pid, tuple(sorted(faces[pid])), round(min(times[pid]), 3), round(max(times[pid]), 3),
                        len(secs[pid]), speaking[pid], (timelines or {}).get(pid, ()))
                 for pid in sorted(faces))

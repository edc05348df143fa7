"""Who speaks: each second, which visible person's mouth moves with the voice that is heard.

    audio 16 kHz --> energy per 10 ms --band-pass ~1-12 Hz (syllables)--> envelope ----------------\\
    video again at MOUTH_FPS (seconds with speech and a face to read) --> each face's box from the   |
      face pass, interpolated --> MediaPipe face landmarker (VIDEO mode, one per face track) -->      |
      jawOpen --minus its 1-s mean--> mouth signal ---------------------------------------------------+
    the video's lag (LAG_RANGE_S): how late the voice comes after the mouths, where all the tracks'
      mouths together agree best with it (one file, one offset); each track within LAG_REFINE_S of it
    per mouth reading: mouth and voice each standardised over FRAME_Z_WINDOW_S around it, their
      product (its mean over a stretch is the two signals' correlation there)
    over the readings of a stretch of speech: the most likely speaker at each reading (Viterbi;
      states: each person on screen, or nobody on screen; a reading counts for a person by how far
      its product lies above FRAME_THRESHOLD, a change of speaker costs SWITCH_COST), so a turn
      ends where the products say, not where a window around the second ends; each second's speaker
      is the one of most of its readings
    with the voices told apart (pipeline/voices.py, CAM++; the default): the speaker per voice instead,
      from all the readings of the seconds that voice is heard (voice_links), so a turn ends where
      the voice changes and a voice heard in several turns is judged on all of them

A listener whose lips move, or a person talking on screen who is not the one heard, has no
correlation with the heard voice at any lag; a voice from off screen correlates with nobody, and
"nobody visible speaks" (null) is the answer. A second without speech (the VAD's voice rows are
null) has no speaker. A second with one face only, in a video where no second has two faces and
speech, is taken as that face's (basis "one face"; reading one face's mouth costs more than the
face stage's budget allows, README "Speed").

The mouth signal needs 10+ readings a second (the face pass samples 4): a second decode of the
video, and MediaPipe at 7-12 ms per face and frame, is the cost of multi-person videos (`make bench`,
bench/people_bench.py).
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from emotion_pipeline.records import FaceBox, FaceObservation, Speaker

log = logging.getLogger(__name__)

ENVELOPE_HZ = 100                 # voice energy frames per second (10 ms)
ENVELOPE_RANGE_DB = 50.0          # frames more than 50 dB below the loud end (99th pct) are floored there
BAND_S = (0.08, 1.0)              # band-pass as a difference of moving means: passes ~1-12 Hz (syllables)
MOUTH_FPS = 12.5                  # mouth readings per second; on the shared talking clips (jawOpen against the
                                  # own voice vs other clips' voices, 5-s windows, first measurement) AUC 0.966 at
                                  # 12.5/s, 0.934 at 8.3/s, 0.825 at the face pass's 4/s; 25/s gained nothing
MOUTH_CROP_PX = 128               # the face crop handed to the landmarker, framed by MOUTH_BORDER of its own edge
MOUTH_BORDER = 0.25
MAX_BOX_GAP_S = 0.6               # a face's box is interpolated between face-pass detections at most this far apart
DETREND_S = 1.0                   # the mouth signal minus its centred 1-s mean (head movement, a smile held)
LAG_RANGE_S = (-0.08, 0.44)       # how late the voice may come after the mouth: the shared clips' own offsets
LAG_STEP_S = 0.04                 # measured 0.0 to 0.40 s (sources out of sync by up to 0.4 s); the mouth
                                  # moves before the sound, so little room below 0
LAG_REFINE_S = 0.08               # a track's own lag within this of the video's (a lag chosen per track alone
                                  # would be the best of many noise correlations for a face that does not speak)
SYNC_WINDOW_S = 4.0               # the sync check's per-second correlations are taken over this much around the
                                  # second (AUC of speaking against not speaking on the shared clips: 0.93 at
                                  # 5 s, 0.87 at 3 s); the speaker itself is decided at the readings (below)
MIN_READINGS = 12                 # fewer mouth readings in a window: that face is not judged that second
JAW_OPEN = 25                     # index of jawOpen among the landmarker's 52 blendshapes
# Is any mouth on screen in sync with the voice at all? Each second's best-agreeing mouth (the highest
# per-second correlation among the faces, sync_scores) averaged over the seconds, against the same with
# the voice shifted by 1 s or more (sync destroyed, everything else kept; lags chosen the same way):
# z-score. The best face per second, not all faces together: when people take turns each mouth follows
# the voice only in its own turns (and a face's mouth can run against the other's voice), which an
# average over the faces dilutes. Chosen on the built clips of bench/speaker_sync.py (CHOSEN_ON: 6-s
# turns of the three long talking clips, 4-s turns of 8-s clips, 5 two-shots under an off-screen voice,
# as built and with each source's audio moved to one common lag, --aligned): the 15+ s turn-taking
# videos scored 2.5-5.3 (as built, Andrew | Obama -0.95: sources whose own lags differ by 0.14 s, which
# the one lag per video cannot serve both; 1.7-3.5 and -1.0 with the earlier all-faces average), the
# two-shots under an off-screen voice -1.7-0.1 (earlier -1.4-1.2); on the HELD_OUT ones up to 1.34.
# Where no mouth follows the voice z is about N(0, 1): synthetic off-screen cases pass 1.5 8% of the time.
SYNC_MIN_Z = 1.5
NULL_SHIFT_S = 1.0                # the shortest shift; shifts every NULL_STEP_S up to the video's length - 1 s
NULL_STEP_S = 0.25                # (an 8-s video has 25 shifts to compare with, not 8)
MAX_NULL_SHIFTS = 40

# Deciding at the mouth readings (12.5 a second) instead of per second on 4-s windows: chosen on the
# CHOSEN_ON built clips of bench/speaker_sync.py, as built and --aligned together, 182 of 274 speech
# seconds right against 160 with the per-second windows; on the HELD_OUT ones 161 of 286 against 141;
# no more seconds of the two-shots under an off-screen voice given to anyone on screen (the sync check
# decides those). Of the 108 settings tried (windows 1-2 s, thresholds 0.1-0.2, costs 1.9-20), 102
# beat 141 on the held-out clips (median 156), so the gain is the decoding's, not the setting's; a
# cost of 6 then placed most chosen-on seconds (5: 178, 7.5: 178, 10: 171).
FRAME_Z_WINDOW_S = 1.0            # mouth and voice standardised (mean, spread) over this much around each reading
FRAME_THRESHOLD = 0.1             # a reading's product counts for its face speaking by how far it lies above this
SWITCH_COST = 6.0                 # a change of speaker, in units of that product


# ---------------------------------------------------------------------------- the voice
class Envelope:
    """Voice energy at ENVELOPE_HZ, fed the audio as it streams (any chunking)."""

    def __init__(self, sample_rate_hz: int = 16_000):
        self.rate, self.frame = sample_rate_hz, sample_rate_hz // ENVELOPE_HZ
        self._rest = np.zeros(0, np.float32)
        self._energy: list[np.ndarray] = []

    def push(self, samples: np.ndarray) -> None:
        """In-band energy (vad.BAND_HZ, where voiced speech lies; hum and hiss left out) of each 10 ms frame."""
        from emotion_pipeline.vad import BAND_HZ

        x = np.concatenate([self._rest, np.asarray(samples, np.float32).reshape(-1)])
        n = len(x) // self.frame * self.frame
        if n:
            frames = x[:n].reshape(-1, self.frame) * np.hanning(self.frame).astype(np.float32)
            freqs = np.fft.rfftfreq(self.frame, 1.0 / self.rate)
            band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
            power = (np.abs(np.fft.rfft(frames, axis=1)[:, band]) ** 2).sum(axis=1)
            self._energy.append((10 * np.log10(power + 1e-10)).astype(np.float32))
        self._rest = x[n:]

    def band(self) -> np.ndarray:
        """The band-passed envelope, one value per 1 / ENVELOPE_HZ s from the timeline's origin."""
        e = np.concatenate(self._energy) if self._energy else np.zeros(0, np.float32)
        if len(e) == 0:
            return e
        e = np.maximum(e, np.percentile(e, 99) - ENVELOPE_RANGE_DB)
        return _moving_mean(e, BAND_S[0] * ENVELOPE_HZ) - _moving_mean(e, BAND_S[1] * ENVELOPE_HZ)


def _moving_mean(x: np.ndarray, width: float) -> np.ndarray:
    k = max(1, int(round(width)))
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    idx = np.arange(len(x))
    lo, hi = np.maximum(0, idx - k // 2), np.minimum(len(x), idx - k // 2 + k)
    return ((c[hi] - c[lo]) / (hi - lo)).astype(np.float32)


# ---------------------------------------------------------------------------- the mouths
class MouthReader:
    """jawOpen of one face track's crops in time order: a MediaPipe FaceLandmarker in VIDEO mode per
    track (it follows the face from frame to frame instead of finding it again)."""

    def __init__(self, model_path: str | Path):
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as e:
            from emotion_pipeline.errors import ModelUnavailableError
            raise ModelUnavailableError(f"{model_path}: reading mouths needs mediapipe (pip install mediapipe==1.2.3; "
                                        f"Debian: apt-get install libegl1 libgles2)") from e
        os.environ.setdefault("GLOG_minloglevel", "2")
        self._mp, self._vision = mp, vision
        self._options = lambda: vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path), delegate=BaseOptions.Delegate.CPU),
            running_mode=vision.RunningMode.VIDEO, num_faces=1, output_face_blendshapes=True)
        self._tasks: dict[int, object] = {}
        self._last_ms: dict[int, int] = {}

    def read(self, track: int, crop_bgr: np.ndarray, t_s: float) -> float | None:
        task = self._tasks.get(track)
        if task is None:
            from emotion_pipeline.landmarks import _native_stderr_quiet   # MediaPipe's start-up lines off stderr
            with _native_stderr_quiet():
                task = self._tasks[track] = self._vision.FaceLandmarker.create_from_options(self._options())
        ms = max(int(round(t_s * 1000)), self._last_ms.get(track, -1) + 1)
        self._last_ms[track] = ms
        pad = int(round(MOUTH_BORDER * crop_bgr.shape[0]))
        image = cv2.copyMakeBorder(crop_bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        result = task.detect_for_video(self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                                                      data=np.ascontiguousarray(image[:, :, ::-1])), ms)
        if not result.face_blendshapes:
            return None
        return float(result.face_blendshapes[0][JAW_OPEN].score)

    def forget(self, keep: Iterable[int]) -> None:
        """Close the landmarkers of tracks not in ``keep`` (a long video meets many faces)."""
        keep = set(keep)
        for track in [t for t in self._tasks if t not in keep]:
            self._tasks.pop(track).close()
            # its clock too: a track id met again (the next video's face 0) starts a new landmarker at its
            # own times, not squeezed 1 ms apart after the last video's end
            self._last_ms.pop(track, None)

    def close(self) -> None:
        self.forget(())


def load_mouth_reader(offline: bool = True, name: str = "face-landmarker") -> MouthReader:
    from emotion_pipeline.models import registry

    return MouthReader(registry.load(name, kind="detector", offline=offline).path)


def _box_at(t: float, track_obs: list[FaceObservation]) -> FaceBox | None:
    """The track's box at ``t``, interpolated between the face pass's detections around it."""
    times = [o.t_s for o in track_obs]
    k = int(np.searchsorted(times, t, side="right")) - 1
    if k < 0 or k >= len(track_obs):
        return None
    a = track_obs[k]
    if k + 1 == len(track_obs):
        return a.box if t - a.t_s <= 0.5 / MOUTH_FPS else None
    b = track_obs[k + 1]
    if b.t_s - a.t_s > MAX_BOX_GAP_S:
        return None
    w = (t - a.t_s) / max(b.t_s - a.t_s, 1e-6)
    mix = lambda p, q: (1 - w) * p + w * q
    lm = None if a.box.landmarks is None or b.box.landmarks is None else mix(a.box.landmarks, b.box.landmarks)
    return FaceBox(mix(a.box.x, b.box.x), mix(a.box.y, b.box.y), mix(a.box.w, b.box.w), mix(a.box.h, b.box.h),
                   min(a.box.score, b.box.score), lm)


@dataclass(frozen=True)
class Mouths:
    """Per face track: the times (seconds) and jawOpen values of its mouth readings."""
    times: dict[int, np.ndarray]
    values: dict[int, np.ndarray]
    frames: int                   # video frames read


def read_mouths(frames, observations: Sequence[FaceObservation], wanted: set[int], reader: MouthReader) -> Mouths:
    """Read the mouths of every face track in the frames (``demux.iter_frames`` at MOUTH_FPS, the
    face pass's frame size) that fall in a ``wanted`` second."""
    from emotion_pipeline.faces import aligned_crop

    by_track: dict[int, list[FaceObservation]] = defaultdict(list)
    for o in sorted(observations, key=lambda o: o.t_s):
        by_track[o.face_id].append(o)
    spans = {fid: (obs[0].t_s, obs[-1].t_s) for fid, obs in by_track.items()}
    times: dict[int, list[float]] = defaultdict(list)
    values: dict[int, list[float]] = defaultdict(list)
    last = max(wanted, default=-1)
    n = 0
    for frame in frames:
        s = int(frame.t_s)
        if s > last + 1:
            break
        if s not in wanted:
            continue
        n += 1
        live = [fid for fid, (a, b) in spans.items() if a - 0.5 <= frame.t_s <= b + 0.5]
        for fid in live:
            box = _box_at(frame.t_s, by_track[fid])
            if box is None:
                continue
            jaw = reader.read(fid, aligned_crop(frame.image, box, MOUTH_CROP_PX), frame.t_s)
            if jaw is not None:
                times[fid].append(frame.t_s)
                values[fid].append(jaw)
        if n % 64 == 0:
            reader.forget(live)
    return Mouths({k: np.asarray(v) for k, v in times.items()}, {k: np.asarray(v) for k, v in values.items()}, n)


# ---------------------------------------------------------------------------- mouth against voice
def _detrended(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(v)])
    lo = np.searchsorted(t, t - DETREND_S / 2)
    hi = np.searchsorted(t, t + DETREND_S / 2, side="right")
    return v - (c[hi] - c[lo]) / np.maximum(hi - lo, 1)


def _at(envelope: np.ndarray, t: np.ndarray) -> np.ndarray:
    return envelope[np.clip(np.round(t * ENVELOPE_HZ).astype(int), 0, max(len(envelope) - 1, 0))]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 1e-9 else 0.0


LAGS_S = np.round(np.arange(LAG_RANGE_S[0], LAG_RANGE_S[1] + 1e-9, LAG_STEP_S), 3)


def lag_curves(mouths: Mouths, envelope: np.ndarray) -> dict[int, np.ndarray]:
    """face_id -> correlation of its (detrended) mouth with the voice over all its readings, per LAGS_S."""
    out = {}
    for fid, t in mouths.times.items():
        if len(t) >= MIN_READINGS:
            m = _detrended(t, mouths.values[fid])
            out[fid] = np.array([_corr(m, _at(envelope, t + lag)) for lag in LAGS_S])
    return out


def video_lag(mouths: Mouths, curves: dict[int, np.ndarray]) -> float:
    """The lag at which the mouths on screen, weighted by their readings, agree best with the voice."""
    if not curves:
        return 0.0
    total = sum(len(mouths.times[fid]) * c for fid, c in curves.items())
    return float(LAGS_S[int(np.argmax(total))])


def _agreement(mouths: Mouths, envelope: np.ndarray, seconds: Sequence[int]) -> float:
    """Each second's best-agreeing mouth (sync_scores), averaged over the seconds any mouth is judged."""
    best = [max(per_face.values()) for per_face in sync_scores(mouths, envelope, seconds).values() if per_face]
    return float(np.mean(best)) if best else 0.0


def sync_z(mouths: Mouths, envelope: np.ndarray) -> float:
    """How far the mouths' agreement with the voice stands above its agreement with the voice shifted
    out of sync (see SYNC_MIN_Z), in standard deviations; 0 when there is too little to tell."""
    n = len(envelope)
    shifts = np.arange(NULL_SHIFT_S, n / ENVELOPE_HZ - NULL_SHIFT_S + 1e-9, NULL_STEP_S)
    if len(shifts) < 4:
        return 0.0
    if len(shifts) > MAX_NULL_SHIFTS:
        shifts = shifts[np.linspace(0, len(shifts) - 1, MAX_NULL_SHIFTS).astype(int)]
    seconds = sorted({int(x) for t in mouths.times.values() for x in t})
    null = np.array([_agreement(mouths, np.roll(envelope, int(round(d * ENVELOPE_HZ))), seconds) for d in shifts])
    return float((_agreement(mouths, envelope, seconds) - null.mean()) / max(float(null.std()), 1e-6))


def sync_scores(mouths: Mouths, envelope: np.ndarray, seconds: Iterable[int], *,
                lag_s: float | None = None) -> dict[int, dict[int, float]]:
    """second -> {face_id: correlation of its mouth with the voice over SYNC_WINDOW_S around it}, each
    track at its lag near the video's (``lag_s``: the video's lag given, else ``video_lag``)."""
    out: dict[int, dict[int, float]] = defaultdict(dict)
    seconds = sorted(seconds)
    curves = lag_curves(mouths, envelope)
    centre = video_lag(mouths, curves) if lag_s is None else lag_s
    near = np.abs(LAGS_S - centre) <= LAG_REFINE_S + 1e-9
    for fid, curve in curves.items():
        t = mouths.times[fid]
        m = _detrended(t, mouths.values[fid])
        lag = float(LAGS_S[near][int(np.argmax(curve[near]))])
        e = _at(envelope, t + lag)
        for s in seconds:
            lo = np.searchsorted(t, s + 0.5 - SYNC_WINDOW_S / 2)
            hi = np.searchsorted(t, s + 0.5 + SYNC_WINDOW_S / 2)
            if hi - lo >= MIN_READINGS and (t[lo] <= s + 1 and t[hi - 1] >= s):
                out[s][fid] = _corr(m[lo:hi], e[lo:hi])
    return out


def _local_z(t: np.ndarray, x: np.ndarray, width_s: float) -> np.ndarray:
    """``x`` minus its mean over ``width_s`` around each time, divided by its spread there."""
    c1, c2 = np.concatenate([[0.0], np.cumsum(x)]), np.concatenate([[0.0], np.cumsum(x * x)])
    lo, hi = np.searchsorted(t, t - width_s / 2), np.searchsorted(t, t + width_s / 2, side="right")
    n = np.maximum(hi - lo, 1)
    mean = (c1[hi] - c1[lo]) / n
    return (x - mean) / np.sqrt(np.maximum((c2[hi] - c2[lo]) / n - mean * mean, 1e-12))


@dataclass(frozen=True)
class Evidence:
    """Per face track: the times of its mouth readings and how much each counts for that face
    speaking (the product of mouth and voice, minus FRAME_THRESHOLD)."""
    times: dict[int, np.ndarray]
    values: dict[int, np.ndarray]


def frame_evidence(mouths: Mouths, envelope: np.ndarray, *, lag_s: float | None = None) -> Evidence:
    """Each track's readings against the voice, at its lag near the video's (``lag_s``: the video's
    lag given, else ``video_lag``)."""
    curves = lag_curves(mouths, envelope)
    centre = video_lag(mouths, curves) if lag_s is None else lag_s
    near = np.abs(LAGS_S - centre) <= LAG_REFINE_S + 1e-9
    times, values = {}, {}
    for fid, curve in curves.items():
        t = mouths.times[fid]
        lag = float(LAGS_S[near][int(np.argmax(curve[near]))])
        m = _local_z(t, _detrended(t, mouths.values[fid]), FRAME_Z_WINDOW_S)
        e = _local_z(t, _at(envelope, t + lag).astype(np.float64), FRAME_Z_WINDOW_S)
        times[fid], values[fid] = t, m * e - FRAME_THRESHOLD
    return Evidence(times, values)


# ---------------------------------------------------------------------------- voices to people
# With the voices told apart (pipeline/voices.py), the speaker is decided per voice, from the mouth
# readings of all the seconds that voice is heard, not per reading: a turn then ends where the voice
# changes, and a voice heard in several turns gathers the evidence of all of them. For each voice
# and person on screen: the mean product of their mouth and the voice (frame_evidence + FRAME_THRESHOLD)
# over the voice's seconds, as a z-score against the same with the voice shifted out of sync (the
# shifts of sync_z). Voices and people are linked one to one (a person speaks with one voice
# here), strongest first. Where the video's sync check passes, the strongest link needs z >=
# VOICE_LINK_Z (the check vouches for it) and each further one VOICE_SECOND_Z of its own (an
# off-screen interviewer is otherwise given to whoever else is on screen about half the time); where
# it fails (too little in sync over the whole video, as in short clips of two 4-s turns), the links
# must stand out together: each z at least VOICE_PAIR_Z and their sum over sqrt(links) at least
# VOICE_JOINT_Z, else nobody visible speaks. VOICE_LINK_Z, VOICE_PAIR_Z, VOICE_JOINT_Z were chosen on
# the CHOSEN_ON clips of bench/speaker_sync.py, VOICE_SECOND_Z on its INTERVIEW clips;
# `python -m bench.speaker_sync --clips [--aligned]`, speech seconds right, as built / aligned: chosen
# on 110 / 108 of 137, held out 93 / 104 of 145 / 141 (at each reading: 91 / 91, 77 / 84); off-screen
# voices given to someone 8 / 0 of 59 / 58; held-out interviews' off-screen interviewer given to
# someone 8 / 2 of 30 / 31 seconds (with any further link z >= VOICE_LINK_Z: 12 / 10). With each voice
# given its true person, 132 and 136 of 137 and 145: the voices themselves are told apart; linking a
# short one to its mouth is what fails.
VOICE_LINK_Z = 0.0
VOICE_SECOND_Z = 0.5
VOICE_PAIR_Z = 1.0
VOICE_JOINT_Z = 1.5
VOICE_MIN_READINGS = 20           # a voice and a person judged on fewer mouth readings (1.6 s) are not linked


def _voice_means(evidence: Evidence, voice_of: np.ndarray, person_of: dict[int, int],
                 persons: list[int], n_voices: int) -> tuple[np.ndarray, np.ndarray]:
    """(voices x persons) mean of mouth x voice over the voice's seconds, and the readings counted."""
    total = np.zeros((n_voices, len(persons)))
    count = np.zeros((n_voices, len(persons)))
    for fid, t in evidence.times.items():
        pid = person_of.get(fid, fid)
        if pid not in persons:
            continue
        s = np.clip(t.astype(int), 0, len(voice_of) - 1)
        v = voice_of[s]
        ok = v >= 0
        j = persons.index(pid)
        total[:, j] += np.bincount(v[ok], weights=evidence.values[fid][ok] + FRAME_THRESHOLD, minlength=n_voices)
        count[:, j] += np.bincount(v[ok], minlength=n_voices)
    return total / np.maximum(count, 1), count


def voice_links(mouths: Mouths, envelope: np.ndarray, voices: Sequence[int | None], person_of: dict[int, int], *,
                in_sync: bool) -> dict[int, int]:
    """voice id -> the person_id whose mouth speaks it (voices of nobody on screen left out)."""
    voice_of = np.array([-1 if v is None else v for v in voices], int)
    if not (voice_of >= 0).any():
        return {}
    n_voices = int(voice_of.max()) + 1
    persons = sorted({person_of.get(f, f) for f in mouths.times})
    if not persons:
        return {}
    mean, count = _voice_means(frame_evidence(mouths, envelope), voice_of, person_of, persons, n_voices)
    n = len(envelope)
    shifts = np.arange(NULL_SHIFT_S, n / ENVELOPE_HZ - NULL_SHIFT_S + 1e-9, NULL_STEP_S)
    if len(shifts) < 4:
        return {}
    if len(shifts) > MAX_NULL_SHIFTS:
        shifts = shifts[np.linspace(0, len(shifts) - 1, MAX_NULL_SHIFTS).astype(int)]
    null = np.stack([_voice_means(frame_evidence(mouths, np.roll(envelope, int(round(d * ENVELOPE_HZ)))),
                                  voice_of, person_of, persons, n_voices)[0] for d in shifts])
    z = (mean - null.mean(0)) / np.maximum(null.std(0), 1e-6)
    z[count < VOICE_MIN_READINGS] = -np.inf
    # one to one (a person speaks with one voice), strongest first
    pairs = sorted(((float(z[v, j]), v, j) for v in range(n_voices) for j in range(len(persons))
                    if z[v, j] >= (VOICE_LINK_Z if in_sync else VOICE_PAIR_Z)), reverse=True)
    chosen, used_v, used_p = [], set(), set()
    for zz, v, j in pairs:
        if v not in used_v and j not in used_p:
            chosen.append((zz, v, j))
            used_v.add(v)
            used_p.add(j)
    if in_sync:   # the sync check vouches for one link; each further one needs evidence of its own
        return {v: persons[j] for _, v, j in chosen[:1] + [c for c in chosen[1:] if c[0] >= VOICE_SECOND_Z]}
    # the strongest set of links whose sum / sqrt(links) passes VOICE_JOINT_Z
    joint = [sum(c[0] for c in chosen[:k]) / np.sqrt(k) for k in range(1, len(chosen) + 1)]
    if not joint or max(joint) < VOICE_JOINT_Z:
        return {}
    k = int(np.argmax(joint)) + 1
    return {v: persons[j] for _, v, j in chosen[:k]}


# ---------------------------------------------------------------------------- the seconds
def decide(n_seconds: int, speech: Sequence[bool], on_screen: Sequence[Sequence[int]],
           evidence: Evidence | None, person_of: dict[int, int], *, in_sync: bool = True,
           voices: Sequence[int | None] | None = None, links: dict[int, int] | None = None) -> list[Speaker]:
    """Each second's Speaker. ``speech``: someone speaks (the VAD); ``on_screen``: the face_ids seen in
    each second; ``evidence``: frame_evidence (None: mouths not read); ``in_sync``: some mouth on
    screen moves with the voice (sync_z): without, nobody visible speaks in any second. ``voices``:
    each second's voice id (pipeline/voices.py; None: voices not told apart), with ``links``
    (voice_links): the speaker of a second is its voice's person, where on screen, and ``in_sync``
    has had its say in the links."""
    out: list[Speaker | None] = [None] * n_seconds
    run: list[int] = []

    def close_run():
        if run:
            for s, sp in zip(run, _viterbi(run, on_screen, evidence, person_of)):
                out[s] = sp
            run.clear()

    def voice(s):
        return None if voices is None or s >= len(voices) else voices[s]

    for s in range(n_seconds):
        persons = {person_of.get(f, f) for f in on_screen[s]}
        if not speech[s]:
            close_run()
            out[s] = Speaker(None, "silence")
        elif not persons:
            close_run()
            out[s] = Speaker(None, "no face", voice(s))
        elif evidence is None:
            close_run()
            out[s] = Speaker(next(iter(persons)), "one face") if len(persons) == 1 else Speaker(None, "unread")
        elif voices is not None:
            who = None if voice(s) is None else (links or {}).get(voice(s))
            out[s] = Speaker(who if who in persons else None, "lips", voice(s))
        elif not in_sync:
            out[s] = Speaker(None, "lips")
        else:
            run.append(s)
    close_run()
    return out   # type: ignore[return-value]


def _viterbi(run: list[int], on_screen, evidence: Evidence, person_of) -> list[Speaker]:
    """The speaker of each second of a stretch of speech: the most likely speaker at each mouth
    reading in it (states: a person on screen, or None), then each second's most frequent one."""
    states = sorted({person_of.get(f, f) for s in run for f in on_screen[s]}) + [None]
    k = len(states)
    inside = {fid: np.isin(t.astype(int), run) for fid, t in evidence.times.items()}   # readings in the stretch
    grid = np.unique(np.concatenate([t[inside[f]] for f, t in evidence.times.items()] or [np.zeros(0)]))
    if len(grid) == 0:
        return [Speaker(None, "unread")] * len(run)
    second_of = grid.astype(int)
    present = np.zeros((max(run) + 1, k), bool)       # not on screen in that second: cannot be the speaker
    present[:, -1] = True
    for s in run:
        for f in on_screen[s]:
            present[s, states.index(person_of.get(f, f))] = True
    read = np.zeros(len(grid), bool)
    best = np.full((len(grid), k), -np.inf)            # a person's best-agreeing track at each reading
    for fid, t in evidence.times.items():
        pid = person_of.get(fid, fid)
        if pid in states:
            idx = np.searchsorted(grid, t[inside[fid]])
            read[idx] = True
            np.maximum.at(best[:, states.index(pid)], idx, evidence.values[fid][inside[fid]])
    emit = np.where(present[second_of], np.where(np.isfinite(best), best, 0.0), -np.inf)
    emit[:, -1] = 0.0
    stay = np.where(np.eye(k, dtype=bool), 0.0, -SWITCH_COST)
    score, back = emit[0].copy(), np.zeros((len(grid), k), int)
    for i in range(1, len(grid)):
        total = score[:, None] + stay
        back[i] = np.argmax(total, axis=0)
        score = total[back[i], np.arange(k)] + emit[i]
    path = [int(np.argmax(score))]
    for i in range(len(grid) - 1, 0, -1):
        path.append(int(back[i][path[-1]]))
    path = np.array(path[::-1])
    out = []
    for s in run:
        here = (second_of == s) & read
        if not here.any():
            out.append(Speaker(None, "unread"))
            continue
        out.append(Speaker(states[int(np.bincount(path[here], minlength=k).argmax())], "lips"))
    return out

"""How a mouth moves with the voice it speaks, and with a voice it does not (per-second correlations
over SYNC_WINDOW_S, what the sync check of pipeline/speaker.py averages), and the active speaker found
on built clips.

    python -m bench.speaker_sync [--json out.json] [--clips]

1. Each shared talking clip (5 people): its face's mouth read as the pipeline reads it (face pass at
   4 frames/s, mouths at MOUTH_FPS) against its own voice (speaking) and against each other clip's
   voice at the same times (not speaking): the per-second correlations, their mean and standard
   deviation, and the AUC of the two.
2. ``--clips``: videos built with ffmpeg: two people side by side taking turns, only one heard at a
   time (CHOSEN_ON: the pairs and turns the settings were chosen on; HELD_OUT: other stretches of the
   clips, other pairs, 2-5 s turns); two-shots under a third person's voice; interviews (INTERVIEW,
   INTERVIEW_HELD): two people on screen, one of them heard, an off-screen interviewer for one turn,
   then the first person again. ``--aligned``: the same with every source's audio moved to one
   common lag (SAME_LAG_S), as in one real recording. The speaker right in what share of the speech
   seconds, and how many seconds of the off-screen voice were given to someone on screen.
Credit the talking clips' sources when quoting the figures.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import emit


def _face_pass(video: Path, detector):
    from emotion_pipeline import demux
    from emotion_pipeline.faces import FaceTracker
    from emotion_pipeline.records import FaceObservation
    tracker, obs = FaceTracker(), []
    for frame in demux.iter_frames(video, sample_fps=4.0, max_side_px=640):
        boxes = detector.detect(frame.image)
        for box, fid in zip(boxes, tracker.update(frame.t_s, boxes, image=frame.image)):
            obs.append(FaceObservation(frame.t_s, fid, box, np.zeros(7), np.zeros(1)))
    return obs


def _envelope(video: Path) -> np.ndarray:
    from emotion_pipeline import demux
    from emotion_pipeline.speaker import Envelope
    env = Envelope()
    for chunk in demux.iter_audio(video):
        env.push(chunk.samples)
    return env.band()


def distributions(clips: list[Path], detector, reader_factory) -> dict:
    from emotion_pipeline import demux, speaker
    reads = {}
    for clip in clips:
        obs = _face_pass(clip, detector)
        n = int(max(o.t_s for o in obs)) + 1
        reader = reader_factory()
        try:
            reads[clip.stem] = (speaker.read_mouths(demux.iter_frames(clip, sample_fps=speaker.MOUTH_FPS, max_side_px=640),
                                                    obs, set(range(n)), reader), n)
        finally:
            reader.close()
    envs = {clip.stem: _envelope(clip) for clip in clips}
    # the video's lag as the pipeline finds it when that voice's own face is on screen too
    lags = {voice: speaker.video_lag(reads[voice][0], speaker.lag_curves(reads[voice][0], env))
            for voice, env in envs.items()}
    pos, neg = [], []
    for face, (mouths, n) in reads.items():
        for voice, env in envs.items():
            seconds = range(min(n, len(env) // speaker.ENVELOPE_HZ))
            for per_face in speaker.sync_scores(mouths, env, seconds, lag_s=lags[voice]).values():
                (pos if face == voice else neg).extend(per_face.values())
    pos, neg = np.array(pos), np.array(neg)
    return {"speaking": [round(float(pos.mean()), 3), round(float(pos.std()), 3), len(pos)],
            "not_speaking": [round(float(neg.mean()), 3), round(float(neg.std()), 3), len(neg)],
            "auc": round(float((pos[:, None] > neg[None, :]).mean()), 3), "video_lags_s": lags}


# Each talking clip's own audio-to-picture lag (how late its voice comes after its mouth; jawOpen
# against the clip's own voice over -0.4..0.8 s): a built clip mixes sources with different lags, which
# one real recording does not have. ``--aligned`` moves each source's audio to SAME_LAG_S.
SOURCE_LAG_S = {"Obama_clip1": 0.18, "KristiNoem": 0.12, "andrew_clip_1": 0.04, "WDA_KatieHill_000": 0.38,
                "feifeili_clip1": 0.50}
SAME_LAG_S = 0.12
O, N, AN, K, F = "Obama_clip1", "KristiNoem", "andrew_clip_1", "WDA_KatieHill_000", "feifeili_clip1"
# (left, its start s, right, its start s, turn s, turns): the speaker's settings were chosen on CHOSEN_ON
CHOSEN_ON = [(O, 0, N, 0, 6, 3), (N, 0, O, 0, 6, 3), (O, 0, AN, 0, 6, 3), (AN, 0, O, 0, 6, 3), (N, 0, AN, 0, 6, 3),
             (AN, 0, N, 0, 6, 3), (F, 0, K, 0, 4, 2), (K, 0, F, 0, 4, 2), (F, 0, O, 0, 4, 2), (N, 0, K, 0, 4, 2)]
CHOSEN_ON_OFF = [(O, 0, N, 0, AN, 0, 15), (AN, 0, N, 0, O, 0, 15), (O, 0, AN, 0, N, 0, 15), (O, 0, N, 0, F, 0, 10),
                 (N, 0, AN, 0, K, 0, 8)]
# held out: other stretches of the clips, other pairs, other turn lengths
HELD_OUT = [(O, 6, AN, 8, 3, 4), (AN, 10, N, 4, 3, 4), (N, 6, O, 8, 3, 4), (AN, 8, O, 4, 5, 3), (O, 5, N, 3, 5, 3),
            (N, 2, AN, 9, 5, 3), (K, 0, O, 10, 4, 2), (F, 2, AN, 12, 4, 2), (AN, 15, F, 0, 4, 2), (O, 12, K, 0, 4, 2),
            (N, 10, F, 1, 4, 2), (O, 10, N, 8, 2, 4), (AN, 5, K, 0, 2, 4), (AN, 12, O, 10, 2.5, 4)]
# interviews: a and b on screen, a heard, then an off-screen interviewer c for one turn, then a again
# (turn length last). VOICE_SECOND_Z was chosen on INTERVIEW; INTERVIEW_HELD was built after that.
INTERVIEW = [(O, 0, N, 0, AN, 0, 6), (N, 0, AN, 0, O, 0, 6), (AN, 0, O, 0, N, 0, 6), (O, 5, AN, 5, K, 0, 5),
             (N, 3, O, 3, F, 0, 5), (AN, 8, N, 8, O, 10, 4)]
INTERVIEW_HELD = [(O, 3, AN, 3, N, 4, 5), (AN, 10, O, 5, K, 0, 4), (N, 2, AN, 9, O, 6, 5), (O, 6, N, 6, F, 0, 4),
                  (AN, 2, N, 0, O, 2, 6), (K, 0, O, 12, AN, 5, 2.5), (O, 1, K, 0, N, 8, 2.5), (F, 0, AN, 6, O, 8, 3)]
HELD_OUT_OFF = [(AN, 10, O, 5, N, 5, 12), (F, 0, K, 0, O, 10, 8), (N, 5, F, 0, AN, 5, 10), (K, 0, AN, 12, F, 0, 8),
                (O, 8, F, 0, K, 0, 8), (AN, 3, N, 3, O, 3, 15)]


def _audio_in(talking, clip, start, aligned):
    """ffmpeg input args and filter prefix for a source's audio from ``start``, moved to SAME_LAG_S if aligned."""
    s = start + (SOURCE_LAG_S[clip] - SAME_LAG_S if aligned else 0.0)
    if s >= 0:
        return ["-ss", f"{s:.2f}", "-i", str(talking[clip])], ""
    return ["-ss", f"{start}", "-i", str(talking[clip])], f"adelay={int(round(-s * 1000))},"


def build_turns(folder, talking, a, oa, b, ob, turn_s, turns, aligned=False, off_screen=None):
    """a (left, from oa s) and b (right, from ob s), both talking on screen, only one heard at a time:
    a's voice, then b's, in turns; with ``off_screen`` (c, oc), c's voice (not on screen, an
    interviewer) in b's turns instead. Returns the video and its (start, end, "A" | "B" | None)."""
    from conftest import ffmpeg
    import people_clips as pc
    c, oc = off_screen or (b, ob)
    tag = f"_{c}{oc}off" if off_screen else ""
    out = folder / f"turns_{a}{oa}_{b}{ob}{tag}_{turn_s:g}x{turns}{'_aligned' if aligned else ''}.mp4"
    c_on = "+".join(f"between(t,{k * turn_s},{(k + 1) * turn_s})" for k in range(1, turns, 2))
    (ia, fa), (ic, fc) = _audio_in(talking, a, oa, aligned), _audio_in(talking, c, oc, aligned)
    ffmpeg("-ss", str(oa), "-i", str(talking[a]), "-ss", str(ob), "-i", str(talking[b]), *ia, *ic, "-filter_complex",
           f"[0:v]{pc._V}[l];[1:v]{pc._V}[r];[l][r]hstack[v];"
           f"[2:a]{fa}{pc._A},volume='1-({c_on})':eval=frame[a0];[3:a]{fc}{pc._A},volume='{c_on}':eval=frame[a1];"
           "[a0][a1]amix=inputs=2:normalize=0[a]", "-map", "[v]", "-map", "[a]", "-t", str(turn_s * turns), *pc.X264,
           str(out))
    second = None if off_screen else "B"
    return out, [(k * turn_s, (k + 1) * turn_s, "A" if k % 2 == 0 else second) for k in range(turns)]


def build_off_screen(folder, talking, a, oa, b, ob, c, oc, seconds, aligned=False):
    """a and b side by side, both talking on screen; the only voice c's (not on screen)."""
    from conftest import ffmpeg
    import people_clips as pc
    out = folder / f"off_{a}{oa}_{b}{ob}_{c}{oc}{'_aligned' if aligned else ''}.mp4"
    ic, fc = _audio_in(talking, c, oc, aligned)
    ffmpeg("-ss", str(oa), "-i", str(talking[a]), "-ss", str(ob), "-i", str(talking[b]), *ic, "-filter_complex",
           f"[0:v]{pc._V}[l];[1:v]{pc._V}[r];[l][r]hstack[v];[2:a]{fc}{pc._A}[a]", "-map", "[v]", "-map", "[a]",
           "-t", str(seconds), *pc.X264, str(out))
    return out


def _seconds(doc, truth) -> dict:
    """A built clip's speech seconds: those of someone on screen given to them, and those of a voice
    from off screen given to someone on screen."""
    people = _left_right(doc)
    n = dict.fromkeys(("speech_seconds", "right", "off_screen_seconds", "given_to_someone_on_screen"), 0)
    for e in doc["timeline"]:
        if e["audio"] is None:
            continue
        who = next(w for s0, s1, w in truth if s0 <= e["start_s"] < s1)
        if who is None:
            n["off_screen_seconds"] += 1
            n["given_to_someone_on_screen"] += e.get("speaker") is not None
        else:
            n["speech_seconds"] += 1
            n["right"] += e.get("speaker") == people.get(who)
    return n


def _scored(analyzer, clips, folder, talking, aligned, total: str) -> dict:
    """Each clip's _seconds and their sum under ``total``; a clip is (a, oa, b, ob, turn_s, turns) for
    turns, or (a, oa, b, ob, c, oc, turn_s) for an interview (a, then c off screen, then a)."""
    part: dict = {}
    for clip in clips:
        if len(clip) == 6:
            a, oa, b, ob, turn_s, turns = clip
            name, built = f"{a}@{oa} | {b}@{ob} ({turns} turns of {turn_s:g} s)", build_turns(
                folder, talking, a, oa, b, ob, turn_s, turns, aligned)
        else:
            a, oa, b, ob, c, oc, turn_s = clip
            name, built = f"{a}@{oa} | {b}@{ob}, {c}@{oc} off screen ({turn_s:g}-s turns)", build_turns(
                folder, talking, a, oa, b, ob, turn_s, 3, aligned, off_screen=(c, oc))
        part[name] = _seconds(analyzer.analyze(built[0]), built[1])
    part[total] = _total(part.values())
    return part


def _total(rows) -> dict:
    rows = list(rows)
    return {k: sum(r[k] for r in rows) for k in rows[0]}


def built_clips(analyzer, aligned: bool = False) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import people_clips as pc
    folder = Path(tempfile.mkdtemp(prefix="speaker-"))
    talking = {p.stem: p for p in sorted(pc.TALKING.glob("*.mp4"))}
    results = {}
    for split, turn_set, off_set in (("chosen on", CHOSEN_ON, CHOSEN_ON_OFF), ("held out", HELD_OUT, HELD_OUT_OFF)):
        part = _scored(analyzer, turn_set, folder, talking, aligned, "turns, all")
        off = {f"off screen: {c}@{oc}'s voice over {a}@{oa} | {b}@{ob}": _seconds(
            analyzer.analyze(build_off_screen(folder, talking, a, oa, b, ob, c, oc, seconds, aligned)),
            [(0.0, np.inf, None)]) for a, oa, b, ob, c, oc, seconds in off_set}
        part.update(off, **{"off screen, all": _total(off.values())})
        results[split] = part
    results["interviews: chosen on"] = _scored(analyzer, INTERVIEW, folder, talking, aligned, "interviews, all")
    results["interviews: held out"] = _scored(analyzer, INTERVIEW_HELD, folder, talking, aligned, "interviews, all")
    return results


def _left_right(doc) -> dict:
    """{"A": person_id on the left, "B": on the right} from the faces' boxes."""
    xs: dict[int, list[float]] = {}
    for e in doc["timeline"]:
        for f in (e["face"] or {}).get("faces", []):
            xs.setdefault(f["person_id"], []).append(f["box"]["x"])
    order = sorted(xs, key=lambda p: np.mean(xs[p]))
    return {"A": order[0], "B": order[-1]} if len(order) >= 2 else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--clips", action="store_true", help="also the built multi-person clips (slower)")
    parser.add_argument("--aligned", action="store_true", help="with --clips: each source's audio moved to one common "
                                                                 "lag (SAME_LAG_S), as in one real recording")
    args = parser.parse_args()
    from emotion_pipeline.data import data_path
    from emotion_pipeline.faces import FaceDetector
    from emotion_pipeline.models import registry
    from emotion_pipeline.speaker import load_mouth_reader

    detector = FaceDetector(registry.load("yunet", kind="detector", offline=True).path)
    report = {"distributions": distributions(sorted(data_path("video", "talking").glob("*.mp4")), detector,
                                             load_mouth_reader)}
    if args.clips:
        from emotion_pipeline.analyze import Analyzer
        from emotion_pipeline.config import AnalyzeConfig
        report["built_clips"] = built_clips(Analyzer(AnalyzeConfig(whisper_model="none", offline=True, progress=False,
                                                                   face_expression="off")), aligned=args.aligned)
    return emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())

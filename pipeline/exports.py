"""Every output besides the JSON, made from the timeline document (and the video, for mp4/html).

    table_rows(doc, faces=)     the per-second table (one row per second, or per second and face)
    write_csv / write_srt / write_html / plots.plot_timeline / annotate.write_mp4
    write_formats(doc, video, out_json, formats)
                                what ``analyze --formats`` and the Python API call: ``<stem>.<ext>``
                                beside the JSON, each written atomically

The JSON is the record: it names the models, versions and settings behind every number. The CSV
carries its ``settings_key`` in a column; the HTML shows models, software and settings.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from emotion_pipeline.errors import InputError, PipelineError
from emotion_pipeline.fileio import atomic_write_text, csv_cell
from emotion_pipeline.labels import LABELS

log = logging.getLogger(__name__)

FORMATS = ("json", "csv", "png", "mp4", "html", "srt")
SOURCES = ("face", "audio", "text")
# The HTML embeds the video as a data URI up to this size (base64 adds a third; browsers handle
# pages of tens of MB); a larger one is referenced by its path relative to the HTML file.
EMBED_VIDEO_MAX_BYTES = 25 * 1024 * 1024
CHANGE_MOMENTS = 5            # moments of strongest change listed in the report


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """'json,csv' -> ('json', 'csv'); json always comes first (it is the record the others point to)."""
    items = [f.strip().lower().lstrip(".") for f in (text.split(",") if isinstance(text, str) else text)]
    items = [f for f in items if f]
    unknown = [f for f in items if f not in FORMATS]
    if unknown:
        raise PipelineError(f"--formats: unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    return ("json",) + tuple(dict.fromkeys(f for f in items if f != "json"))


def output_paths(out_json: str | Path, formats: Iterable[str]) -> dict[str, Path]:
    out_json = Path(out_json)
    return {f: out_json.with_suffix(f".{f}") for f in formats}


def check_not_source(video: str | Path | None, out_json: str | Path, formats: Iterable[str],
                     inputs: Iterable[str | Path] = ()) -> None:
    """InputError when one of the outputs would replace ``video`` itself (``talk.mp4`` analysed
    into its own folder with ``--formats mp4``; a ``face.png`` input with ``png``) or another of the
    run's ``inputs`` (another video of the batch, the transcript): the user's file is never overwritten."""
    if video is None:
        return
    source = os.path.realpath(video)
    others = {os.path.realpath(p) for p in inputs}
    for fmt, path in output_paths(out_json, ("json", *formats)).items():
        real = os.path.realpath(path)
        if real == source or real in others:
            what = "video" if real == source else "file"
            raise InputError(f"{video}: the {fmt} output {path} would replace the input {what}; choose another --out")


# ------------------------------------------------------------------ the table
def _top(pred: dict[str, Any] | None) -> float | None:
    return None if not pred else max(pred["scores"].values())


def _prediction_columns(prefix: str, pred: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {f"{prefix}_label": pred["label"] if pred else None, f"{prefix}_confidence": _top(pred)}
    out.update({f"{prefix}_{label}": (pred["scores"][label] if pred else None) for label in LABELS})
    return out


def _expression_columns(face: dict[str, Any] | None) -> dict[str, Any]:
    """``expression_frames`` and one ``expression_<blendshape>`` column per MediaPipe blendshape
    (empty where the landmarker did not run or read nothing)."""
    from emotion_pipeline.landmarks import BLENDSHAPES

    shapes = (face or {}).get("expression") or {}
    out: dict[str, Any] = {"expression_frames": (face or {}).get("expression_frames")}
    out.update({f"expression_{name}": shapes.get(name) for name in BLENDSHAPES})
    return out


def _per_person(faces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One face per person of a second (the one seen in most frames when a person has two tracks in
    it); every face where the document has no people (live lines, older documents)."""
    if not all("person_id" in f for f in faces):
        return faces
    best: dict[int, dict[str, Any]] = {}
    for f in faces:
        if f["person_id"] not in best or f["frames"] > best[f["person_id"]]["frames"]:
            best[f["person_id"]] = f
    return list(best.values())


def table_rows(doc: dict[str, Any], *, faces: bool = False) -> list[dict[str, Any]]:
    """One dict per second (``faces=False``: face columns describe the face used for fusion), or
    one per second and person (``faces=True``: every person seen that second, ``face_primary``
    marking the one used for fusion, ``person_fused_*`` that person's own verdict (their face, with
    the voice and words when ``person_speaking``); a second without a face keeps one row with empty
    face columns; a document without people: one per second and face). Scores are probabilities
    0..1; ``weight_<modality>`` the share each modality had in the fused verdict;
    ``expression_<blendshape>`` the face's mean blendshapes that second (0..1) over
    ``expression_frames``; empty (None) where a modality is missing."""
    rows = []
    own = {(p["person_id"], int(t["start_s"])): t for p in doc.get("people") or [] for t in p["timeline"]}
    for entry in doc["timeline"]:
        fused, face, audio, text = (entry.get(k) for k in ("fused", "face", "audio", "text"))
        weights = (fused or {}).get("weights") or {}
        base: dict[str, Any] = {"start_s": entry["start_s"], "end_s": entry["end_s"]}
        base.update(_prediction_columns("fused", fused))
        base.update({"fused_method": fused["method"] if fused else None,
                     "fused_modalities": "+".join(fused["modalities"]) if fused else None})
        base.update({f"weight_{m}": weights.get(m) for m in SOURCES})
        base.update({"face_id": face["face_id"] if face else None, "face_primary": True if face else None,
                     "n_faces": face["n_faces"] if face else 0,
                     "face_frames": next((f["frames"] for f in face["faces"] if f["face_id"] == face["face_id"]), None)
                     if face else None})
        base.update(_prediction_columns("face", face))
        base.update(_expression_columns(next((f for f in face["faces"] if f["face_id"] == face["face_id"]), None)
                                        if face else None))
        base.update(_prediction_columns("audio", audio))
        base["speech_fraction"] = audio["speech_fraction"] if audio else None
        base.update(_prediction_columns("text", text))
        base["words"] = text["words"] if text else None
        base["lost"] = "+".join(entry.get("lost") or []) or None
        base["speaker"] = entry.get("speaker")
        base["voice"] = entry.get("voice")
        base["person_id"] = face.get("person_id") if face else None
        base["person_speaking"] = None
        base.update(_prediction_columns("person_fused", None))
        if not faces or not face:
            rows.append(base)
            continue
        for f in sorted(_per_person(face["faces"]), key=lambda f: (f["face_id"] != face["face_id"], f["face_id"])):
            row = dict(base)
            row.update({"face_id": f["face_id"], "face_primary": f["face_id"] == face["face_id"],
                        "face_frames": f["frames"], "person_id": f.get("person_id")})
            row.update(_prediction_columns("face", f))
            row.update(_expression_columns(f))
            mine = own.get((f.get("person_id"), int(entry["start_s"])))
            if mine is not None:
                row["person_speaking"] = mine["speaking"]
                row.update(_prediction_columns("person_fused", mine["fused"]))
            rows.append(row)
    return rows


def csv_text(doc: dict[str, Any]) -> str:
    rows = table_rows(doc, faces=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) + ["settings_key"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: "" if v is None else csv_cell(v) for k, v in row.items()},
                         "settings_key": csv_cell(doc.get("settings_key", ""))})
    return buf.getvalue()


def write_csv(doc: dict[str, Any], path: str | Path) -> Path:
    """A row per second (per second and face where there are several), every modality's label and
    scores, the fusion weights, and the JSON's ``settings_key``; empty cells where missing. A cell
    that starts like a formula (a word ``=HYPERLINK(...)``, ``@SUM(A1)``) gets a leading ``'``."""
    return atomic_write_text(path, csv_text(doc))


# ------------------------------------------------------------------ summaries shared by SRT and HTML
def span_emotion(doc: dict[str, Any], start_s: float, end_s: float) -> tuple[str, float] | None:
    """(label, mean score) of the fused scores over [start_s, end_s], weighted by overlap with each
    second; None when no second in the span has a fused entry."""
    total, weight = np.zeros(len(LABELS)), 0.0
    for entry in doc["timeline"]:
        overlap = min(end_s, entry["end_s"]) - max(start_s, entry["start_s"])
        if entry.get("fused") and overlap > 0:
            total += overlap * np.array([entry["fused"]["scores"][lab] for lab in LABELS])
            weight += overlap
    if weight <= 0:
        # a span shorter than nothing or between seconds: the second holding its midpoint
        mid = (start_s + end_s) / 2
        hit = next((e for e in doc["timeline"] if e["start_s"] <= mid < e["end_s"] and e.get("fused")), None)
        return (hit["fused"]["label"], max(hit["fused"]["scores"].values())) if hit else None
    mean = total / weight
    return LABELS[int(np.argmax(mean))], float(mean.max())


def emotion_runs(doc: dict[str, Any]) -> list[tuple[float, float, str, float]]:
    """(start_s, end_s, label, mean top score) of each stretch with the same fused label."""
    runs: list[list] = []
    for entry in doc["timeline"]:
        fused = entry.get("fused")
        if not fused:
            continue
        conf = max(fused["scores"].values())
        if runs and runs[-1][2] == fused["label"] and abs(runs[-1][1] - entry["start_s"]) < 1e-6:
            runs[-1][1] = entry["end_s"]
            runs[-1][3].append(conf)
        else:
            runs.append([entry["start_s"], entry["end_s"], fused["label"], [conf]])
    return [(a, b, lab, float(np.mean(c))) for a, b, lab, c in runs]


def label_shares(doc: dict[str, Any]) -> dict[str, float]:
    """Share of the seconds with a fused entry that carry each label (0..1), largest first."""
    counts = {lab: 0 for lab in LABELS}
    for entry in doc["timeline"]:
        if entry.get("fused"):
            counts[entry["fused"]["label"]] += 1
    n = sum(counts.values())
    return dict(sorted(((lab, c / n if n else 0.0) for lab, c in counts.items()), key=lambda kv: -kv[1]))


def strongest_changes(doc: dict[str, Any], k: int = CHANGE_MOMENTS) -> list[dict[str, Any]]:
    """The ``k`` seconds where the fused scores moved most from the second before (total variation
    distance, 0..1), in time order, with the labels before and after and the scores that rose
    and fell most."""
    tl = doc["timeline"]
    moves = []
    for prev, cur in zip(tl, tl[1:]):
        if prev.get("fused") and cur.get("fused"):
            a = np.array([prev["fused"]["scores"][lab] for lab in LABELS])
            b = np.array([cur["fused"]["scores"][lab] for lab in LABELS])
            moves.append({"t_s": cur["start_s"], "change": round(0.5 * float(np.abs(a - b).sum()), 4),
                          "from": prev["fused"]["label"], "to": cur["fused"]["label"],
                          "rose": LABELS[int(np.argmax(b - a))], "fell": LABELS[int(np.argmin(b - a))]})
    top = sorted(moves, key=lambda m: -m["change"])[:k]
    return sorted(top, key=lambda m: m["t_s"])


# ------------------------------------------------------------------ SRT
def _srt_time(t_s: float) -> str:
    ms = int(round(max(0.0, t_s) * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def srt_cues(doc: dict[str, Any]) -> list[tuple[float, float, str]]:
    """(start_s, end_s, text): each transcript segment prefixed with its fused emotion,
    ``[happy 62%] words``; without a transcript, one cue per stretch of one fused label."""
    segments = (doc.get("transcript") or {}).get("segments") or []
    cues = []
    if segments:
        for seg in segments:
            emo = span_emotion(doc, seg["start_s"], seg["end_s"])
            tag = f"[{emo[0]} {emo[1]:.0%}] " if emo else "[no emotion] "
            cues.append((seg["start_s"], seg["end_s"], tag + " ".join(seg["text"].split())))
    else:
        cues = [(a, b, f"[{lab} {conf:.0%}]") for a, b, lab, conf in emotion_runs(doc)]
    return cues


def srt_text(doc: dict[str, Any]) -> str:
    return "".join(f"{i}\n{_srt_time(a)} --> {_srt_time(max(b, a + 0.001))}\n{text}\n\n"
                   for i, (a, b, text) in enumerate(srt_cues(doc), 1))


def write_srt(doc: dict[str, Any], path: str | Path) -> Path:
    return atomic_write_text(path, srt_text(doc))


# ------------------------------------------------------------------ HTML
VIDEO_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/mp4", ".webm": "video/webm",
              ".ogv": "video/ogg", ".mkv": "video/x-matroska",
              ".wav": "audio/wav", ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".flac": "audio/flac",
              ".ogg": "audio/ogg", ".aac": "audio/aac"}

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.35em;margin-bottom:.2em} h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em} .grid{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}
video{max-width:480px;width:100%;background:#000} img.plot{width:100%;border:1px solid #eee}
table{border-collapse:collapse;font-size:.92em} td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:left}
.chip{display:inline-block;padding:0 .45em;border-radius:.6em;color:#111;font-size:.9em}
.bar{display:inline-block;height:.8em;vertical-align:middle} a.t{cursor:pointer;color:#246;text-decoration:underline}
.warn{color:#a40} pre{white-space:pre-wrap;font-size:.8em;background:#f7f7f7;padding:.6em}
"""

# Seeks the video when a time is clicked, and says when the video or the plot cannot be loaded
# (moved, or a codec the browser lacks). <body> carries the state for anyone checking the page:
# data-video-state loading | playable | error | none, data-plot-state loaded | error, and
# data-errors (script errors, empty when none).
_JS = """
(function(){
  var v=document.getElementById('video'), b=document.body, note=document.getElementById('video-note');
  b.dataset.errors='';
  window.addEventListener('error', function(ev){ b.dataset.errors += (ev.message || 'error') + ';'; });
  var img=document.getElementById('plot');
  function plotOk(){ b.dataset.plotState = img.naturalWidth > 0 ? 'loaded' : 'error'; }
  if(img){ if(img.complete){ plotOk(); } img.addEventListener('load', plotOk);
    img.addEventListener('error', function(){ b.dataset.plotState='error'; }); }
  function seek(t){ if(v){ v.currentTime=t; v.play && v.play().catch(function(){}); } }
  document.querySelectorAll('a.t').forEach(function(a){
    a.addEventListener('click', function(){ seek(parseFloat(a.dataset.t)); }); });
  if(!v){ b.dataset.videoState='none'; return; }
  b.dataset.videoState='loading';
  function ok(){ b.dataset.videoState='playable'; b.dataset.videoDuration=String(v.duration); }
  function bad(){ b.dataset.videoState='error';
    if(note) note.textContent='The video could not be loaded here (file moved, or a codec this browser does not play).'; }
  if(v.readyState>=2){ ok(); }
  v.addEventListener('loadeddata', ok); v.addEventListener('canplay', ok); v.addEventListener('error', bad);
  var s=v.querySelector('source'); if(s){ s.addEventListener('error', bad); }
})();
"""


def span_speaker(doc: dict[str, Any], start_s: float, end_s: float) -> str:
    """Who speaks most of [start_s, end_s], in words: "P<person_id>" (with its voice where voices were
    told apart), "voice <n>, off screen", or "" where the seconds say nothing (one overlap-weighted
    vote per second that has a speaker or a voice)."""
    votes: dict[tuple, float] = {}
    for entry in doc["timeline"]:
        overlap = min(end_s, entry["end_s"]) - max(start_s, entry["start_s"])
        if overlap > 0 and (entry.get("speaker") is not None or entry.get("voice") is not None):
            key = (entry.get("speaker"), entry.get("voice"))
            votes[key] = votes.get(key, 0.0) + overlap
    if not votes:
        return ""
    person, voice = max(votes, key=votes.get)
    if person is None:
        return f"voice {voice}, off screen"
    return f"P{person}" + (f" (voice {voice})" if voice is not None else "")


def _people_html(doc: dict[str, Any]) -> list[str]:
    """The People table: per person, seconds on screen and speaking, the voices they speak, their own
    most frequent fused label; voices heard with nobody on screen speaking them."""
    e = html.escape
    people = doc.get("people") or []
    if len(people) < 2:
        return []
    speaking_voices: dict[int, set[int]] = {}
    off: dict[int, int] = {}
    for entry in doc["timeline"]:
        v = entry.get("voice")
        if v is None:
            continue
        if entry.get("speaker") is not None:
            speaking_voices.setdefault(entry["speaker"], set()).add(v)
        else:
            off[v] = off.get(v, 0) + 1
    rows = ["<h2>People</h2><p class='meta'>who speaks: each person's mouth read against the voice; "
            "voices told apart by speaker embeddings (numbered as first heard)</p><table><tr><th>person</th>"
            "<th>on screen</th><th>speaking</th><th>voices</th><th>most often</th></tr>"]
    for p in people:
        labels = [t["fused"]["label"] for t in p["timeline"] if t.get("fused")]
        top = max(set(labels), key=labels.count) if labels else None
        voices = ", ".join(str(v) for v in sorted(speaking_voices.get(p["person_id"], ()))) or "-"
        rows.append(f"<tr><td>P{p['person_id']}</td><td>{p['seconds_on_screen']} s</td><td>{p['seconds_speaking']} s</td>"
                    f"<td>{e(voices)}</td><td>{_chip(top)}</td></tr>")
    for v, n in sorted(off.items()):
        rows.append(f"<tr><td>voice {v}, off screen (or not matched to a face)</td><td>-</td><td>{n} s</td>"
                    f"<td>{v}</td><td></td></tr>")
    rows.append("</table>")
    return rows


def _chip(label: str | None, text: str | None = None) -> str:
    from emotion_pipeline.plots import LABEL_COLOUR
    if label is None:
        return '<span class="chip" style="background:#eee">none</span>'
    return f'<span class="chip" style="background:{LABEL_COLOUR[label]}">{html.escape(text or label)}</span>'


def _clock(t_s: float) -> str:
    t = int(t_s)
    return f"{t // 60}:{t % 60:02d}" if t < 3600 else f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}"


def _video_tag(video: Path | None, html_path: Path) -> tuple[str, str]:
    """(<video> element, how it is included: 'embedded' | 'referenced' | 'none')."""
    if video is None or not Path(video).is_file():
        return '<p class="warn">The video file is not available.</p>', "none"
    video = Path(video)
    mime = VIDEO_MIME.get(video.suffix.lower(), "video/mp4")
    size = video.stat().st_size
    if size <= EMBED_VIDEO_MAX_BYTES:
        src, how = f"data:{mime};base64,{base64.b64encode(video.read_bytes()).decode('ascii')}", "embedded"
    else:
        rel = os.path.relpath(os.path.abspath(video), os.path.abspath(html_path.parent))
        # a relative URL: each part percent-encoded (``talk #1 100%.mp4`` is not a fragment or an escape)
        src, how = "/".join(urllib.parse.quote(part) for part in Path(rel).parts), "referenced"
    tag = (f'<video id="video" controls preload="auto"><source src="{html.escape(src, quote=True)}" '
           f'type="{mime}"></video><div id="video-note" class="warn"></div>')
    return tag, how


def html_text(doc: dict[str, Any], html_path: str | Path, video: str | Path | None = None) -> str:
    """The self-contained report: summary, plot (inline PNG), video (embedded when at most
    EMBED_VIDEO_MAX_BYTES, else referenced relative to the HTML), the people and who speaks (with
    several people), transcript with each segment's emotion (and speaker), per-modality status, and the models/software/settings behind it. No network."""
    from emotion_pipeline.plots import figure_bytes

    html_path = Path(html_path)
    name = Path(doc["video"]["path"]).name
    png = base64.b64encode(figure_bytes(doc, "png")).decode("ascii")
    video_tag, how = _video_tag(Path(video) if video else None, html_path)
    shares = label_shares(doc)
    dominant = doc["summary"].get("dominant_label")
    e = html.escape

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(name)}: emotion timeline</title>",
             f"<style>{_CSS}</style></head><body data-video-state='loading'>",
             f"<h1>{e(name)}</h1><div class='meta'>{doc['video']['duration_s']:.1f} s, "
             f"{doc['video'].get('width')}×{doc['video'].get('height')}, made {e(doc.get('created_utc', ''))} by "
             f"emotion-pipeline {e(str(doc.get('software', {}).get('pipeline', '')))}; video {how}</div>"]
    if doc.get("warnings"):
        parts.append("<p class='warn'>Partial result: " + e("; ".join(doc["warnings"])) + "</p>")
    parts.append("<div class='grid'><div>" + video_tag + "</div><div><h2 style='margin-top:0'>Summary</h2>")
    parts.append(f"<p>Dominant emotion: {_chip(dominant)}</p><table><tr><th>emotion</th><th>share of time</th></tr>")
    from emotion_pipeline.plots import LABEL_COLOUR
    for lab, share in shares.items():
        if share > 0:
            parts.append(f"<tr><td>{_chip(lab)}</td><td><span class='bar' style='width:{share * 160:.0f}px;"
                         f"background:{LABEL_COLOUR[lab]}'></span> {share:.0%}</td></tr>")
    parts.append("</table><h3>Moments of strongest change</h3><table><tr><th>time</th><th>change</th><th>label</th><th>scores</th></tr>")
    for m in strongest_changes(doc):
        parts.append(f"<tr><td><a class='t' data-t='{m['t_s']}'>{_clock(m['t_s'])}</a></td><td>{m['change']:.2f}</td>"
                     f"<td>{_chip(m['from'])} → {_chip(m['to'])}</td>"
                     f"<td class='meta'>{e(m['rose'])} ↑ {e(m['fell'])} ↓</td></tr>")
    parts.append("</table><h3>Modalities</h3><table>")
    for mod, st in doc.get("modalities", {}).items():
        parts.append(f"<tr><td>{e(mod)}</td><td>{e(st['status'])}</td><td>{e(st.get('reason') or '')}</td></tr>")
    parts.append("</table></div></div>")
    parts.append(f"<h2>Timeline</h2><img class='plot' id='plot' alt='emotion timeline' src='data:image/png;base64,{png}'>")

    people_rows = _people_html(doc)
    parts.extend(people_rows)
    many = bool(people_rows)    # several people: each transcript line says who speaks it
    parts.append("<h2>Transcript</h2>")
    segments = (doc.get("transcript") or {}).get("segments") or []
    if segments:
        parts.append(f"<p class='meta'>source: {e(doc['transcript']['source'])}, language "
                     f"{e(str(doc['transcript'].get('language')))}; each line's emotion is the fused scores "
                     f"averaged over its span</p><table><tr><th>time</th><th>emotion</th>"
                     + ("<th>who</th>" if many else "") + "<th>words</th></tr>")
        for seg in segments:
            emo = span_emotion(doc, seg["start_s"], seg["end_s"])
            chip = _chip(emo[0], f"{emo[0]} {emo[1]:.0%}") if emo else _chip(None)
            who = f"<td>{e(span_speaker(doc, seg['start_s'], seg['end_s']))}</td>" if many else ""
            parts.append(f"<tr><td><a class='t' data-t='{seg['start_s']}'>{_clock(seg['start_s'])}</a></td>"
                         f"<td>{chip}</td>{who}<td>{e(seg['text'].strip())}</td></tr>")
        parts.append("</table>")
    else:
        reason = doc.get("modalities", {}).get("text", {}).get("reason")
        parts.append(f"<p class='meta'>No transcript{': ' + e(reason) if reason else ''}.</p>")

    models = {k: {kk: v[kk] for kk in ("name", "version", "method", "tta", "sha256") if v and kk in v}
              for k, v in doc.get("models", {}).items()}
    parts.append("<h2>How it was made</h2><details><summary>models, software and settings</summary><pre>"
                 + e(json.dumps({"models": models, "software": doc.get("software"), "config": doc.get("config"),
                                 "settings_key": doc.get("settings_key")}, indent=1)) + "</pre></details>")
    parts.append(f"<script>{_JS}</script></body></html>\n")
    return "".join(parts)


def write_html(doc: dict[str, Any], path: str | Path, video: str | Path | None = None) -> Path:
    return atomic_write_text(path, html_text(doc, path, video))


# ------------------------------------------------------------------ all of them
def write_formats(doc: dict[str, Any], video: str | Path | None, out_json: str | Path, formats: Iterable[str], *,
                  detector=None, blur_faces: bool = False) -> dict[str, Path]:
    """Write ``<stem>.<ext>`` beside ``out_json`` for every format but json (the caller writes
    that); returns {format: path}. The HTML plays the annotated MP4 when one is made, else the
    source video. ``detector``: the run's face detector, reused for the MP4's boxes; ``blur_faces``:
    the MP4 shows every face blurred (pipeline/annotate.py). An output that
    would replace ``video`` is refused (InputError); a failure removes the files this call made.
    The caller vouches for ``video``: it is embedded in the HTML (Result.load checks a recorded one)."""
    from emotion_pipeline import plots

    check_not_source(video, out_json, formats)
    paths = output_paths(out_json, formats)
    written: dict[str, Path] = {}
    try:
        if "csv" in paths:
            written["csv"] = write_csv(doc, paths["csv"])
        if "srt" in paths:
            written["srt"] = write_srt(doc, paths["srt"])
        if "png" in paths:
            written["png"] = plots.plot_timeline(doc, paths["png"])
        if "mp4" in paths:
            from emotion_pipeline import annotate
            if not doc["video"].get("has_video", True) or doc["video"].get("width") is None:
                log.warning("%s: no video stream; no annotated mp4 made", video)
            else:
                written["mp4"] = annotate.write_mp4(doc, video, paths["mp4"], detector=detector, blur_faces=blur_faces)
        if "html" in paths:
            written["html"] = write_html(doc, paths["html"], written.get("mp4") or video)
    except BaseException:   # all or none: a full disk half-way leaves none of this call's files
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    return written


def missing_formats(out_json: str | Path, formats: Iterable[str]) -> tuple[str, ...]:
    """Formats whose file is absent or older than the JSON beside it (to be made from that JSON)."""
    out_json = Path(out_json)
    t = out_json.stat().st_mtime_ns if out_json.exists() else None
    return tuple(f for f, p in output_paths(out_json, formats).items()
                 if f != "json" and (not p.exists() or t is None or p.stat().st_mtime_ns < t))


def complete_existing(video: str | Path, out_json: str | Path, formats: Iterable[str], *,
                      blur_faces: bool = False) -> dict[str, Path]:
    """Make the requested formats that are missing beside an up-to-date JSON, from that JSON
    (no analysis, no model but the face detector for the MP4). With ``blur_faces`` the MP4 is made
    again even when there is one (it may show the faces)."""
    formats = tuple(formats)
    todo = missing_formats(out_json, formats)
    if blur_faces and "mp4" in formats and "mp4" not in todo:
        todo = (*todo, "mp4")
    if not todo:
        return {}
    try:
        doc = json.loads(Path(out_json).read_text())
    except (OSError, ValueError) as e:
        raise PipelineError(f"{out_json}: cannot read the timeline ({e})") from e
    return write_formats(doc, video, out_json, todo, blur_faces=blur_faces)

"""Command line: ``python -m emotion_pipeline {analyze,evaluate,train,models} ...``.

Failures print one line ``error: <file>: <problem>``, no traceback (``-v`` logs it), and never leave
a half-written output. In a batch a failing video never stops the others. Exit codes of ``analyze``:
0 every result complete (or up to date), 1 at least one video failed, 2 bad command line or
settings (nothing analysed), 3 every video analysed but at least one result is partial (a damaged
or truncated input; its JSON says what was lost; ``--strict`` makes that a failure instead).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from emotion_pipeline.batch import expected_errors
from emotion_pipeline.errors import InputError, PipelineError

log = logging.getLogger("emotion_pipeline")

MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                  ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".aac", ".jpg", ".jpeg", ".png",
                  ".ts", ".mts", ".m2ts", ".mxf", ".ogv"}
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "analyze.yaml"


def _analysis_config(args: argparse.Namespace, *, progress: bool):
    """The analysis settings of ``analyze`` and ``live``: the config file (or the default one),
    ``--set`` overrides, ``--offline``; checked, device included, before anything loads."""
    from emotion_pipeline import config, preflight

    overrides = list(args.set or [])
    if args.offline:
        overrides.append("offline=true")
    if not progress:
        overrides.append("progress=false")
    cfg_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    cfg = config.load(config.AnalyzeConfig, cfg_path, overrides)
    preflight.check_device(cfg.device)
    return cfg


def collect_videos(paths: list[str], manifests: list[str] = ()) -> list[tuple[Path, Path]]:
    """(video, the folder its output path is relative to). Files as given (their own folder);
    folders expanded to the media files inside them, recursively, sorted (the folder given);
    glob patterns (``'talks/**/*.mp4'``, quoted so the shell leaves them) expanded (the folder
    before the first wildcard); manifests read (one path per line, or a CSV ``path`` column)."""
    import glob

    from emotion_pipeline.batch import read_manifest

    out: list[tuple[Path, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES)
            if not found:
                log.warning("%s: folder holds no media files", p)
            out.extend((f, p) for f in found)
        elif not p.exists() and glob.has_magic(str(p)):
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
            if not found:
                log.warning("%s: no file matches", p)
            base = Path(*[part for part in p.parts[:next(i for i, x in enumerate(p.parts) if glob.has_magic(x))]] or ["."])
            out.extend((f, base) for f in found)
        else:
            out.append((p, p.parent))  # a missing file is reported by the run, with the others
    for m in manifests:   # structure kept relative to the manifest's folder
        out.extend((v, Path(m).parent if Path(os.path.abspath(v)).is_relative_to(os.path.abspath(Path(m).parent))
                    else v.parent) for v in read_manifest(m))
    return out


EXIT_FAILED = 1        # at least one video could not be analysed (each has its `error:` line)
EXIT_USAGE = 2         # bad command line or settings: nothing was analysed
EXIT_PARTIAL = 3       # every video has a result, but at least one is partial (damaged or cut short)


def cmd_analyze(args: argparse.Namespace) -> int:
    from emotion_pipeline import batch, exports, preflight

    # no bars in logs, pipes or with --quiet
    cfg = _analysis_config(args, progress=not (args.no_progress or args.quiet or not sys.stderr.isatty()))
    formats = exports.parse_formats(args.formats) + (("png",) if args.plot else ())
    if args.jobs < 1:
        raise PipelineError(f"--jobs {args.jobs}: must be at least 1")
    shard = batch.parse_shard(args.shard) if args.shard else None
    found = collect_videos(args.videos, args.manifest or [])
    videos = list({str(Path(v).absolute()): (v, base) for v, base in reversed(found)}.values())[::-1]
    if not videos:
        raise PipelineError("no videos to analyse")
    if args.transcript and len(videos) > 1:
        raise PipelineError("--transcript applies to one video; give one video with it")
    if args.transcript:
        preflight.load_transcript(args.transcript)   # a bad transcript fails now, not after the analysis
        cfg = dataclasses.replace(cfg, whisper_model="none")   # the words are given: no ASR model to load
    settings = preflight.settings_key(cfg, args.transcript)
    options = batch.Options(transcript=args.transcript, strict=args.strict, formats=tuple(dict.fromkeys(formats)))

    # Before any model loads: where each result goes, whether it can be written, whether it is up to date.
    jobs = batch.shard_of(preflight.plan(videos, args.out), shard)
    early: dict[int, batch.Outcome] = {}
    todo: list[tuple[int, preflight.Job]] = []
    writable: set[Path] = set()
    for k, job in enumerate(jobs):
        existing = preflight.existing_result(job)
        try:
            preflight.check_output(job, writable)
            if not job.video.exists():
                raise InputError(f"{job.video}: no such file")
            preflight.check_owner(job, existing, force=args.force)
        except PipelineError as e:
            early[k] = batch.failed(job, batch.one_line(job.video, e))
            print(f"error: {early[k].message}", file=sys.stderr)
            continue
        if not args.force and preflight.up_to_date(job, existing, settings):
            log.info("%s: up to date (same file, settings and models), skipped", job.out)
            early[k] = batch.skipped(job, existing)
            try:   # formats asked for now but not made then: from the JSON, without analysing again
                for fmt, path in exports.complete_existing(job.video, job.out, formats).items():
                    log.info("%s: made %s from the up-to-date timeline", job.out, path)
            except Exception as e:
                early[k] = batch.failed(job, batch.one_line(job.video, e))
                print(f"error: {early[k].message}", file=sys.stderr)
            continue
        todo.append((k, job))

    run_jobs = [job for _, job in todo]
    if args.engine == "ray":
        stream = batch.run_ray(cfg, run_jobs, options, args.jobs, address=args.ray_address,
                               gpus_per_worker=args.gpus_per_worker)
    elif args.jobs > 1 and len(run_jobs) > 1:
        stream = batch.run_processes(cfg, run_jobs, options, min(args.jobs, len(run_jobs)), progress=cfg.progress)
    else:
        stream = batch.run_serial(cfg, run_jobs, options, progress=cfg.progress)
    outcomes = dict(early)
    for (k, job), outcome in zip(todo, stream):
        outcomes[k] = outcome
        if outcome.status == "failed":
            print(f"error: {outcome.message}", file=sys.stderr)
        elif outcome.status == "partial":
            print(f"warning: {job.video}: {outcome.message}", file=sys.stderr)
        if outcome.status in ("ok", "partial"):
            log.info("%s -> %s (%.0f s, fused: %s)", job.video, job.out, outcome.duration_s or 0, outcome.fused)
    rows = [outcomes[k] for k in sorted(outcomes)]
    counts = {s: sum(o.status == s for o in rows) for s in ("ok", "partial", "skipped", "failed")}
    if len(jobs) > 1 or shard:
        path = batch.write_summary(batch.summary_path(args.out, shard), rows)
        log.info("analysed %d (%d partial), skipped %d up to date, failed %d; summary: %s",
                 counts["ok"] + counts["partial"], counts["partial"], counts["skipped"], counts["failed"], path)
    if counts["failed"]:
        return EXIT_FAILED
    return EXIT_PARTIAL if counts["partial"] else 0


def cmd_live(args: argparse.Namespace) -> int:
    from emotion_pipeline import live, preflight

    cfg = _analysis_config(args, progress=False)
    if not 0.5 <= args.max_delay_s <= 60:
        raise PipelineError(f"--max-delay-s {args.max_delay_s}: must be 0.5..60 seconds")
    stem = Path(args.source).stem if Path(args.source).exists() else "live"
    timeline = Path(args.out) / f"{stem}.live.json"
    preflight.check_output(preflight.Job(Path(args.source), timeline))
    options = live.LiveOptions(max_delay_s=args.max_delay_s, realtime=args.realtime, max_seconds=args.max_seconds,
                               show=args.show)
    from emotion_pipeline.analyze import Analyzer
    analyzer = Analyzer(cfg)
    lines = open(args.lines, "w", encoding="utf-8") if args.lines else sys.stdout
    try:
        doc = live.run(analyzer, args.source, options, lines, timeline)
    finally:
        if args.lines:
            lines.close()
    log.info("%s: %d s analysed live (latency median %s s, max %s s; %d seconds shed work) -> %s", args.source,
             doc["live"]["seconds"], doc["live"]["latency_s"]["median"], doc["live"]["latency_s"]["max"],
             doc["live"]["shed_seconds"], timeline)
    if doc["live"]["stopped"] in ("end of stream", "interrupted"):
        return 0
    print(f"error: {args.source}: {doc['live']['stopped']}", file=sys.stderr)   # what was seen is still written
    return EXIT_FAILED


def cmd_evaluate(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"emotion_pipeline.evaluate.{args.modality}")
    kwargs = {"device": args.device}
    if args.model:
        kwargs["model"] = args.model
    if args.modality == "clips":
        kwargs["adapter"] = args.adapter
        kwargs["whisper"] = args.whisper
    if args.tta:
        if args.modality != "face":
            raise PipelineError("--tta applies to the face model only")
        kwargs["tta"] = args.tta
    if getattr(args, "votes", None):
        if args.modality != "face":
            raise PipelineError("--votes applies to the face model only")
        kwargs["votes"] = args.votes
    try:
        result = module.run(Path(args.data), **kwargs)
    except ValueError as e:
        raise PipelineError(str(e)) from e
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from emotion_pipeline import predict

    try:
        predict.run(args.modality, args.data, args.out, model=args.model, device=args.device, tta=args.tta)
    except ValueError as e:
        raise PipelineError(str(e)) from e
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from emotion_pipeline import train

    task, path = (args.task, args.config) if args.config else (None, args.task)
    train.main(task, path, args.set or [], resume=args.resume,
               command=shlex.join(["python", "-m", "emotion_pipeline", *args.argv]))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from emotion_pipeline.models import fetch
    return fetch.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emotion_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="per-second emotion timeline of videos (files or folders)")
    a.add_argument("videos", nargs="+", help="video files or folders of videos")
    a.add_argument("--out", default="out", help="output folder: OUT/<input folders>/<video stem>.json (default: out)")
    a.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG.name})")
    a.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    a.add_argument("--transcript", help="subtitle/transcript file (.srt, .vtt, .json) used instead of Whisper")
    a.add_argument("--offline", action="store_true", help="never touch the network")
    a.add_argument("--force", action="store_true", help="re-analyse even when an up-to-date output exists")
    a.add_argument("--no-progress", action="store_true", help="no progress bars")
    a.add_argument("--plot", action="store_true", help="also draw OUT/<stem>.png (same as adding png to --formats)")
    a.add_argument("--formats", default="json", metavar="LIST",
                   help="outputs beside each JSON, comma-separated: json,csv,png,mp4,html,srt (default: json; "
                        "the JSON is always written)")
    a.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors; no progress bars")
    a.add_argument("--manifest", action="append", metavar="FILE",
                   help="a list of videos: one path per line, or a CSV with a 'path' column (repeatable)")
    a.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="worker processes on this machine, each loading the models once (threads: cores / N)")
    a.add_argument("--shard", metavar="I/N", help="analyse only shard I of N (for array jobs on a cluster scheduler)")
    a.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (this machine, --jobs processes) or ray (Ray Data actors; needs the 'ray' extra)")
    a.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS, else start a local one)")
    a.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per actor (e.g. 0.25)")
    a.add_argument("--strict", action="store_true",
                   help="a partial result (damaged or truncated input) is a failure: no output, exit 1")
    a.set_defaults(func=cmd_analyze)

    lv = sub.add_parser("live", help="a stream, webcam, pipe or file (--realtime) analysed second by second; JSON lines")
    lv.add_argument("--source", required=True,
                    help="webcam index (0), '-' for stdin, a file, or a URL FFmpeg opens (rtsp://, http://, .m3u8)")
    lv.add_argument("--realtime", action="store_true", help="play a file at its own speed, as if it were live")
    lv.add_argument("--max-delay-s", type=float, default=2.0,
                    help="bound on a line's delay after its second ends; work is shed to keep it (default 2)")
    lv.add_argument("--max-seconds", type=float, help="stop after this many seconds of stream")
    lv.add_argument("--show", action="store_true",
                    help="a window with the picture, face boxes, labels and the fused strip (where a display exists)")
    lv.add_argument("--lines", help="write the JSON lines to this file (default: stdout)")
    lv.add_argument("--out", default="out", help="folder for the full timeline at the end: OUT/<name>.live.json")
    lv.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG.name})")
    lv.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    lv.add_argument("--offline", action="store_true", help="never touch the network")
    lv.set_defaults(func=cmd_live)

    e = sub.add_parser("evaluate", help="accuracy of one modality's model on a labelled set; prints JSON")
    e.add_argument("modality", choices=["face", "audio", "text", "clips", "asr"])
    e.add_argument("--data", required=True, help="face: FER2013-format .npz; audio: RAVDESS-named folder or "
                                                 "path,label CSV; text: MELD CSV, GoEmotions TSV or dair-ai file; "
                                                 "clips: labelled video clips (see --adapter)")
    e.add_argument("--adapter", default="mead", choices=["mead", "ravdess", "meld", "csv"],
                   help="clips only: how labels are read (file names or a path,label CSV)")
    e.add_argument("--whisper", default="auto", help="clips only: whisper_model setting (none: no words)")
    e.add_argument("--model", help="registry name or weights file (default: the shipped model)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--tta", choices=["flip", "crops10"], help="face only: test-time augmentation")
    e.add_argument("--votes", help="face only: FER+ votes .npz row-aligned to --data (default: "
                                   "ferplus_votes_<split>.npz beside it when present; 'none': skip)")
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="one model's predictions for a dataset file: a CSV row per input")
    p.add_argument("modality", choices=["face", "audio", "text"])
    p.add_argument("--data", required=True, help="any file or folder `evaluate` reads for this modality")
    p.add_argument("--out", default="predictions.csv", help="CSV: id, true_label, label, 7 scores, model")
    p.add_argument("--model", help="registry name or weights file (default: the shipped model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tta", default="flip", choices=["flip", "crops10", "none"],
                   help="face only: test-time augmentation (default flip, as the pipeline)")
    p.set_defaults(func=cmd_predict)

    t = sub.add_parser("train", help="train a model (face, audio, text, fusion) from a YAML config",
                       epilog="e.g. train configs/fusion_tiny.yaml; train face configs/face_ferplus.yaml --set epochs=1")
    t.add_argument("task", metavar="[TASK] CONFIG",
                   help="face | audio | text | fusion, optional when the config has a task: key")
    t.add_argument("config", nargs="?", help=argparse.SUPPRESS)
    t.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("models", help="list models, or fetch the hub ones into the cache")
    m.add_argument("action", choices=["list", "fetch"])
    m.add_argument("--profile", default="default", choices=["default", "full"])
    m.add_argument("--whisper", default="", help="extra Whisper models to fetch (faster-whisper sizes, org/repo, or openai:<size>), comma-separated")
    m.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # recorded by training runs
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("numba", "matplotlib", "urllib3", "httpx", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except expected_errors() as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an environment problem: still one line; -v shows the traceback
        log.debug("unexpected error", exc_info=True)
        first = (getattr(e, "message", None) or str(e)).strip().splitlines()
        print(f"error: {type(e).__name__}: {first[0][:300] if first else ''} (run with -v for details)", file=sys.stderr)
        return EXIT_FAILED

"""Command line: ``python -m emotion_pipeline {analyze,evaluate,train,models} ...``.

Failures print one line ``error: <file>: <problem>``, no traceback (``-v`` logs it), and never leave
a half-written output. In a batch a failing video never stops the others. Exit codes of ``analyze``:
0 every result complete (or up to date), 1 at least one video failed, 2 bad command line or
settings (nothing analysed), 3 every video analysed but at least one result is partial (a damaged
or truncated input; its JSON says what was lost; ``--strict`` makes that a failure instead).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import signal
import sys
import threading
from pathlib import Path

from emotion_pipeline.errors import (ConfigError, PipelineError, Terminated, expected_errors, printable,
                                     terminate_on_sigterm)

log = logging.getLogger("emotion_pipeline")

EXIT_FAILED = 1        # at least one video could not be analysed (each has its `error:` line)
EXIT_USAGE = 2         # bad command line or settings: nothing was analysed
EXIT_PARTIAL = 3       # every video has a result, but at least one is partial (damaged or cut short)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_TERMINATED = 143   # SIGTERM (128 + 15)
DEFAULTS_NOTE = "the built-in defaults, listed in configs/analyze.yaml"


def _analysis_config(args: argparse.Namespace, *, progress: bool):
    """The analysis settings of ``analyze`` and ``live`` (``jobs.analysis_config``, as the API):
    the config file or the built-in defaults, ``--set`` overrides, ``--offline``; checked, device
    included, before anything loads."""
    from emotion_pipeline import jobs, preflight

    overrides = list(args.set or [])
    if args.offline:
        overrides.append("offline=true")
    if not progress:
        overrides.append("progress=false")
    cfg = jobs.analysis_config(args.config, overrides)
    preflight.check_device(cfg.device)
    return cfg


def _error(message: str) -> None:
    print(f"error: {printable(message)}", file=sys.stderr)


def cmd_analyze(args: argparse.Namespace) -> int:
    from emotion_pipeline import batch, exports, jobs

    # no bars in logs, pipes or with --quiet
    cfg = _analysis_config(args, progress=not (args.no_progress or args.quiet or not sys.stderr.isatty()))
    formats = exports.parse_formats(args.formats) + (("png",) if args.plot else ())
    if args.jobs < 1:
        raise PipelineError(f"--jobs {args.jobs}: must be at least 1")
    if not args.videos and not args.manifest:
        raise PipelineError("nothing to analyse: give video files, folders, glob patterns or --manifest FILE")
    shard = batch.parse_shard(args.shard) if args.shard else None
    request = jobs.Request(Path(args.out), tuple(dict.fromkeys(formats)), args.transcript, force=args.force,
                           strict=args.strict, shard=shard, blur_faces=args.blur_faces)
    # Before any model loads: where each result goes, whether it can be written, whether it is up to date.
    prepared = jobs.prepare(jobs.collect(args.videos, args.manifest or [], args.out), cfg, request)
    for k in sorted(prepared.early):
        if prepared.early[k].failed:
            _error(prepared.early[k].message)
    cfg, options = prepared.cfg, prepared.options
    run_jobs = [job for _, job in prepared.todo]
    if args.engine == "ray":
        stream = batch.run_ray(cfg, run_jobs, options, args.jobs, address=args.ray_address,
                               gpus_per_worker=args.gpus_per_worker)
    elif args.jobs > 1 and len(run_jobs) > 1:
        stream = batch.run_processes(cfg, run_jobs, options, min(args.jobs, len(run_jobs)), progress=cfg.progress)
    else:
        stream = batch.run_serial(cfg, run_jobs, options, progress=cfg.progress)
    outcomes = dict(prepared.early)
    for (k, job), outcome in zip(prepared.todo, stream, strict=True):   # (strict: the engine runs to its end)
        outcomes[k] = outcome
        if outcome.status == "failed":
            _error(outcome.message)
        elif outcome.status == "partial":
            print(f"warning: {printable(str(job.video))}: {outcome.message}", file=sys.stderr)
        if outcome.status in ("ok", "partial"):
            log.info("%s -> %s (%.0f s, fused: %s)", job.video, job.out, outcome.duration_s or 0, outcome.fused)
    rows = [outcomes[k] for k in sorted(outcomes)]
    counts = jobs.counts(rows)
    if len(prepared.jobs) > 1 or shard:
        path = batch.write_summary(batch.summary_path(args.out, shard), rows)
        log.info("analysed %d (%d partial), skipped %d up to date, failed %d; summary: %s",
                 counts["ok"] + counts["partial"], counts["partial"], counts["skipped"], counts["failed"], path)
    if counts["failed"]:
        return EXIT_FAILED
    return EXIT_PARTIAL if counts["partial"] else 0


def cmd_live(args: argparse.Namespace) -> int:
    from emotion_pipeline import live, preflight

    cfg = _analysis_config(args, progress=False)
    if args.max_seconds is not None and not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise PipelineError(f"--max-seconds {args.max_seconds}: must be a number of seconds above 0")
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
    stopped = doc["live"]["stopped"]
    if stopped == "terminated":   # SIGTERM: the timeline so far is written, as for Ctrl-C
        _error(f"{args.source}: terminated; the timeline so far: {timeline}")
        return EXIT_TERMINATED
    if stopped in ("end of stream", "interrupted") or stopped.startswith("reached --max-seconds"):
        return 0
    _error(f"{args.source}: {stopped}")   # what was seen is still written
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
        if args.modality not in ("face", "faces"):
            raise PipelineError("--tta applies to the face model only")
        kwargs["tta"] = args.tta
    if args.modality == "faces":
        kwargs.update(folds=args.folds, fold=args.fold, angles=args.angles, expert=args.expert,
                      expert_weight=args.expert_weight)
    elif args.folds or args.angles or args.expert:
        raise PipelineError("--folds / --fold / --angles / --expert apply to evaluate faces only")
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
    _check_yaml(path)
    train.main(task, path, args.set or [], resume=args.resume,
               command=shlex.join(["python", "-m", "emotion_pipeline", *args.argv]))
    return 0


def _check_yaml(path: str) -> None:
    """ConfigError, one line, for a training config that is not there or is not YAML (before
    the trainer reads it and asks for a ``task:`` key it could not have found)."""
    from emotion_pipeline.config import read_yaml

    read_yaml(path, "" if Path(path).suffix else " (give the task and a YAML file: train face configs/face_tiny.yaml)")


def cmd_models(args: argparse.Namespace) -> int:
    from emotion_pipeline.models import fetch
    return fetch.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emotion_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="per-second emotion timeline of videos (files or folders)")
    a.add_argument("videos", nargs="*", help="video files, folders of videos or quoted glob patterns "
                                             "(none needed with --manifest)")
    a.add_argument("--out", default="out", help="output folder: OUT/<input folders>/<video stem>.json (default: out)")
    a.add_argument("--config", help=f"YAML config (default: {DEFAULTS_NOTE})")
    a.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    a.add_argument("--transcript", help="subtitle/transcript file (.srt, .vtt, .json) used instead of Whisper")
    a.add_argument("--offline", action="store_true", help="never touch the network")
    a.add_argument("--force", action="store_true", help="re-analyse even when an up-to-date output exists")
    a.add_argument("--no-progress", action="store_true", help="no progress bars")
    a.add_argument("--plot", action="store_true", help="also draw OUT/<stem>.png (same as adding png to --formats)")
    a.add_argument("--formats", default="json", metavar="LIST",
                   help="outputs beside each JSON, comma-separated: json,csv,png,mp4,html,srt (default: json; "
                        "the JSON is always written)")
    a.add_argument("--blur-faces", action="store_true",
                   help="the annotated MP4 (mp4 in --formats) shows every face blurred; boxes and labels are kept")
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
    lv.add_argument("--config", help=f"YAML config (default: {DEFAULTS_NOTE})")
    lv.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    lv.add_argument("--offline", action="store_true", help="never touch the network")
    lv.set_defaults(func=cmd_live)

    e = sub.add_parser("evaluate", help="accuracy of one modality's model on a labelled set; prints JSON")
    e.add_argument("modality", choices=["face", "faces", "audio", "text", "clips", "asr"])
    e.add_argument("--data", required=True, help="face: FER2013-format .npz; faces: labelled photos (a folder "
                                                 "with labels.csv or <emotion>/ sub-folders, or a CSV); audio: RAVDESS-named folder or "
                                                 "path,label CSV; text: MELD CSV, GoEmotions TSV or dair-ai file; "
                                                 "clips: labelled video clips (see --adapter)")
    e.add_argument("--adapter", default="mead", choices=["mead", "ravdess", "meld", "csv"],
                   help="clips only: how labels are read (file names or a path,label CSV)")
    e.add_argument("--whisper", default="auto", help="clips only: whisper_model setting (none: no words)")
    e.add_argument("--model", help="registry name or weights file (default: the shipped model)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--tta", choices=["none", "flip", "crops10"], help="face, faces: test-time augmentation "
                                                                      "(faces: the pipeline's default when not given)")
    e.add_argument("--folds", type=int, default=0, help="faces only: split the people into this many folds ...")
    e.add_argument("--fold", type=int, default=0, help="faces only: ... and keep the people of this fold")
    e.add_argument("--angles", help="faces only: head angles to keep, e.g. frontal,half_left,half_right")
    e.add_argument("--expert", help="faces only: also the blendshape expert (e.g. blendshape-expert) alone and "
                                    "combined with the face model")
    e.add_argument("--expert-weight", type=float, help="faces only: the expert's weight in the combination "
                                                       "(default: the one recorded in its file)")
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

    t = sub.add_parser("train", help="train a model (face, audio, text, fusion, blendshape) from a YAML config",
                       epilog="e.g. train configs/fusion_tiny.yaml; train face configs/face_ferplus.yaml --set epochs=1")
    t.add_argument("task", metavar="[TASK] CONFIG",
                   help="face | audio | text | fusion | blendshape, optional when the config has a task: key")
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
    # SIGTERM unwinds like Ctrl-C: workers stopped, half-written files removed, a live timeline written
    in_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.signal(signal.SIGTERM, terminate_on_sigterm) if in_main else None
    try:
        return args.func(args)
    except expected_errors() as e:
        _error(" ".join(str(e).split()))
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        _error("terminated" if terminated else "interrupted")
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as e:  # a bug or an environment problem: still one line; -v shows the traceback
        log.debug("unexpected error", exc_info=True)
        first = (getattr(e, "message", None) or str(e)).strip().splitlines()
        _error(f"{type(e).__name__}: {first[0][:300] if first else ''} (run with -v for details)")
        return EXIT_FAILED
    finally:
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)

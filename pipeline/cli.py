"""Command line: ``python -m pipeline {analyze,evaluate,train,models} ...``.

Expected failures (bad input, missing models, bad config) print one line ``error: <file>: <problem>``
and exit non-zero; no traceback, no half-written output.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.errors import PipelineError

log = logging.getLogger("pipeline")

MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                  ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".aac", ".jpg", ".jpeg", ".png"}
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "analyze.yaml"


def _expected_errors() -> tuple[type[BaseException], ...]:
    from models.registry import ChecksumError, ModelUnavailableError
    return (PipelineError, ModelUnavailableError, ChecksumError)


def collect_videos(paths: list[str]) -> list[Path]:
    """Files as given; folders expanded to the media files inside them (recursively, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES)
            if not found:
                log.warning("%s: folder holds no media files", p)
            out.extend(found)
        else:
            out.append(p)  # a missing file is reported by the run, with the others
    return out


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pipeline import analyze, config, writers

    overrides = list(args.set or [])
    if args.offline:
        overrides.append("offline=true")
    if args.no_progress:
        overrides.append("progress=false")
    cfg_path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    cfg = config.load(config.AnalyzeConfig, cfg_path, overrides)
    videos = collect_videos(args.videos)
    if not videos:
        raise PipelineError("no videos to analyse")
    if args.transcript and len(videos) > 1:
        raise PipelineError("--transcript applies to one video; give one video with it")
    analyzer = analyze.Analyzer(cfg)
    failed: list[tuple[Path, str]] = []
    done = skipped = 0
    for video in tqdm(videos, unit="video", desc="analyze", disable=not cfg.progress or len(videos) < 2):
        out = analyze.output_path(args.out, video)
        if not args.force and out.exists() and analyze.existing_run_key(out) == analyzer.run_key and not args.transcript:
            log.info("%s: up to date (same config and models), skipped", out)
            skipped += 1
            continue
        try:
            doc = analyzer.analyze(video, transcript_file=args.transcript)
            writers.validate(doc)
            writers.write_json_atomic(out, doc)
            if args.plot:
                from pipeline.plots import plot_timeline
                plot_timeline(doc, out.with_suffix(".png"))
        except _expected_errors() as e:
            failed.append((video, str(e)))
            print(f"error: {e}", file=sys.stderr)
            continue
        done += 1
        log.info("%s -> %s (%d s, fused: %s)", video, out, len(doc["timeline"]), doc["summary"]["dominant_label"])
    if len(videos) > 1 or failed:
        log.info("analysed %d, skipped %d, failed %d", done, skipped, len(failed))
        for video, why in failed:
            log.error("failed: %s", why)
    return 1 if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"pipeline.evaluate.{args.modality}")
    kwargs = {"device": args.device}
    if args.model:
        kwargs["model"] = args.model
    if args.modality == "clips":
        kwargs["adapter"] = args.adapter
    if args.tta:
        if args.modality != "face":
            raise PipelineError("--tta applies to the face model only")
        kwargs["tta"] = args.tta
    try:
        result = module.run(Path(args.data), **kwargs)
    except ValueError as e:
        raise PipelineError(str(e)) from e
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.train import fusion
    fusion.main_from_cli(args.config, args.set or [], resume=args.resume)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from models import fetch
    return fetch.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="per-second emotion timeline of videos (files or folders)")
    a.add_argument("videos", nargs="+", help="video files or folders of videos")
    a.add_argument("--out", default="out", help="output folder: OUT/<video stem>.json (default: out)")
    a.add_argument("--config", help=f"YAML config (default: {DEFAULT_CONFIG.name})")
    a.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    a.add_argument("--transcript", help="subtitle/transcript file (.srt, .vtt, .json) used instead of Whisper")
    a.add_argument("--offline", action="store_true", help="never touch the network")
    a.add_argument("--force", action="store_true", help="re-analyse even when an up-to-date output exists")
    a.add_argument("--no-progress", action="store_true", help="no progress bars")
    a.add_argument("--plot", action="store_true", help="also draw OUT/<stem>.png (one row per modality)")
    a.set_defaults(func=cmd_analyze)

    e = sub.add_parser("evaluate", help="accuracy of one modality's model on a labelled set; prints JSON")
    e.add_argument("modality", choices=["face", "audio", "text", "clips"])
    e.add_argument("--data", required=True, help="face: FER2013-format .npz; audio: RAVDESS-named folder or "
                                                 "path,label CSV; text: MELD CSV, GoEmotions TSV or dair-ai file; "
                                                 "clips: labelled video clips (see --adapter)")
    e.add_argument("--adapter", default="mead", choices=["mead", "ravdess", "meld", "csv"],
                   help="clips only: how labels are read (file names or a path,label CSV)")
    e.add_argument("--model", help="registry name or weights file (default: the shipped model)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--tta", choices=["flip", "crops10"], help="face only: test-time augmentation")
    e.set_defaults(func=cmd_evaluate)

    t = sub.add_parser("train", help="train the fusion head from a YAML config")
    t.add_argument("config", help="configs/*.yaml")
    t.add_argument("--set", "-s", action="append", metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("models", help="list models, or fetch the hub ones into the cache")
    m.add_argument("action", choices=["list", "fetch"])
    m.add_argument("--profile", default="default", choices=["default", "full"])
    m.add_argument("--whisper", default="tiny", help="Whisper model(s) to fetch, comma-separated")
    m.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("numba", "matplotlib", "urllib3", "httpx", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except _expected_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if args.command != "analyze" else 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

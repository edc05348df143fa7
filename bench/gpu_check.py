"""The prepared GPU check: one script, at most 5 minutes, each figure printed against the CPU's.

    python -m bench.gpu_check                  # on a machine with CUDA (refused in one line without)
    python -m bench.gpu_check --dry            # CPU only, tiny sizes, seconds: what CI runs

Four stages, each run on the target device (CUDA; the CPU with ``--dry``) at full size and on the
CPU on a slice, the figures compared as rates (work per second), so the CPU's share of the budget
stays small:

- ``fusion``: the fusion head trained by the project's trainer (``configs/fusion_tiny.yaml``:
  encoder features computed on the device, then the head), per epoch;
- ``face``: one epoch of the face CNN (``configs/face_ferplus.yaml``'s model and FER+ targets, from
  scratch) over the FER2013 training split (a slice of it on the CPU), faces per second;
- ``whisper``: the packaged multilingual ``base`` through faster-whisper, float16 on CUDA (int8 on
  the CPU, as the pipeline runs it there), on the audio of the long video; seconds of audio per second;
- ``pipeline``: ``analyze`` with the default settings (``whisper_model: auto``) on a 10-minute video
  built with ffmpeg by looping a shared talking clip (1 minute on the CPU); seconds of video per second.

Reads the shared data (``$EMOTION_DATA_DIR``, else ``../shared/data``): ``video/talking``,
``faces/fer2013`` (with the FER+ votes), ``speech/ravdess/Actor_17..20``, ``text/meld``. Needs ffmpeg.
A stage that would end past the budget (``--budget-s``, 300) is not started, and the report says so.
Exit code 0 when every stage ran, 1 when one failed or was left out, 2 when the device, a package,
ffmpeg or the data is missing (one line saying which; checked before anything runs).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger("bench.gpu_check")

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 300.0            # the whole check, both devices (the 5 minutes)
SOURCE_CLIP = ("video", "talking", "Obama_clip1.mp4")


@dataclass(frozen=True)
class Size:
    """How much work one device does in each stage."""
    fusion: tuple[str, ...]      # overrides of configs/fusion_tiny.yaml
    fusion_epochs: int
    face_faces: int              # FER2013 training faces in the epoch (0: all 28,709)
    face_overrides: tuple[str, ...]
    whisper_s: float             # seconds of audio transcribed
    video_s: float               # length of the analysed video
    whisper_model: str = "base"  # the larger packaged Whisper (multilingual base)
    analyze: tuple[tuple[str, str], ...] = ()   # AnalyzeConfig settings beyond the defaults


FULL = Size(fusion=(), fusion_epochs=8, face_faces=0, face_overrides=(), whisper_s=600.0, video_s=600.0)
CPU_SLICE = Size(fusion=(), fusion_epochs=2, face_faces=2048, face_overrides=(), whisper_s=60.0, video_s=60.0)
# --dry: both runs on the CPU, sized to take seconds; the code path is the full one
DRY = Size(fusion=("data.max_per_modality=24", "data.train_examples=128", "data.val_examples=64", "head.hidden=8"),
           fusion_epochs=1, face_faces=64, face_overrides=("model.widths=[8,16]", "model.embed_dim=16", "batch_size=32"),
           whisper_s=4.0, video_s=3.0, analyze=(("whisper_model", "none"),))


@dataclass(frozen=True)
class Figure:
    stage: str
    device: str
    work: float                  # units done
    unit: str
    seconds: float
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.work / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Report:
    target: str
    budget_s: float
    started: float = field(default_factory=time.perf_counter)
    figures: list[Figure] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


@contextlib.contextmanager
def _timed(device: str):
    _sync(device)
    t0 = time.perf_counter()
    box = {}
    yield box
    _sync(device)
    box["s"] = time.perf_counter() - t0


def _quiet_training_logs() -> None:
    for name in ("emotion_pipeline", "faster_whisper"):
        logging.getLogger(name).setLevel(logging.WARNING)


# ---------------------------------------------------------------- the stages

def stage_fusion(device: str, size: Size, work: Path) -> Figure:
    from emotion_pipeline.train import main as train

    out = work / f"fusion_{device.replace(':', '_')}"
    overrides = [f"device={device}", f"out_dir={out}", f"data.cache_dir={out}/features", f"epochs={size.fusion_epochs}",
                 "patience=0", "progress=false", *size.fusion]
    with _timed(device) as t:
        summary = train("fusion", ROOT / "configs" / "fusion_tiny.yaml", overrides)
    return Figure("fusion", device, size.fusion_epochs, "epochs", t["s"],
                  f"features + {size.fusion_epochs} epochs, val macro-F1 {summary['best_val_macro_f1']:.3f}")


def stage_face(device: str, size: Size, work: Path) -> Figure:
    from emotion_pipeline.train import main as train

    out = work / f"face_{device.replace(':', '_')}"
    overrides = [f"device={device}", f"out_dir={out}", "epochs=1", "warmup_epochs=0", "init_weights=null",
                 "export=null", "threads=0", "progress=false", f"max_per_split={size.face_faces}", *size.face_overrides]
    with _timed(device) as t:
        train("face", ROOT / "configs" / "face_ferplus.yaml", overrides)
    faces = size.face_faces or 28709
    return Figure("face", device, faces, "faces", t["s"], "one epoch from scratch, then its validation")


def _audio(video: Path, seconds: float, work: Path):
    import soundfile as sf

    wav = work / f"audio_{seconds:g}s.wav"
    if not wav.exists():
        _ffmpeg("-i", str(video), "-t", f"{seconds:g}", "-vn", "-ac", "1", "-ar", "16000", str(wav))
    audio, _ = sf.read(str(wav), dtype="float32")
    return audio


def stage_whisper(device: str, size: Size, work: Path, video: Path) -> Figure:
    from emotion_pipeline import transcribe

    audio = _audio(video, size.whisper_s, work)
    asr = transcribe.load_asr(size.whisper_model, device=device, offline=True)
    asr.transcribe(audio[:16000], "en")                       # built and warmed up outside the timing
    with _timed(device) as t:
        tr = transcribe.transcribe_audio(asr, audio, language="en")
    words = sum(len(s.words) for s in tr.segments)
    return Figure("whisper", device, len(audio) / 16000, "s of audio", t["s"],
                  f"{asr.info.name} {asr.info.compute_type}, {words} words")


_ANALYZERS: dict[tuple[str, tuple], object] = {}


def stage_pipeline(device: str, size: Size, work: Path, video: Path) -> Figure:
    from emotion_pipeline.analyze import Analyzer
    from emotion_pipeline.config import AnalyzeConfig

    clip = _long_video(video, size.video_s, work)      # the shared clip looped to the size's length
    key = (device, size.analyze)
    if key not in _ANALYZERS:
        _ANALYZERS[key] = Analyzer(AnalyzeConfig(device=device, offline=True, progress=False, **dict(size.analyze)))
    analyzer = _ANALYZERS[key]
    with _timed(device) as t:
        doc = analyzer.analyze(clip)
    whisper = (doc.get("models") or {}).get("whisper") or {}
    return Figure("pipeline", device, float(doc["video"]["duration_s"]), "s of video", t["s"],
                  f"whisper {whisper.get('name', 'none')}, text {doc['modalities']['text']['status']}")


# ---------------------------------------------------------------- media

def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _long_video(source: Path, seconds: float, work: Path) -> Path:
    """``source`` looped to ``seconds`` (stream copy: built in a second or two)."""
    out = work / f"looped_{seconds:g}s.mp4"
    if not out.exists():
        _ffmpeg("-stream_loop", "-1", "-i", str(source), "-t", f"{seconds:g}", "-c", "copy", str(out))
    return out


# ---------------------------------------------------------------- the run

def _estimate(report: Report, stage: str, device: str) -> float:
    """Seconds the next run of ``stage`` is expected to take: its target run scaled, else 0."""
    done = [f for f in report.figures if f.stage == stage]
    return min(f.seconds for f in done) if done and device == "cpu" and report.target != "cpu" else 0.0


def run(target: str, *, dry: bool, budget_s: float, work: Path) -> Report:
    from emotion_pipeline.data import data_path

    report = Report(target, budget_s)
    source = data_path(*SOURCE_CLIP)
    full, cpu = (DRY, DRY) if dry else (FULL, CPU_SLICE)
    long_video = _long_video(source, full.video_s, work)
    stages: list[tuple[str, Callable[[str, Size], Figure]]] = [
        ("fusion", lambda d, s: stage_fusion(d, s, work)),
        ("face", lambda d, s: stage_face(d, s, work)),
        ("whisper", lambda d, s: stage_whisper(d, s, work, long_video)),
        ("pipeline", lambda d, s: stage_pipeline(d, s, work, source)),
    ]
    # the target device first for every stage (what the check is for), then the CPU's slices; with
    # --dry the target is the CPU, so its figures are the comparison too (the report says 1.0x)
    passes = ((target, full),) if dry else ((target, full), ("cpu", cpu))
    for device, size in passes:
        for name, fn in stages:
            if report.elapsed() + _estimate(report, name, device) > budget_s:
                report.left_out.append(f"{name} on {device}: would pass the {budget_s:.0f} s budget")
                continue
            try:
                figure = fn(device, size)
            except Exception as e:   # a stage that fails is reported, the others still run
                log.exception("%s on %s failed", name, device)
                report.left_out.append(f"{name} on {device}: failed ({type(e).__name__}: "
                                       f"{' '.join(str(e).split())[:200]})")
                continue
            report.figures.append(figure)
            log.info("%s on %s: %.1f %s in %.2f s", name, device, figure.work, figure.unit, figure.seconds)
    return report


def comparisons(report: Report) -> list[tuple[Figure, Figure | None]]:
    """(the target's figure, the CPU's figure of the same stage or None), one per stage run on the target."""
    runs = [f for f in report.figures if f.device == report.target]
    cpu = {f.stage: f for f in report.figures if f.device == "cpu"}
    return [(f, cpu.get(f.stage)) for f in runs]


def format_report(report: Report) -> str:
    lines = [f"GPU check: target {report.target}, {report.elapsed():.0f} s of the {report.budget_s:.0f} s budget",
             f"{'stage':9s} {'device':>6s} {'work':>16s} {'seconds':>8s} {'rate/s':>9s} {'cpu rate/s':>10s} "
             f"{'speed-up':>8s}  detail"]
    for f, base in comparisons(report):
        cpu_rate = f"{base.rate:10.2f}" if base else f"{'-':>10s}"
        speed = f"{f.rate / base.rate:7.1f}x" if base else f"{'-':>8s}"
        lines.append(f"{f.stage:9s} {f.device:>6s} {f.work:7.0f} {f.unit:8.8s} {f.seconds:8.2f} {f.rate:9.2f} "
                     f"{cpu_rate} {speed}  {f.detail}")
    if report.target != "cpu":
        lines += [f"  cpu slice: {f.stage}: {f.work:.0f} {f.unit} in {f.seconds:.2f} s ({f.detail})"
                  for f in report.figures if f.device == "cpu"]
    lines += [f"  left out: {why}" for why in report.left_out]
    return "\n".join(lines)


REQUIRED_MODULES = ("av", "cv2", "faster_whisper", "soundfile", "transformers", "safetensors", "yaml")
REQUIRED_DATA = (SOURCE_CLIP, ("faces", "fer2013"), ("speech", "ravdess"), ("text", "meld"))


def missing_requirements() -> str | None:
    """One line saying what this machine lacks for the check (a fresh device machine has neither
    the project's environment nor ../shared: carry them, and point EMOTION_DATA_DIR at the data)."""
    import importlib.util

    from emotion_pipeline.data import DATA_ENV, data_path

    if shutil.which("ffmpeg") is None:
        return "the ffmpeg command is needed to build the 10-minute video"
    modules = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if modules:
        return f"python packages missing: {', '.join(modules)} (pip install -e . in this environment)"
    data = [str(data_path(*parts)) for parts in REQUIRED_DATA if not data_path(*parts).exists()]
    if data:
        return f"shared data missing: {', '.join(data)} (set {DATA_ENV})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU only, tiny sizes (seconds): the code path, not the figures")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="stop starting stages after this (default 300)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _quiet_training_logs()

    import torch

    if args.dry:
        target = "cpu"
    elif torch.cuda.is_available():
        target = "cuda"
    else:
        sys.stderr.write(f"error: no CUDA device here (torch {torch.__version__}, "
                         f"cuda {torch.version.cuda or 'none'}); --dry runs the check on the CPU\n")
        return 2
    problem = missing_requirements()
    if problem:
        sys.stderr.write(f"error: {problem}\n")
        return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = run(target, dry=args.dry, budget_s=args.budget_s, work=work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(format_report(report) + "\n")   # the check's report is its output
    if args.json:
        Path(args.json).write_text(json.dumps({"target": report.target, "elapsed_s": report.elapsed(),
                                               "figures": [asdict(f) | {"rate": f.rate} for f in report.figures],
                                               "speed_up": {f.stage: f.rate / b.rate for f, b in comparisons(report) if b},
                                               "left_out": report.left_out}, indent=2))
    return 1 if report.left_out else 0


if __name__ == "__main__":
    sys.exit(main())

"""Many videos: one per-video function, three ways to run it, one summary table.

    analyze_one(analyzer, job)        the per-video work (analyse, validate, write atomically);
                                      whatever goes wrong becomes the Outcome's one-line error
    run_serial / run_processes / run_ray
                                      the same function in this process, in N worker processes
                                      on this machine (each loads the models once, with a capped
                                      thread count), or on a Ray cluster (Ray Data map_batches
                                      over actors that hold the loaded models)
    write_summary                     OUT/batch_summary.csv: a row per video, written atomically

Each engine returns the Outcomes in the order of the jobs, so the summary and the JSON files are
the same whichever engine made them.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from emotion_pipeline.config import AnalyzeConfig
from emotion_pipeline.corpora.manifest import manifest_rows
from emotion_pipeline.errors import (InputError, PipelineError, Terminated, expected_errors,  # noqa: F401 (re-exported)
                                     one_line, terminate_on_sigterm)
from emotion_pipeline.fileio import atomic_write_text, csv_cell
from emotion_pipeline.preflight import Job

log = logging.getLogger(__name__)

SUMMARY_NAME = "batch_summary.csv"
MODALITIES = ("face", "audio", "text", "fused")


@dataclass(frozen=True)
class Options:
    """Per-video options that are not analysis settings."""
    transcript: str | None = None     # a transcript file (one video only)
    strict: bool = False              # a partial result is a failure
    formats: tuple[str, ...] = ("json",)   # outputs beside the JSON: csv, png, mp4, html, srt (pipeline.exports)
    blur_faces: bool = False          # the annotated MP4 blurs every face


@dataclass(frozen=True)
class Outcome:
    """One row of the batch summary."""
    video: str
    output: str
    status: str                       # ok | partial | failed | skipped (up to date)
    duration_s: float | None = None   # of the video
    compute_s: float | None = None    # wall seconds this run spent on it (None when skipped or failed early)
    face: str | None = None           # dominant label per modality over the timeline (None: never present)
    audio: str | None = None
    text: str | None = None
    fused: str | None = None
    message: str | None = None        # the error line, or the partial-result warning

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def _dominant(doc: dict[str, Any], modality: str) -> str | None:
    labels = Counter(row[modality]["label"] for row in doc["timeline"] if row.get(modality))
    return labels.most_common(1)[0][0] if labels else None


def outcome_of(job: Job, doc: dict[str, Any], status: str, compute_s: float | None) -> Outcome:
    return Outcome(str(job.video), str(job.out), status, doc["video"]["duration_s"],
                   None if compute_s is None else round(compute_s, 3),
                   *(_dominant(doc, m) for m in MODALITIES),
                   message="; ".join(doc.get("warnings") or []) or None)


def skipped(job: Job, doc: dict[str, Any]) -> Outcome:
    """The row of a video that is up to date: read back from its output."""
    try:
        return outcome_of(job, doc, "skipped", None)
    except (KeyError, TypeError):
        return Outcome(str(job.video), str(job.out), "skipped")


def failed(job: Job, message: str) -> Outcome:
    return Outcome(str(job.video), str(job.out), "failed", message=message)


def analyze_one(analyzer, job: Job, options: Options) -> Outcome:
    """Analyse one video and write its JSON (and formats) atomically. Never raises (but
    KeyboardInterrupt): a failure of any kind is returned as a failed Outcome carrying one line."""
    return analyze_doc(analyzer, job, options)[0]


def analyze_doc(analyzer, job: Job, options: Options) -> tuple[Outcome, dict[str, Any] | None]:
    """``analyze_one`` that also returns the timeline document (None when it failed). A failure
    after some files were written (a full disk while making the MP4) removes what this call
    wrote, so a failed video has no output, as its summary row says."""
    from emotion_pipeline import writers

    t0 = time.perf_counter()
    written: list[Path] = []
    try:
        doc = analyzer.analyze(job.video, transcript_file=options.transcript)
        if options.strict and not doc["complete"]:
            raise InputError(f"{job.video}: {'; '.join(doc['warnings'])} (--strict)")
        writers.validate(doc)
        formats = tuple(options.formats)
        from emotion_pipeline.exports import check_not_source, write_formats
        check_not_source(job.video, job.out, formats)
        written.append(writers.write_json_atomic(job.out, doc))
        if set(formats) - {"json"}:
            write_formats(doc, job.video, job.out, formats, detector=analyzer.face.detector,   # all or none
                          blur_faces=options.blur_faces)
    except BaseException as e:  # one bad video never stops the batch: it becomes its error line
        for path in written:    # (also when stopped: no output of a video that did not finish)
            Path(path).unlink(missing_ok=True)
        if not isinstance(e, Exception):
            raise
        log.debug("%s failed", job.video, exc_info=True)
        return failed(job, one_line(job.video, e)), None
    return outcome_of(job, doc, "ok" if doc["complete"] else "partial", time.perf_counter() - t0), doc


def limit_threads(threads: int) -> None:
    """Cap the math libraries of this process at ``threads`` (torch, OpenCV)."""
    import cv2
    import torch

    torch.set_num_threads(max(1, threads))
    cv2.setNumThreads(max(1, threads))


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


# ------------------------------------------------------------------ engines
def run_serial(cfg: AnalyzeConfig, jobs: list[Job], options: Options, *, progress: bool = True) -> Iterator[Outcome]:
    from tqdm import tqdm

    from emotion_pipeline.analyze import Analyzer

    if not jobs:
        return
    analyzer = Analyzer(cfg)
    for job in tqdm(jobs, unit="video", desc="analyze", disable=not progress or len(jobs) < 2):
        yield analyze_one(analyzer, job, options)


_WORKER: dict[str, Any] = {}   # worker processes only: the Analyzer loaded by _init_worker


def _init_worker(cfg: AnalyzeConfig, threads: int, log_level: int) -> None:
    import signal

    signal.signal(signal.SIGTERM, _worker_sigterm)        # stopped by the main process: unwind, clean up
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # Ctrl-C reaches the whole group: the main process decides
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    limit_threads(threads)
    from emotion_pipeline.analyze import Analyzer
    _WORKER["analyzer"] = Analyzer(cfg)


def _worker_sigterm(signum: int, frame) -> None:
    """In a worker: while a video is being analysed, unwind (its half-written files are removed);
    idle, just leave."""
    if _WORKER.get("busy"):
        terminate_on_sigterm(signum, frame)
    os._exit(128 + signum)


def _work(job: Job, options: Options) -> Outcome:
    _WORKER["busy"] = True
    try:
        return analyze_one(_WORKER["analyzer"], job, options)
    except Terminated:   # told to stop: the files of this video are cleaned up; leave now, start nothing else
        os._exit(143)
    finally:
        _WORKER["busy"] = False


def run_processes(cfg: AnalyzeConfig, jobs: list[Job], options: Options, workers: int, *,
                  progress: bool = True) -> Iterator[Outcome]:
    """``workers`` processes (spawned: no fork of a process holding torch threads), each loading
    the models once with ``cpu_count // workers`` threads; outcomes come back in job order.

    A worker that dies (the OOM killer's SIGKILL, a crash in a decoder) breaks the pool: the
    videos it had not finished are run again in a new pool; after a second break they run one at
    a time, so the video that kills its worker is found and fails alone ("worker died"), and the
    others are still analysed. Stopping (Ctrl-C, SIGTERM, the caller closing this iterator)
    cancels what has not started and stops the workers, which remove their half-written files:
    nothing is written into the output folder after the command has ended."""
    from tqdm import tqdm

    if not jobs:
        return
    threads = threads_per_worker(workers)
    cfg = dataclasses.replace(cfg, progress=False)
    bar = tqdm(total=len(jobs), unit="video", desc=f"analyze x{workers}", disable=not progress)
    pending, size, breaks = list(range(len(jobs))), workers, 0
    try:
        while pending:
            done, pending, died = yield from _pool_round(cfg, jobs, pending, options, size, threads, bar)
            if died is not None:   # one worker alone broke the pool: that video killed it
                yield failed(jobs[died], f"{jobs[died].video}: the worker analysing it died (killed by the "
                                         f"system, e.g. out of memory, or a crash in a decoder)")
                bar.update(1)
            elif pending:
                breaks += 1
                log.warning("a worker process died; %d video(s) run again%s", len(pending),
                            " one at a time" if breaks > 1 else "")
                size = workers if breaks == 1 else 1
    finally:
        bar.close()


def _pool_round(cfg: AnalyzeConfig, jobs: list[Job], pending: list[int], options: Options, size: int, threads: int,
                bar) -> Iterator[Outcome]:
    """Run ``pending`` (job indexes) in one pool of ``size`` workers, yielding outcomes in order
    until the pool breaks. Returns (yielded, still pending, the index that broke a one-worker pool)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=min(size, len(pending)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker,
                               initargs=(cfg, threads, logging.getLogger().getEffectiveLevel()))
    futures = {i: pool.submit(_work, jobs[i], options) for i in pending}
    processes = list((pool._processes or {}).values())   # (started by submit) to stop them when told to
    finished: list[int] = []
    try:
        for pos, i in enumerate(pending):
            try:
                outcome = futures[i].result()
            except BrokenProcessPool:
                rest = pending[pos:]
                if size == 1:
                    return finished, rest[1:], i
                return finished, rest, None
            except Exception as e:   # an exception the worker could not send back
                outcome = failed(jobs[i], one_line(jobs[i].video, e))
            finished.append(i)
            bar.update(1)
            yield outcome
        return finished, [], None
    except BaseException:   # Ctrl-C, SIGTERM, the iterator closed: nothing more is started or written
        if not all(f.done() for f in futures.values()):
            processes = processes or list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            _stop_workers(processes)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


WORKER_STOP_S = 10.0    # a stopped worker removes its temporary files and exits within this, else it is killed


def _stop_workers(processes: list) -> None:
    """SIGTERM each worker (its handler unwinds: half-written files removed), then SIGKILL stragglers."""
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(WORKER_STOP_S)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


class _RayAnalyzer:
    """A Ray Data actor: loads the models once, then analyses batches of jobs."""

    def __init__(self, cfg: AnalyzeConfig, options: Options, threads: int):
        limit_threads(threads)
        from emotion_pipeline.analyze import Analyzer
        self.analyzer, self.options = Analyzer(cfg), options

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows = [analyze_one(self.analyzer, Job(Path(v), Path(o)), self.options)
                for v, o in zip(batch["video"], batch["out"])]
        return {f.name: [getattr(r, f.name) for r in rows] for f in dataclasses.fields(Outcome)}


def run_ray(cfg: AnalyzeConfig, jobs: list[Job], options: Options, workers: int, *,
            address: str | None = None, gpus_per_worker: float = 0.0) -> Iterator[Outcome]:
    """The same per-video function on a Ray cluster: ``ray.data`` over the jobs, ``map_batches``
    with ``workers`` actors that each hold the loaded models. ``address``: a running cluster
    (``ray://...`` or ``auto``; also $RAY_ADDRESS); none starts a local one."""
    try:
        import ray
    except ImportError as e:
        raise PipelineError("the Ray engine needs Ray: pip install 'emotion-pipeline[ray]'") from e
    if not jobs:
        return
    threads = threads_per_worker(workers) if address is None else 1
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                           if k.startswith(("EMOTION_", "HF_"))}})
    cfg = dataclasses.replace(cfg, progress=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_items([{"video": str(j.video), "out": str(j.out)} for j in jobs],
                             override_num_blocks=len(jobs))
    results = ds.map_batches(_RayAnalyzer, fn_constructor_kwargs={"cfg": cfg, "options": options, "threads": threads},
                             batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
                             num_gpus=gpus_per_worker or None, max_task_retries=2)
    by_key = {}
    for row in results.iter_rows():
        outcome = Outcome(**{f.name: _plain(row[f.name]) for f in dataclasses.fields(Outcome)})
        by_key[(outcome.video, outcome.output)] = outcome
    for job in jobs:
        yield by_key.get((str(job.video), str(job.out))) or failed(job, f"{job.video}: lost by the Ray run")


def _plain(value: Any) -> Any:
    """numpy scalars and NaN (Arrow's missing values) back to Python."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


# ------------------------------------------------------------------ summary
def summary_path(out_dir: str | Path, shard: tuple[int, int] | None = None) -> Path:
    if shard is None:
        return Path(out_dir) / SUMMARY_NAME
    i, n = shard
    return Path(out_dir) / f"batch_summary.shard-{i}-of-{n}.csv"


def write_summary(path: str | Path, outcomes: Iterable[Outcome]) -> Path:
    """The summary table, atomically; a file name that starts like a formula (``=x.mp4``) is
    prefixed with ``'`` so no spreadsheet runs it."""
    buf = io.StringIO()
    names = [f.name for f in dataclasses.fields(Outcome)]
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for o in outcomes:
        writer.writerow({k: ("" if v is None else csv_cell(v)) for k, v in dataclasses.asdict(o).items()})
    return atomic_write_text(path, buf.getvalue())


def shard_of(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    """Shard ``i`` of ``n`` (1-based): every n-th job of the sorted list, starting at the i-th;
    the same inputs give the same shards on every machine."""
    if shard is None:
        return jobs
    i, n = shard
    ordered = sorted(jobs, key=lambda j: str(j.out))
    return [j for k, j in enumerate(ordered) if k % n == i - 1]


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise PipelineError(f"--shard {text}: expected i/N, e.g. 1/4") from exc
    if not 1 <= i <= n:
        raise PipelineError(f"--shard {text}: i must be 1..N")
    return i, n


def read_manifest(path: str | Path) -> list[Path]:
    """Videos listed in a manifest: one path per line (``#`` comments), or a CSV with a ``path``
    column. Relative paths are relative to the manifest's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read manifest ({e})") from e
    if path.suffix.lower() == ".csv":
        return [item for _, item, row in manifest_rows(path, ()) if (row["path"] or "").strip()]
    entries = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]

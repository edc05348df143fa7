"""Large collections: --jobs, --shard, manifests and globs, Ray, and the batch summary give the
same timelines as a serial run; a second run resumes."""
from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from emotion_pipeline import batch
from tests.conftest import MEAD, TALKING, ffmpeg, needs_data, needs_ffmpeg
from tests.test_reliability import FAST, cli

pytestmark = [needs_data, needs_ffmpeg]
VOLATILE = ("created_utc", "timings_s")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch") / "in"
    (root / "sub").mkdir(parents=True)
    shutil.copy(MEAD / "M030_front_angry_level3_001.mp4", root / "angry.mp4")
    shutil.copy(MEAD / "M030_front_surprised_level3_001.mp4", root / "sub" / "surprised.mp4")
    ffmpeg("-i", str(TALKING), "-t", "3", "-c", "copy", str(root / "sub" / "talk.mp4"))
    return root


@pytest.fixture(scope="module")
def serial(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial")
    r = cli("analyze", str(folder), "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    return out


def timelines(out: Path) -> dict[str, dict]:
    docs = {}
    for p in sorted(out.rglob("*.json")):
        doc = json.loads(p.read_text())
        docs[str(p.relative_to(out))] = {k: v for k, v in doc.items() if k not in VOLATILE}
    return docs


def summary(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_serial_run_writes_a_summary_row_per_video(serial):
    rows = summary(serial / batch.SUMMARY_NAME)
    assert [Path(r["output"]).relative_to(serial).as_posix() for r in rows] == [
        "angry.json", "sub/surprised.json", "sub/talk.json"]
    assert all(r["status"] == "ok" and float(r["compute_s"]) > 0 and r["fused"] for r in rows)
    assert rows[2]["audio"] and not rows[0]["audio"]     # the MEAD clips have no sound


def test_two_workers_give_the_serial_result(folder, serial, tmp_path):
    r = cli("analyze", str(folder), "--out", str(tmp_path), "--jobs", "2", *FAST)
    assert r.returncode == 0, r.stderr
    assert timelines(tmp_path) == timelines(serial)


def test_shards_together_give_the_serial_result(folder, serial, tmp_path):
    for i in (1, 2):
        r = cli("analyze", str(folder), "--out", str(tmp_path), "--shard", f"{i}/2", *FAST)
        assert r.returncode == 0, r.stderr
    parts = [summary(tmp_path / f"batch_summary.shard-{i}-of-2.csv") for i in (1, 2)]
    assert sorted(len(p) for p in parts) == [1, 2]
    assert {r["video"] for p in parts for r in p} == {str(v) for v in sorted(folder.rglob("*.mp4"))}
    assert timelines(tmp_path) == timelines(serial)


def test_manifest_and_glob_inputs_and_resume(folder, serial, tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,note\nin/angry.mp4,x\nin/sub/talk.mp4,y\n")
    shutil.copytree(folder, tmp_path / "in")
    out = tmp_path / "out"
    r = cli("analyze", "--manifest", str(manifest), str(tmp_path / "in" / "sub" / "*.mp4"), "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    rows = summary(out / batch.SUMMARY_NAME)
    assert len(rows) == 3 and {Path(r["video"]).name for r in rows} == {"angry.mp4", "talk.mp4", "surprised.mp4"}
    assert (out / "in" / "angry.json").is_file() and (out / "talk.json").is_file()   # manifest / glob folders
    # resume: a missing output is filled in, the others are read back as skipped
    (out / "talk.json").unlink()
    r = cli("analyze", "--manifest", str(manifest), str(tmp_path / "in" / "sub" / "*.mp4"), "--out", str(out), *FAST)
    rows = {Path(r["video"]).name: r for r in summary(out / batch.SUMMARY_NAME)}
    assert r.returncode == 0 and rows["talk.mp4"]["status"] == "ok"
    assert rows["angry.mp4"]["status"] == "skipped" and rows["angry.mp4"]["fused"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray not installed (extra 'ray')")
def test_ray_local_cluster_gives_the_serial_result(folder, serial, tmp_path):
    r = cli("analyze", str(folder), "--out", str(tmp_path), "--engine", "ray", "--jobs", "2", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    assert timelines(tmp_path) == timelines(serial)


@pytest.mark.parametrize("text, problem", [("3/2", "1..N"), ("x", "expected i/N")])
def test_bad_shard(text, problem, tmp_path):
    r = cli("analyze", str(MEAD / "M030_front_angry_level3_001.mp4"), "--out", str(tmp_path), "--shard", text, *FAST)
    assert r.returncode == 2 and problem in r.stderr and "Traceback" not in r.stderr

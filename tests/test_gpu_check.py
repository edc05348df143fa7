"""The prepared GPU check (bench/gpu_check.py): its --dry mode runs every stage's real code path on
the CPU in seconds; without CUDA the real check refuses in one line."""
from __future__ import annotations

import json

import pytest

from tests.conftest import DATA, TALKING, needs_data, needs_ffmpeg


@needs_ffmpeg
@needs_data(TALKING, DATA / "faces" / "fer2013", DATA / "speech" / "ravdess", DATA / "text" / "meld")
def test_the_dry_run_runs_every_stage_and_compares_it(tmp_path, capsys):
    from bench import gpu_check

    assert gpu_check.main(["--dry", "--json", str(tmp_path / "check.json"), "--keep", str(tmp_path / "work")]) == 0
    result = json.loads((tmp_path / "check.json").read_text())
    assert result["target"] == "cpu" and result["left_out"] == []
    assert [f["stage"] for f in result["figures"]] == ["fusion", "face", "whisper", "pipeline"]
    assert all(f["seconds"] > 0 and f["work"] > 0 for f in result["figures"])
    assert result["speed_up"] == {"fusion": 1.0, "face": 1.0, "whisper": 1.0, "pipeline": 1.0}
    out = capsys.readouterr().out
    assert out.startswith("GPU check: target cpu") and "base int8" in out
    assert (tmp_path / "work" / "looped_3s.mp4").is_file()          # the looped video, made with ffmpeg


def test_without_cuda_the_check_refuses_in_one_line(capsys):
    import torch

    from bench import gpu_check

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real check would run")
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no CUDA device here") and "--dry" in err


def test_the_full_sizes_fit_the_issue():
    from bench import gpu_check

    assert gpu_check.FULL.video_s == 600 and gpu_check.FULL.whisper_model == "base" and gpu_check.BUDGET_S <= 300
    assert gpu_check.FULL.face_faces == 0 and gpu_check.CPU_SLICE.video_s < gpu_check.FULL.video_s


def test_missing_data_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys):
    from bench import gpu_check

    monkeypatch.setenv("EMOTION_DATA_DIR", str(tmp_path / "nothing-here"))
    if gpu_check.shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is checked first")
    assert gpu_check.main(["--dry"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: shared data missing") and "EMOTION_DATA_DIR" in err

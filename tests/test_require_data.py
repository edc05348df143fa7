"""CI fails, not skips, when the shared data is missing: EMOTION_REQUIRE_DATA=1 (set by .ci/run)
turns every ``needs_data`` / ``require_data`` skip into a failure."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pytest(tmp_path: Path, require: str | None, *tests: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EMOTION_REQUIRE_DATA"}
    env["EMOTION_DATA_DIR"] = str(tmp_path / "no-shared-data")
    if require is not None:
        env["EMOTION_REQUIRE_DATA"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", *tests],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


TESTS = ("tests/test_demux.py::test_probe_talking_clip",                # pytestmark = needs_data (the video folder)
         "tests/test_ferplus.py::test_reader_on_real_publictest_slice",  # needs_data(<the votes file>)
         "tests/test_vad.py::test_ravdess_robust_to_gain_and_noise")     # require_data() inside the test


def test_missing_shared_data_is_skipped_on_a_clone_and_fails_in_ci(tmp_path):
    clone = _pytest(tmp_path, None, *TESTS)
    assert clone.returncode == 0 and "3 skipped" in clone.stdout.splitlines()[-1], clone.stdout[-2000:]
    assert "shared data not found" in clone.stdout
    ci = _pytest(tmp_path, "1", *TESTS)
    summary = ci.stdout.splitlines()[-1]
    assert ci.returncode == 1 and "skipped" not in summary and "passed" not in summary, ci.stdout[-2000:]
    assert ci.stdout.count("EMOTION_REQUIRE_DATA=1 makes a missing data set a failure") >= 3


def test_ci_sets_the_variable():
    assert "export EMOTION_REQUIRE_DATA=1" in (ROOT / ".ci" / "run").read_text()

"""Long inputs stream: peak memory must not grow with the video's length (slow; `make test-slow`)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TALKING, ffmpeg, needs_data, needs_ffmpeg

pytestmark = [needs_data, needs_ffmpeg, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
PEAK_LIMIT_MB = 2500

CHILD = """
import json, resource, sys
from emotion_pipeline.analyze import Analyzer
from emotion_pipeline.config import AnalyzeConfig
doc = Analyzer(AnalyzeConfig(whisper_model="none", offline=True, progress=False)).analyze(sys.argv[1])
print(json.dumps({"n": len(doc["timeline"]), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "face": sum(t["face"] is not None for t in doc["timeline"])}))
"""


def _run(video: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(video)], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_hour_video_stays_under_the_memory_limit(tmp_path):
    short, long = tmp_path / "short.mp4", tmp_path / "hour.mp4"
    ffmpeg("-stream_loop", "-1", "-i", str(TALKING), "-t", "60", "-c", "copy", str(short))
    ffmpeg("-stream_loop", "-1", "-i", str(TALKING), "-t", "3600", "-c", "copy", str(long))
    a, b = _run(short), _run(long)
    assert b["n"] == 3600 and b["face"] >= 3400
    assert b["peak_mb"] < PEAK_LIMIT_MB
    assert b["peak_mb"] < a["peak_mb"] + 400      # flat in the length, not proportional to it

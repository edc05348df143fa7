"""Benchmarks: `make bench` (speed and peak memory per stage)."""
from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, json_path: str | None) -> int:
    """Print a benchmark's report (its output) and, if asked, write it to ``json_path`` too."""
    text = json.dumps(report, indent=1)
    print(text)
    if json_path:
        Path(json_path).write_text(text)
    return 0

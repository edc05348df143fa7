"""Where the shared data lives. Never copied into the repository."""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "EMOTION_DATA_DIR"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """$EMOTION_DATA_DIR, else ../shared/data beside the repository."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else (_REPO_ROOT.parent / "shared" / "data")


def data_path(*parts: str) -> Path:
    return data_dir().joinpath(*parts)

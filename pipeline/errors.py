"""Errors the CLI turns into one-line messages and a non-zero exit code."""
from __future__ import annotations

import os


class PipelineError(Exception):
    """An expected failure on user input: the message names the file and the problem."""


class InputError(PipelineError):
    """The input file cannot be analysed (missing, empty, not a media file, corrupt...)."""


class ConfigError(PipelineError):
    """A configuration file or override is invalid."""


class DataError(InputError, ValueError):
    """A labelled data file (a corpus, a manifest) cannot be read as its format says. Also a
    ValueError, which is what the readers raised before they had a class of their own."""


class TrainingError(PipelineError):
    """A training run cannot go on: nothing to resume, export or average, runs that do not fit together."""


def bad_file(path: str | os.PathLike, why: str) -> DataError:
    """The one way a reader reports an unusable file: ``<path>: <why>`` (raise it, ``from`` the cause)."""
    return DataError(f"{path}: {why}")

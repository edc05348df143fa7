"""Errors the CLI turns into one-line messages and a non-zero exit code."""
from __future__ import annotations


class PipelineError(Exception):
    """An expected failure on user input: the message names the file and the problem."""


class InputError(PipelineError):
    """The input file cannot be analysed (missing, empty, not a media file, corrupt...)."""


class ConfigError(PipelineError):
    """A configuration file or override is invalid."""

"""Errors the CLI turns into one-line messages and a non-zero exit code."""
from __future__ import annotations

import os


class PipelineError(Exception):
    """An expected failure on user input: the message names the file and the problem."""


class InputError(PipelineError):
    """The input file cannot be analysed (missing, empty, not a media file, corrupt...)."""


class ConfigError(PipelineError):
    """A configuration file or override is invalid."""


class OutputError(PipelineError, OSError):
    """An output file cannot be written (a full disk, a quota, a file-size limit, a read-only folder):
    the message names the file. Also an OSError, which is what the writers raised before."""


class DataError(InputError, ValueError):
    """A labelled data file (a corpus, a manifest) cannot be read as its format says. Also a
    ValueError, which is what the readers raised before they had a class of their own."""


class TrainingError(PipelineError):
    """A training run cannot go on: nothing to resume, export or average, runs that do not fit together."""


class ModelUnavailableError(PipelineError):
    """A model file is missing, cannot be fetched (offline, no network) or is not what its name says
    (wrong kind, labels in another order, weights that do not fit); the message names the file and
    says how to get a good one. Defined here, not in ``models``, so it is importable without torch."""


class ChecksumError(PipelineError):
    """A model file's SHA-256 differs from the recorded (or first pinned) one."""


def bad_file(path: str | os.PathLike, why: str) -> DataError:
    """The one way a reader reports an unusable file: ``<path>: <why>`` (raise it, ``from`` the cause)."""
    return DataError(f"{path}: {why}")


def expected_errors() -> tuple[type[BaseException], ...]:
    """The failures users cause (bad input, missing models, bad settings): their message is enough.
    Every one of them is a PipelineError (the model errors too, defined above), so this needs no torch."""
    return (PipelineError,)


def one_line(video: str | os.PathLike, e: BaseException) -> str:
    """``<file>: <problem>`` on one line, whatever the exception: the project's own errors keep
    their message, anything else is ``<Type>: <first line>`` (jsonschema's ``.message`` is the
    short form). A newline or other control character in a file name is shown escaped, so the
    line stays one line."""
    name = str(video)
    shown = printable(name)
    raw = str(e).replace(name, shown) if shown != name else str(e)
    text = " ".join(raw.split()) or type(e).__name__
    if not isinstance(e, expected_errors()):
        message = getattr(e, "message", None)
        first = (message.replace(name, shown) if isinstance(message, str) else raw).strip().splitlines()
        text = f"{type(e).__name__}: {printable(first[0][:300]) if first else ''}"
    return text if shown in text else f"{shown}: {text}"


def printable(text: str) -> str:
    """``text`` with control characters (a newline in a file name) escaped as ``\\n``, ``\\x1b``...;
    nothing else changed."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception (installed by the command line and in worker processes), so that it
    unwinds like Ctrl-C: half-written files are removed, workers are stopped, a live timeline is
    written. A KeyboardInterrupt, so every ``except Exception`` lets it through."""


def terminate_on_sigterm(signum: int, frame) -> None:
    """A ``signal.signal(SIGTERM, ...)`` handler: raise Terminated where the main thread is."""
    raise Terminated(f"terminated (signal {signum})")

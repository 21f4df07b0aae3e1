"""What the command-line tools share: their exit codes and one-line errors.

The exit codes below are those of ``train.py``, ``evaluate.py``, ``python -m
lenet_jax.export`` and ``python -m lenet_jax.serve``; the README's "Faults" table says
which fault gives which.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

EXIT_OK = 0
EXIT_USAGE = 2  # bad input: flags, paths, data, checkpoints, images, a busy run directory
EXIT_DIVERGED = 3  # the loss became NaN/Inf; the last good checkpoint is kept
EXIT_WRITE = 4  # a write failed part-way (full or read-only disk); what was saved is kept
EXIT_PEER_LOST = 5  # --distributed: another process of the run stopped; all resume
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT; resume with --resume


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a bad flag is one line on stderr and exit 2,
    like every other bad input, instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (--help lists the flags)")
        self.exit(EXIT_USAGE)


def fail(prog: str, message: str, code: int = EXIT_USAGE) -> int:
    """Print ``prog: error: message`` on stderr, as one line whatever paths it quotes;
    return ``code`` for ``main`` to exit with."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return code


def one_line(text: str) -> str:
    """``text`` with line breaks, control characters and undecodable bytes escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def unwritable(directory: str | Path, flag: str) -> str | None:
    """Why ``directory`` (made if missing) cannot take a new file, or None if it can."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as err:
        return f"cannot write to {flag} {directory}: {err.strerror or err}"
    return None


def tolerant_console() -> None:
    """Let stdout and stderr print any path a shell can pass (bytes that are not UTF-8
    arrive as lone surrogates), escaped, instead of failing on it."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def quiet_libraries() -> None:
    """Keep Orbax's and TensorStore's own reports of a failure (log records with
    tracebacks, exceptions in their background threads) off the terminal: the tools
    report every failure themselves, in one line."""
    for library in ("absl", "asyncio"):  # asyncio: futures of a failed save, at exit
        logging.getLogger(library).setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None

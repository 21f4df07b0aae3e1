"""What the command-line tools share: their exit codes, the one error boundary each runs
in, one-line errors, and train.py's flags (one per ``TrainConfig`` field).

The library raises typed errors carrying values (``lenet_jax.errors.UserError`` and its
kinds); only this layer knows that a value came from a flag, and says so. The exit codes
below are those of ``train.py``, ``evaluate.py``, ``python -m lenet_jax.export`` and
``python -m lenet_jax.serve``; the README's "Faults" table says which fault gives which.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import dataclasses
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NoReturn

from lenet_jax.errors import UserError

EXIT_OK = 0
EXIT_INTERNAL = 70  # a bug (EX_SOFTWARE): one line naming the file with the traceback
EXIT_USAGE = 2  # bad input: flags, paths, data, checkpoints, images, a busy run directory
EXIT_DIVERGED = 3  # the loss became NaN/Inf; the last good checkpoint is kept
EXIT_WRITE = 4  # a write failed part-way (full or read-only disk); what was saved is kept
EXIT_PEER_LOST = 5  # --distributed: another process of the run stopped; all resume
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT; resume with --resume
EXIT_TERMINATED = 143  # SIGTERM (kill, a scheduler's stop); resume with --resume
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (| head), as a shell's SIGPIPE says


class Terminated(KeyboardInterrupt):
    """SIGTERM: the tool stops as on Ctrl-C (a KeyboardInterrupt wherever one is
    handled), with its own word and exit code."""


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
    tracebacks) off the terminal: the tools report every failure themselves, in one
    line."""
    for library in ("absl", "asyncio"):  # asyncio: futures of a failed save, at exit
        logging.getLogger(library).setLevel(logging.CRITICAL)


def stopped(stop: KeyboardInterrupt) -> tuple[str, int]:
    """What a stop by Ctrl-C or SIGTERM is called, and its exit code."""
    if isinstance(stop, Terminated):
        return "terminated", EXIT_TERMINATED
    return "interrupted", EXIT_INTERRUPTED


def _terminate(signum: int, frame: object) -> NoReturn:
    raise Terminated


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """Exceptions nobody can catch (in a garbage collector's callback, a library's
    thread at exit) stay off the terminal; a Ctrl-C or SIGTERM that landed in one is
    delivered again to the main thread, so that it is not lost."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        # From another thread, once this hook has returned: raised inside it, the
        # interrupt would be swallowed again.
        threading.Timer(0.01, _thread.interrupt_main, (signum,)).start()


@contextlib.contextmanager
def _stops() -> Iterator[None]:
    """SIGTERM stops as Ctrl-C does, and neither is lost in a callback; the process's
    handlers are as they were afterwards. A signal the process was started ignoring (a
    background job's SIGINT, nohup's) stays ignored."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    if in_main and previous[0] is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _terminate)
    sys.unraisablehook = _unraisable
    try:
        yield
    finally:
        if in_main and previous[0] is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous[0])
        sys.unraisablehook = previous[1]


def exit(code: int) -> NoReturn:  # noqa: A001 (the tools' sys.exit)
    """``sys.exit(code)``, with a Ctrl-C or SIGTERM during the interpreter's clean-up
    ending the process at once rather than printing a traceback. A failure ends at once
    after its line: the interpreter's clean-up would print what a failed Orbax read left
    running (its other reads, finishing after the event loop closed) as tracebacks, and
    everything this process wrote is closed by then (``RunCheckpoints.close`` waits)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, lambda signum, frame: os._exit(128 + signum))
    if code:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def run(main: Callable[[], int]) -> NoReturn:
    """A tool's ``main`` as the whole process, ended by ``exit``. From start to exit,
    exceptions nobody can catch stay off the terminal (``_unraisable``): after a failed
    Orbax read, its other reads finish in TensorStore's threads at any moment up to the
    exit, each with a traceback that would land beside the tool's one line."""
    sys.unraisablehook = _unraisable
    exit(main())


def guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a command's ``body`` inside its one error boundary: a ``UserError`` is one
    line (naming the flag a setting came from) and exit 2, Ctrl-C exit 130, SIGTERM 143,
    anything unexpected one line pointing at a file with the traceback, exit 70."""
    try:
        with _stops():
            return body()
    except UserError as err:
        return fail(prog, describe(err))
    except KeyboardInterrupt as stop:
        word, code = stopped(stop)
        print(f"{prog}: {word}", file=sys.stderr)
        return code
    except BrokenPipeError:  # `lenet-jax info | head`: stop quietly, and at exit too
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as err:
        log = Path(tempfile.gettempdir()) / f"{re.sub(r'[^a-z]', '-', prog)}-{os.getpid()}.log"
        log.write_text(traceback.format_exc())
        return fail(prog, f"internal error: {type(err).__name__}: {err}; details in {log}",
                    EXIT_INTERNAL)


def describe(err: UserError) -> str:
    """The error's line, a setting named by its flag."""
    from lenet_jax.config import ConfigError, ResumeMismatchError

    if isinstance(err, ConfigError):
        return err.said(flag(err.field))
    if isinstance(err, ResumeMismatchError):
        return err.said(flag(err.field).removeprefix("--"))
    return str(err)


# train.py's flags: one per TrainConfig field, "--field-name" unless named here (the
# first name is the flag; later ones are aliases).
FLAG_NAMES = {"preset": ("--preset", "--variant"), "learning_rate": ("--lr",)}


def flag(field: str) -> str:
    """The command-line flag of ``TrainConfig.<field>``."""
    return FLAG_NAMES.get(field, ("--" + field.replace("_", "-"),))[0]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field, with its type and help; a flag not given
    leaves the preset's recipe (``config.RECIPES``) as it is."""
    from lenet_jax.config import RECIPES, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    varies = {f.name for f in dataclasses.fields(TrainConfig)
              if len({getattr(r, f.name) for r in RECIPES.values()}) > 1} - {"preset"}
    for field in dataclasses.fields(TrainConfig):
        options: dict[str, Any] = dict(field.metadata, default=argparse.SUPPRESS)
        default = "the preset's recipe" if field.name in varies else repr(field.default)
        options["help"] = f"{field.metadata['help']} (default: {default})"
        hint = hints[field.name]
        if hint is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is Literal:
            options["choices"] = typing.get_args(hint)
        else:
            options["type"] = hint
        names = FLAG_NAMES.get(field.name, (flag(field.name),))
        parser.add_argument(*names, dest=field.name, **options)
    from lenet_jax.config import NAMED_RECIPES

    parser.add_argument("--recipe", choices=list(NAMED_RECIPES), default=None,
                        help="start from this recipe instead of the preset's (paper: the "
                             "1998 paper's training; the flags above still change it)")


def config_from_args(args: argparse.Namespace):  # -> config.TrainConfig
    """The preset's recipe, with each setting given on the command line."""
    from lenet_jax.config import TrainConfig, recipe

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}
    return recipe(given.pop("preset", TrainConfig.preset), getattr(args, "recipe", None),
                  **given)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ckpt`` or ``--pretrained``, exactly one: the model a command reads."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--ckpt",
                       help="runs/best, a run directory (its latest epoch) or a step directory")
    group.add_argument("--pretrained", metavar="PRESET",
                       help="weights shipped in the package: a preset trained on MNIST, or "
                            "DATASET/PRESET ('lenet-jax info' lists them)")


def load_predictor(args: argparse.Namespace):  # -> evaluation.Predictor
    """The model ``add_model_arguments`` named, ready to answer."""
    from lenet_jax import evaluation, zoo

    if args.pretrained is not None:
        return evaluation.Predictor.pretrained(*zoo.parse_name(args.pretrained))
    return evaluation.Predictor.load(args.ckpt)


def restore_model(args: argparse.Namespace) -> tuple[Any, dict]:
    """(params, metadata) of the model ``add_model_arguments`` named."""
    from lenet_jax import checkpoint, zoo

    if args.pretrained is not None:
        return zoo.restore(*zoo.parse_name(args.pretrained))
    return checkpoint.restore_for_inference(args.ckpt)

"""``lenet-jax train`` (and ``python train.py``): train a LeNet-5 variant on MNIST, e.g.
``lenet-jax train --epochs 10 --preset original``.

Exit codes (``lenet_jax.cli``): 0 done, 2 bad input (flags, data, checkpoints, a run
directory another process is training, a batch too large for memory), 3 diverged, 4 a
write failed, 5 another process of a --distributed run stopped, 130 interrupted, 143
terminated (SIGTERM), 70 a bug.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

# Only the standard library and the CLI layer before the error boundary is up: a Ctrl-C
# in the first second is then one line too.
from lenet_jax import cli

# A run name is one plain directory name beside "best" (the link to the latest run's best
# epoch) and the lock files (".<name>.lock"): printable, not hidden, of a length every
# file system takes with the lock's affixes.
MAX_NAME = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from lenet_jax import models

    presets = "\n".join(f"  {p.name:27s} {p.description}" for p in models.PRESETS.values())
    parser = cli.ArgumentParser(
        prog="train.py",
        description="Train a LeNet-5 variant with JAX/Flax and Optax Adam.",
        epilog=f"presets:\n{presets}\n\nEach preset's recipe: lenet_jax/config.py (RECIPES).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_config_arguments(parser)
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--workdir", default="runs", help="parent of run directories")
    parser.add_argument("--name", default=None, help="run directory name (default: the preset)")
    parser.add_argument("--distributed", action="store_true",
                        help="one of several processes (README, Scaling out): with the three"
                             " flags below, or JAX's detection of SLURM, Kubernetes, TPU pods")
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="with --distributed: process 0's address, the same for all")
    parser.add_argument("--num-processes", type=int, default=None, metavar="N")
    parser.add_argument("--process-id", type=int, default=None, metavar="I",
                        help="this process's index, 0 to N-1; process 0 writes the run")
    parser.add_argument("--resume", action="store_true", help="continue from the latest epoch")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing run directory of this name first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the flags beyond the settings', or None. Checked before any
    work starts."""
    from lenet_jax.cli import distributed

    if args.resume and args.overwrite:
        return "--resume and --overwrite contradict each other; choose one"
    if problem := distributed.problem(args):
        return problem
    if args.name is not None and (problem := name_problem(args.name)):
        return f"--name {problem}, got {args.name!r}"
    if not args.workdir:
        return "--workdir must name a directory (. for this one)"
    if not _utf8(args.workdir):  # Orbax's TensorStore takes UTF-8 paths only
        return f"--workdir must be UTF-8 text, got {args.workdir!r}"
    return cli.unwritable(args.workdir, "--workdir")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a run directory, or None."""
    from lenet_jax.checkpoint import BEST_LINK

    if name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        return "must be a plain directory name"
    if name.startswith("."):
        return "must not start with '.' (hidden names are the run locks')"
    if name == BEST_LINK:
        return f"cannot be {BEST_LINK!r}: that is the link to the latest run's best epoch"
    if not name.isprintable() or not _utf8(name) or len(os.fsencode(name)) > MAX_NAME:
        return f"must be at most {MAX_NAME} bytes of printable UTF-8 text"
    return None


def _utf8(text: str) -> bool:
    """Whether ``text`` is UTF-8 (a name of bytes that are not arrives as surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_run_dir(args: argparse.Namespace, run_dir: Path) -> str | None:
    """The run directory's problem, checked once this process holds it."""
    if run_dir.is_symlink():
        return f"{run_dir} is a link; a run directory must be a real directory"
    if run_dir.exists() and not saved_nothing(run_dir) and not (args.resume or args.overwrite):
        return (f"run directory {run_dir} already exists; pass --resume to continue it or "
                "--overwrite to replace it")
    return None


def saved_nothing(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only what a run that saved no epoch leaves (it crashed,
    or was stopped, in its first): no checkpoint and an empty log. Such a directory is
    trained into again, since nothing in it can be lost."""
    from lenet_jax import checkpoint, reporting

    try:
        names = {p.name for p in run_dir.iterdir()}
        log = run_dir / reporting.METRICS_FILE
        return (names <= {checkpoint.CHECKPOINTS_DIR, reporting.METRICS_FILE, "tensorboard"}
                and not checkpoint.saved_epochs(run_dir)
                and (not log.exists() or log.stat().st_size == 0))
    except OSError:
        return False


def fail(message: str, code: int = cli.EXIT_USAGE) -> int:
    return cli.fail("train.py", message, code)


def main(argv: list[str] | None = None) -> int:
    cli.tolerant_console()
    return cli.guarded("train.py", lambda: start(argv))


def start(argv: list[str] | None) -> int:
    from lenet_jax import rundir, runtime
    from lenet_jax.cli import distributed

    with runtime.phase("imports"):
        args = parse_args(argv)
    settings = cli.config_from_args(args)
    settings.validate()
    if problem := check_args(args):
        return fail(problem)
    if args.distributed and distributed.CHILD_LOG not in os.environ:
        return distributed.supervise([sys.executable, "-m", "lenet_jax", "train",
                                      *(argv if argv is not None else sys.argv[1:])])
    if args.distributed and (problem := distributed.start(args)):
        return fail(problem)
    writes_the_run = distributed.writes_the_run()  # asked once, passed down
    run_dir = Path(args.workdir) / (args.name or settings.preset)
    if not writes_the_run:
        return train(args, settings, run_dir, writes_the_run)
    # The process that writes the run holds, checks and writes the run directory.
    try:
        with rundir.exclusive(run_dir) as note:
            if note:
                print(f"train.py: {note}", file=sys.stderr)
            if problem := check_run_dir(args, run_dir):
                return fail(problem)
            if args.overwrite and run_dir.exists():
                shutil.rmtree(run_dir)
            return train(args, settings, run_dir, writes_the_run)
    except rundir.RunDirectoryBusyError as err:
        return fail(f"{err} or choose another --name")


def train(args: argparse.Namespace, settings, run_dir: Path, writes_the_run: bool) -> int:
    """Load the data and train; every outcome is an exit code and at most one line (the
    errors a user can cause go on to ``cli.guarded``)."""
    # Heavy imports after the flags are known to be good: errors come back at once.
    from lenet_jax import runtime
    from lenet_jax.cli import distributed

    with runtime.phase("imports"):
        import jax
        from jax.errors import JaxRuntimeError

        from lenet_jax import checkpoint, data, training
    runtime.enable_compilation_cache()
    cli.quiet_libraries()
    try:
        with runtime.phase("data"):
            dataset = data.load(settings.dataset, args.data_dir)
        if settings.task == "numbers":
            from lenet_jax import reading
        story = reading.train_numbers if settings.task == "numbers" else training.train_and_evaluate
        record = story(settings, dataset, run_dir, resume=args.resume,
                       progress=not args.no_progress and sys.stderr.isatty(),
                       writes_the_run=writes_the_run)
    except training.RunFinished as finished:
        longer = (f"resume with --epochs larger than {finished.epoch}"
                  if finished.schedule != "cosine" else
                  f"its cosine schedule ends at epoch {finished.epoch}, so train a new run "
                  "(--name, or --overwrite) with more --epochs")
        print(f"train.py: {finished}. To train longer, {longer}")
        return 0
    except training.TrainingDivergedError as err:
        kept = (f"the last good checkpoint is kept in {run_dir}"
                if checkpoint.saved_epochs(run_dir) else "no epoch was saved")
        return fail(f"{err}; stopped, {kept} (try a smaller --lr)", cli.EXIT_DIVERGED)
    except OSError as err:  # reads fail as DataError or CheckpointError: this is a write
        return fail(f"cannot write to {run_dir}: {err.strerror or err}; the epochs saved "
                    "before are kept", cli.EXIT_WRITE)
    except JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" in str(err) or "out of memory" in str(err).lower():
            return fail(f"out of memory with --batch-size {settings.batch_size} on "
                        f"{len(jax.devices())} device(s); choose a smaller one")
        if not args.distributed:
            raise
        distributed.peer_lost(str(err))  # a collective failed: a peer is gone
    except KeyboardInterrupt as stop:
        word, code = cli.stopped(stop)
        print(f"train.py: {word}; resume with --resume ({run_dir})", file=sys.stderr)
        return code
    best = Path(args.workdir) / "best"
    what = ("numbers read exactly: test strips" if settings.task == "numbers"
            else "test accuracy")
    print(f"done: {what} {100 * record['test_accuracy']:.2f}% after epoch "
          f"{record['epoch']}; checkpoints in {run_dir}, best in {os.fspath(best)}")
    return 0



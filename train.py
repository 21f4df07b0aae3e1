"""Train a LeNet-5 variant on MNIST: ``python train.py --epochs 10 --variant original``.

Exit codes: 0 done, 2 bad input (flags, data, checkpoints), 3 diverged, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lenet_jax import runtime

with runtime.phase("imports"):
    from lenet_jax import config, models

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    presets = "\n".join(f"  {p.name:27s} {p.description}" for p in models.PRESETS.values())
    parser = argparse.ArgumentParser(
        description="Train a LeNet-5 variant with JAX/Flax and Optax Adam.",
        epilog=f"presets:\n{presets}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_arguments(parser)
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--workdir", default="runs", help="parent of run directories")
    parser.add_argument("--name", default=None, help="run directory name (default: the preset)")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-host: call jax.distributed.initialize() first (see README)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest epoch")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing run directory of this name first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def run_dir_of(args: argparse.Namespace) -> Path:
    return Path(args.workdir) / (args.name or args.preset)


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the flags, or None. Checked before any work starts."""
    if problem := config.from_args(args).problem():
        return problem
    if args.resume and args.overwrite:
        return "--resume and --overwrite contradict each other; choose one"
    workdir = Path(args.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=workdir).close()
    except OSError as err:
        return f"cannot write to --workdir {workdir}: {err.strerror or err}"
    run_dir = run_dir_of(args)
    if run_dir.exists() and any(run_dir.iterdir()) and not (args.resume or args.overwrite):
        return (f"run directory {run_dir} already exists; pass --resume to continue it or "
                "--overwrite to replace it")
    return None


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"train.py: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if problem := check_args(args):
        return fail(problem)
    run_dir = run_dir_of(args)
    if args.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)

    # Heavy imports after the flags are known to be good: errors come back at once.
    with runtime.phase("imports"):
        import jax

        from lenet_jax import data, training
        from lenet_jax.checkpoint import CheckpointError
    runtime.enable_compilation_cache()
    if args.distributed:
        jax.distributed.initialize()  # coordinator and process ids from the environment
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's warnings are not for users
    try:
        with runtime.phase("data"):
            dataset = data.load(args.dataset, args.data_dir)
        record = training.train_and_evaluate(
            config.from_args(args), dataset, run_dir, resume=args.resume,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except (data.DataError, CheckpointError, config.ConfigError) as err:
        return fail(str(err))
    except training.RunFinished as finished:
        print(f"train.py: {finished}")
        return 0
    except training.TrainingDivergedError as err:
        return fail(f"{err}; stopped, the last good checkpoint is kept in {run_dir}",
                    EXIT_DIVERGED)
    except KeyboardInterrupt:
        print(f"train.py: interrupted; resume with --resume ({run_dir})", file=sys.stderr)
        return EXIT_INTERRUPTED
    best = Path(args.workdir) / "best"
    print(f"done: test accuracy {100 * record['test_accuracy']:.2f}% after epoch "
          f"{record['epoch']}; checkpoints in {run_dir}, best in {os.fspath(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a LeNet-5 variant on MNIST: ``python train.py --epochs 10 --variant original``."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lenet_jax import models
from lenet_jax.data import DATASETS, SPLIT_SIZES

EXIT_USAGE = 2
EXIT_DIVERGED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    presets = "\n".join(f"  {p.name:27s} {p.description}" for p in models.PRESETS.values())
    parser = argparse.ArgumentParser(
        description="Train a LeNet-5 variant with JAX/Flax and Optax Adam.",
        epilog=f"presets:\n{presets}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", default="original", help="preset name (below)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None,
                        help="Adam learning rate (default: the preset's: 3e-3 for original,"
                             " else 1e-3)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default=None,
                        help="learning-rate schedule, cosine = warmup then decay to 0"
                             " (default: the preset's)")
    parser.add_argument("--warmup-epochs", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", choices=DATASETS, default="mnist")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--workdir", default="runs", help="parent of run directories")
    parser.add_argument("--name", default=None, help="run directory name (default: the variant)")
    parser.add_argument("--val-size", type=int, default=5000,
                        help="examples held out from the end of train to select runs/best;"
                             " 0 selects on test")
    parser.add_argument("--limit-train", type=int, default=0, metavar="N",
                        help="train on the first N training images only (quick trials)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random affine distortions on device: shift, rotate, scale"
                             " (default: the preset's, on for original)")
    parser.add_argument("--loop", choices=("auto", "scan", "step"), default="auto",
                        help="epoch as one lax.scan call, or one jit'd call per batch (same"
                             " result up to float rounding); auto = the measured faster, scan")
    parser.add_argument("--devices", type=int, default=0,
                        help="data-parallel over this many devices (default: all visible);"
                             " the batch size must divide by it")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-host: call jax.distributed.initialize() first (see README)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest epoch")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing run directory of this name first")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the flags, or None. Checked before any work starts."""
    if args.variant not in models.PRESETS:
        return f"unknown --variant {args.variant!r}; valid presets: {', '.join(models.PRESETS)}"
    if args.epochs <= 0:
        return f"--epochs must be positive, got {args.epochs}"
    if args.lr is not None and not args.lr > 0:
        return f"--lr must be positive, got {args.lr}"
    if not 0 <= args.val_size < SPLIT_SIZES["train"]:
        return f"--val-size must be in [0, {SPLIT_SIZES['train']}), got {args.val_size}"
    train_size = SPLIT_SIZES["train"] - args.val_size
    if not 0 <= args.limit_train <= train_size:
        return f"--limit-train must be in [0, {train_size}], got {args.limit_train}"
    train_size = args.limit_train or train_size
    if not 0 < args.batch_size <= train_size:
        return (f"--batch-size must be in [1, {train_size}] (the training set), "
                f"got {args.batch_size}")
    if args.devices < 0:
        return f"--devices must be 0 (all) or positive, got {args.devices}"
    if args.resume and args.overwrite:
        return "--resume and --overwrite contradict each other; choose one"
    workdir = Path(args.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=workdir).close()
    except OSError as err:
        return f"cannot write to --workdir {workdir}: {err.strerror or err}"
    run_dir = workdir / (args.name or args.variant)
    if run_dir.exists() and any(run_dir.iterdir()) and not (args.resume or args.overwrite):
        return (f"run directory {run_dir} already exists; pass --resume to continue it or "
                "--overwrite to replace it")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"train.py: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    run_dir = Path(args.workdir) / (args.name or args.variant)
    if args.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)

    # Heavy imports after the flags are known to be good: errors come back at once.
    import jax

    from lenet_jax import data, training
    from lenet_jax.checkpoint import CheckpointError

    if args.distributed:
        jax.distributed.initialize()  # coordinator and process ids from the environment
    devices = args.devices or jax.device_count()
    if devices > jax.device_count():
        print(f"train.py: error: --devices {devices}: only {jax.device_count()} visible",
              file=sys.stderr)
        return EXIT_USAGE
    if args.batch_size % devices:
        print(f"train.py: error: --batch-size {args.batch_size} does not divide over "
              f"{devices} devices", file=sys.stderr)
        return EXIT_USAGE

    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's warnings are not for users

    config = training.TrainConfig(
        variant=args.variant, dataset=args.dataset, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.lr, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, seed=args.seed, val_size=args.val_size,
        augment=args.augment, loop=args.loop, train_limit=args.limit_train,
        devices=args.devices,
    )
    try:
        dataset = data.load(args.dataset, args.data_dir)
        record = training.train_and_evaluate(
            config, dataset, run_dir, resume=args.resume,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except (data.DataError, CheckpointError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except training.TrainingDivergedError as err:
        print(f"train.py: error: {err}; stopped, the last good checkpoint is kept in "
              f"{run_dir}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"train.py: interrupted; resume with --resume ({run_dir})", file=sys.stderr)
        return 130
    best = Path(args.workdir) / "best"
    print(f"done: test accuracy {100 * record['test_accuracy']:.2f}% after epoch "
          f"{record['epoch']}; checkpoints in {run_dir}, best in {os.fspath(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate a checkpoint: ``python evaluate.py --ckpt runs/best``, or predict digits in
your own pictures: ``python evaluate.py --ckpt runs/best --image a.png b.jpg``.

Exit codes: 0 done, 2 bad input (flags, checkpoint, data, an unreadable image).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lenet_jax import runtime

EXIT_USAGE = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Report on a trained LeNet checkpoint.")
    parser.add_argument("--ckpt", required=True,
                        help="runs/best, a run directory (its latest epoch) or a step directory")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--dataset", default=None,
                        help="evaluate on another data set with the same classes")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per compiled chunk (default: 128 on CPU, 1000 elsewhere)")
    parser.add_argument("--out", default=None,
                        help="where metrics.json and the PNGs go (default: <run>/eval)")
    parser.add_argument("--normalise", action="store_true",
                        help="row-normalised confusion heatmap instead of counts")
    parser.add_argument("--json", action="store_true", help="print metrics as JSON only")
    parser.add_argument("--image", nargs="+", default=None, metavar="FILE",
                        help="predict these PNG/JPEG files instead of a data set")
    return parser.parse_args(argv)


def fail(message: str) -> int:
    print(f"evaluate.py: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def predict_files(module, params, metadata: dict, files: list[str]) -> int:
    import numpy as np

    from lenet_jax import evaluation

    names = tuple(metadata["class_names"])
    failures = 0
    for file in files:
        try:
            image = evaluation.mnist_like(file)
        except evaluation.ImageError as err:
            print(f"evaluate.py: error: {err}", file=sys.stderr)
            failures += 1
            continue
        report = evaluation.run(module, params, image[None], np.zeros(1, int), names)
        ranked = ", ".join(f"{n} {100 * p:.1f}%" for n, p in
                           evaluation.top_k(report.probabilities[0], names))
        print(f"{file}: {ranked}")
    return EXIT_USAGE if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        return fail(f"--batch-size must be positive, got {args.batch_size}")

    from lenet_jax import checkpoint, models

    runtime.enable_compilation_cache()
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's warnings are not for users
    try:
        with runtime.phase("init"):
            manager_dir, _ = checkpoint.resolve_step(args.ckpt)
            params, metadata = checkpoint.restore_for_inference(args.ckpt)
    except checkpoint.CheckpointError as err:
        return fail(str(err))
    module, _ = models.create_model(metadata["preset"])
    if args.image:
        with runtime.phase("work"):
            return predict_files(module, params, metadata, args.image)
    return evaluate_split(args, module, params, metadata, manager_dir)


def evaluate_split(args: argparse.Namespace, module, params, metadata: dict,
                   manager_dir: Path) -> int:
    """The report on a whole split: table, metrics.json and the PNGs."""
    from lenet_jax import data, evaluation

    dataset_name = args.dataset or metadata["dataset"]
    out_dir = Path(args.out) if args.out else manager_dir.resolve().parent / "eval"
    if out_dir.resolve().is_relative_to(manager_dir.resolve()):
        return fail(f"--out {out_dir} is inside the checkpoint; choose another directory")
    try:
        with runtime.phase("data"):
            dataset = data.load(dataset_name, args.data_dir)
    except data.DataError as err:
        return fail(str(err))
    if tuple(dataset.class_names) != tuple(metadata["class_names"]):
        return fail(f"the checkpoint was trained on {metadata['dataset']}; {dataset_name}"
                    " has other classes")
    split = getattr(dataset, args.split)
    with runtime.phase("work"):
        report = evaluation.run(module, params, split.images, split.labels,
                                dataset.class_names, args.batch_size)
    with runtime.phase("save"):
        files = evaluation.save_outputs(report, split.images, out_dir, args.normalise)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"{metadata['preset']} epoch {metadata['epoch']} on {dataset_name} {args.split}")
    print(evaluation.format_report(report))
    print("\nwrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``lenet-jax evaluate`` (and ``python evaluate.py``): report on a checkpoint,
``lenet-jax evaluate --ckpt runs/best``, or predict digits in your own pictures,
``lenet-jax evaluate --ckpt runs/best --image a.png b.jpg``.

Exit codes (``lenet_jax.cli``): 0 done, 2 bad input (flags, checkpoint, data, an
unreadable image: the others are still predicted), 4 a write failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lenet_jax import cli, runtime

# Images per compiled chunk at most: the whole test set; more only pads with zeros.
MAX_BATCH = 10_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="evaluate.py",
                                description="Report on a trained LeNet checkpoint.")
    cli.add_model_arguments(parser)
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--dataset", default=None,
                        help="evaluate on another data set with the same classes")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per compiled chunk (default: 128 on CPU, 1000 elsewhere)")
    parser.add_argument("--out", default=None,
                        help="where metrics.json and the PNGs go (default: <run>/eval; "
                             "with --pretrained, eval-PRESET here)")
    parser.add_argument("--normalise", action="store_true",
                        help="row-normalised confusion heatmap instead of counts")
    parser.add_argument("--json", action="store_true", help="print metrics as JSON only")
    parser.add_argument("--image", nargs="+", default=None, metavar="PATH",
                        help="predict these PNG/JPEG files, and those inside these directories,"
                             " instead of a data set (--json: one record per image)")
    parser.add_argument("--non-digits", action="store_true",
                        help="also report how many of 90 generated pictures that are not "
                             "digits the checkpoint's 'not a digit' rule refuses")
    parser.add_argument("--explain", action="store_true",
                        help="with --image: also draw each image's feature maps, layer by"
                             " layer, to <out>/explain/")
    return parser.parse_args(argv)


def fail(message: str) -> int:
    return cli.fail("evaluate.py", message)


def predict_files(args: argparse.Namespace, predictor, out_dir: Path) -> int:
    """Predict every image named or inside a directory named, in one compiled batch;
    a file that cannot be read is reported and skipped, and the exit code says so."""
    import numpy as np

    from lenet_jax import evaluation

    read, images, problems = evaluation.read_pictures(args.image, evaluation.mnist_like)
    for problem in problems:
        fail(problem)
    if read:
        for file, answer in zip(read, predictor.answer(np.stack(images)), strict=True):
            print(json.dumps({"file": str(file)} | answer.to_json()) if args.json
                  else f"{cli.one_line(str(file))}: {answer}")
        if args.explain:
            try:
                explain_files(predictor, read, images, out_dir / "explain")
            except OSError as err:
                return cli.fail("evaluate.py", f"cannot write to --out {out_dir}: "
                                f"{err.strerror or err}", cli.EXIT_WRITE)
    return cli.EXIT_USAGE if problems else 0


def explain_files(predictor, files: list[Path], images: list, out_dir: Path) -> None:
    """One figure per image: its feature maps, layer by layer (lenet_jax.explain)."""
    from lenet_jax import explain

    out_dir.mkdir(parents=True, exist_ok=True)
    for index, (file, image) in enumerate(zip(files, images, strict=True)):
        path = out_dir / f"{index:03d}-{file.stem[:100]}.png"  # any name's stem fits
        metadata = predictor.metadata
        answer = predictor.answer(image[None])[0]
        explain.plot(explain.panels(predictor.module, predictor.params, image),
                     predictor.class_names, path,
                     f"{file.name}: {explain.verdict(answer)}   ({metadata['preset']}, "
                     f"epoch {metadata['epoch']})")
        print(cli.one_line(f"explained {file} in {path}"), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    cli.tolerant_console()
    args = parse_args(argv)
    return cli.guarded("evaluate.py", lambda: evaluate(args))


def evaluate(args: argparse.Namespace) -> int:
    if args.batch_size is not None and not 0 < args.batch_size <= MAX_BATCH:
        return fail(f"--batch-size must be in [1, {MAX_BATCH}], got {args.batch_size}")
    if args.explain and not args.image:
        return fail("--explain draws the images given with --image; give some")

    from lenet_jax import checkpoint

    runtime.enable_compilation_cache()
    cli.quiet_libraries()
    with runtime.phase("init"):
        predictor = cli.load_predictor(args)
    if predictor.rule is None:
        print(f"evaluate.py: note: {predictor.source} carries no 'not a digit' rule (saved "
              "before it existed, or trained without a validation slice); nothing is rejected",
              file=sys.stderr)
    if predictor.step_dir is None:  # shipped weights
        out_dir = Path(args.out or f"eval-{predictor.metadata['preset']}")
    else:
        out_dir = Path(args.out) if args.out else predictor.step_dir.parent.parent / "eval"
        if checkpoint.writes_into_checkpoints(out_dir, predictor.step_dir):
            return fail(f"--out {out_dir} is inside the checkpoint; choose another directory")
    if (not args.image or args.explain) and (problem := cli.unwritable(out_dir, "--out")):
        return fail(problem)
    if args.image:
        with runtime.phase("work"):
            return predict_files(args, predictor, out_dir)
    return evaluate_split(args, predictor, out_dir)


def evaluate_split(args: argparse.Namespace, predictor, out_dir: Path) -> int:
    """The report on a whole split: table, metrics.json and the PNGs."""
    from lenet_jax import data, evaluation

    metadata = predictor.metadata

    dataset_name = args.dataset or metadata["dataset"]
    with runtime.phase("data"):
        dataset = data.load(dataset_name, args.data_dir)
    if tuple(dataset.class_names) != tuple(metadata["class_names"]):
        return fail(f"the checkpoint was trained on {metadata['dataset']}; {dataset_name}"
                    " has other classes")
    split = getattr(dataset, args.split)
    with runtime.phase("work"):
        report = evaluation.run(predictor.module, predictor.params, split.images,
                                split.labels, dataset.class_names, args.batch_size,
                                predictor.rule, non_digits=args.non_digits)
    try:
        with runtime.phase("save"):
            files = evaluation.save_outputs(report, split.images, out_dir, args.normalise)
    except OSError as err:
        return cli.fail("evaluate.py", f"cannot write to --out {out_dir}: "
                        f"{err.strerror or err}", cli.EXIT_WRITE)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"{metadata['preset']} epoch {metadata['epoch']} on {dataset_name} {args.split}")
    print(evaluation.format_report(report))
    print("\nwrote " + ", ".join(str(f) for f in files))
    return 0



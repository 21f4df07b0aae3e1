"""``python -m lenet_jax.export``'s command line (exit codes: 0 done, 2 bad input, 4 a
write failed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_jax import cli, files, runtime
from lenet_jax import export as exporting

REFERENCE = 8  # test images whose every layer goes into <preset>.reference.npz


def main(argv: list[str] | None = None) -> int:
    cli.tolerant_console()
    parser = cli.ArgumentParser(prog="lenet_jax.export",
                                description="Export a lenet-jax checkpoint.")
    cli.add_model_arguments(parser)
    parser.add_argument("--out", default="model", help="output directory")
    parser.add_argument("--format", choices=("jax", "onnx"), default="jax",
                        help="jax: a jax.export artefact (lenet.jax); onnx: <preset>.onnx, "
                             "ONNX's own operators (needs the onnx package)")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="with --format onnx: also <preset>.int8.onnx, statically "
                             f"quantised, calibrated on {exporting.CALIBRATION} training "
                             "images, and <preset>.reference.npz (each layer's output for the "
                             f"first {REFERENCE} test images)")
    parser.add_argument("--savedmodel", action="store_true",
                        help="also write a TensorFlow SavedModel (needs TensorFlow)")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (--quantize reads training and test images)")
    args = parser.parse_args(argv)
    if args.quantize and args.format != "onnx":
        parser.error("--quantize int8 quantises the ONNX model: add --format onnx")
    return cli.guarded(parser.prog, lambda: export(args, parser.prog))


def quantized(path: Path, params, metadata: dict, data_dir: str | None) -> list[Path]:
    """The int8 model beside ``path``, and the reference activations."""
    import numpy as np

    from lenet_jax import data

    dataset = data.load(metadata["dataset"], data_dir)
    int8 = exporting.quantize_int8(path, exporting.calibration_images(dataset.train.images),
                                   path.with_suffix(".int8.onnx"))
    reference = path.with_suffix(".reference.npz")
    with files.replacing(reference) as tmp:
        np.savez(tmp, **exporting.reference_activations(params, metadata,
                                                        dataset.test.images[:REFERENCE]))
    return [int8, reference]


def export(args: argparse.Namespace, prog: str) -> int:
    from lenet_jax import checkpoint

    if args.ckpt is not None and checkpoint.writes_into_checkpoints(args.out, args.ckpt):
        return cli.fail(prog, f"--out {args.out} is inside the checkpoint; choose another "
                              "directory")
    if problem := cli.unwritable(args.out, "--out"):
        return cli.fail(prog, problem)
    cli.quiet_libraries()
    runtime.enable_compilation_cache()
    try:
        with runtime.phase("init"):
            params, metadata = cli.restore_model(args)
        with runtime.phase("work"):
            if args.format == "onnx":
                path = exporting.export_onnx(params, metadata, args.out)
                print(f"wrote {path}")
                if args.quantize:
                    for written in quantized(path, params, metadata, args.data_dir):
                        print(f"wrote {written}")
            else:
                path = exporting.export_model(params, metadata, args.out)
                print(f"wrote {path} and {Path(args.out) / 'metadata.json'}")
        if args.savedmodel:
            print(f"wrote {exporting.export_savedmodel(params, metadata, args.out)}")
    except ImportError as err:
        if args.format == "onnx":
            return cli.fail(prog, f"--format onnx needs onnx ({err}; pip install "
                                  "'lenet-jax[onnx]')")
        return cli.fail(prog, f"--savedmodel needs TensorFlow ({err})")
    except OSError as err:
        return cli.fail(prog, f"cannot write to --out {args.out}: {err.strerror or err}",
                        cli.EXIT_WRITE)
    return 0



"""``python -m lenet_jax.export``'s command line (exit codes: 0 done, 2 bad input, 4 a
write failed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_jax import cli, runtime
from lenet_jax import export as exporting


def main(argv: list[str] | None = None) -> int:
    cli.tolerant_console()
    parser = cli.ArgumentParser(prog="lenet_jax.export",
                                description="Export a lenet-jax checkpoint.")
    parser.add_argument("--ckpt", required=True, help="runs/best, a run or a step directory")
    parser.add_argument("--out", default="model", help="output directory")
    parser.add_argument("--savedmodel", action="store_true",
                        help="also write a TensorFlow SavedModel (needs TensorFlow)")
    args = parser.parse_args(argv)
    return cli.guarded(parser.prog, lambda: export(args, parser.prog))


def export(args: argparse.Namespace, prog: str) -> int:
    from lenet_jax import checkpoint

    if checkpoint.writes_into_checkpoints(args.out, args.ckpt):
        return cli.fail(prog, f"--out {args.out} is inside the checkpoint; choose another "
                              "directory")
    if problem := cli.unwritable(args.out, "--out"):
        return cli.fail(prog, problem)
    cli.quiet_libraries()
    runtime.enable_compilation_cache()
    try:
        with runtime.phase("work"):
            path = exporting.export_model(args.ckpt, args.out)
        print(f"wrote {path} and {Path(args.out) / 'metadata.json'}")
        if args.savedmodel:
            print(f"wrote {exporting.export_savedmodel(args.ckpt, args.out)}")
    except ImportError as err:
        return cli.fail(prog, f"--savedmodel needs TensorFlow ({err})")
    except OSError as err:
        return cli.fail(prog, f"cannot write to --out {args.out}: {err.strerror or err}",
                        cli.EXIT_WRITE)
    return 0



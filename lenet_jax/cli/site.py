"""``lenet-jax site``'s command line: the draw-a-digit page as a static folder (exit codes:
0 written, 2 bad input: flags, the model, an --out that is not ours, no npm or onnx)."""

from __future__ import annotations

import argparse

from lenet_jax import cli


def main(argv: list[str] | None = None) -> int:
    cli.tolerant_console()
    parser = cli.ArgumentParser(
        prog="lenet-jax site",
        description="Write the draw-a-digit page as a folder that runs the model in the "
                    "browser (ONNX Runtime Web): any static host serves it.")
    cli.add_model_arguments(parser)
    parser.add_argument("--out", default="site",
                        help="the folder to write (new, empty, or an earlier site's)")
    args = parser.parse_args(argv)
    return cli.guarded(parser.prog, lambda: write(args))


def write(args: argparse.Namespace) -> int:
    from lenet_jax import site

    cli.quiet_libraries()
    predictor = cli.load_predictor(args)
    try:
        written = site.build(predictor, args.out)
    except ImportError as err:
        return cli.fail("lenet-jax site", f"the page's model is ONNX: it needs onnx ({err}; "
                                          "pip install 'lenet-jax[onnx]')")
    size = sum(path.stat().st_size for path in written)
    print(f"wrote {args.out}: {len(written)} files, {size / 2**20:.1f} MiB; open it with "
          f"python -m http.server -d {args.out}, then http://localhost:8000/")
    return cli.EXIT_OK

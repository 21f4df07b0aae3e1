"""``lenet-jax read``: the numbers written in your pictures, read by the shipped number
reader or a checkpoint trained with ``lenet-jax train --task numbers``:
``lenet-jax read cheque.png folder/``, ``lenet-jax read --ckpt runs/best cheque.png``.

Exit codes (``lenet_jax.cli``): 0 done, 2 bad input (flags, a checkpoint that cannot read
numbers, an unreadable picture: the others are still read), 4 a figure could not be
written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lenet_jax import cli, runtime


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="lenet-jax read",
        description="Read the number written in each picture (a row of digits, dark on "
                    "light or light on dark).")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--ckpt",
                       help="a checkpoint of 'lenet-jax train --task numbers': runs/best, a "
                            "run directory (its latest epoch) or a step directory")
    model.add_argument("--pretrained", metavar="PRESET", default=None,
                       help="the number reader shipped in the package (default: original, "
                            "when no --ckpt is given)")
    parser.add_argument("pictures", nargs="+", metavar="PICTURE",
                        help="PNG or JPEG files, or directories of them")
    parser.add_argument("--json", action="store_true",
                        help="one JSON record per picture: file, number, rejected (true: "
                             "'not a number'), and each digit's x (the picture's column), "
                             "column (the sweep's answer) and confidence")
    parser.add_argument("--figure", default=None, metavar="DIR",
                        help="also draw, for each picture, its strip, the sweep's answers "
                             "and the digits read (as the paper's Fig. 22-24) into DIR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cli.tolerant_console()
    args = parse_args(argv)
    return cli.guarded("lenet-jax read", lambda: read(args))


def read(args: argparse.Namespace) -> int:
    from lenet_jax import evaluation, reading

    if args.figure is not None and (problem := cli.unwritable(args.figure, "--figure")):
        return cli.fail("lenet-jax read", problem)
    runtime.enable_compilation_cache()
    cli.quiet_libraries()
    with runtime.phase("init"):
        reader = (reading.NumberReader.load(args.ckpt) if args.ckpt is not None
                  else reading.NumberReader.pretrained(args.pretrained or "original"))
    read_files, pictures, problems = evaluation.read_pictures(args.pictures,
                                                              evaluation.number_strip)
    for problem in problems:
        cli.fail("lenet-jax read", problem)
    with runtime.phase("work"):
        numbers = reader.read(pictures)
        for file, number in zip(read_files, numbers, strict=True):
            print(json.dumps({"file": str(file)} | number.to_json()) if args.json
                  else f"{cli.one_line(str(file))}: {number}")
    if args.figure is not None:
        try:
            Path(args.figure).mkdir(parents=True, exist_ok=True)
            for index, (file, number) in enumerate(zip(read_files, numbers, strict=True)):
                reader.plot(number, Path(args.figure) / f"{index:03d}-{file.stem[:60]}.png",
                            cli.one_line(file.name))
        except OSError as err:
            return cli.fail("lenet-jax read", f"cannot write to --figure {args.figure}: "
                            f"{err.strerror or err}", cli.EXIT_WRITE)
    return cli.EXIT_USAGE if problems else cli.EXIT_OK

"""``lenet-jax COMMAND ...`` and ``python -m lenet_jax COMMAND ...``: one entry point for
the seven command lines, each with exactly its own flags, messages and exit codes."""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

from lenet_jax import cli

# command -> (module of its command line, what it does)
COMMANDS = {
    "train": ("lenet_jax.cli.train", "train a preset on MNIST or Fashion-MNIST"),
    "evaluate": ("lenet_jax.cli.evaluate", "report on a checkpoint, or read your pictures"),
    "serve": ("lenet_jax.cli.serve", "a page to draw digits on, and its JSON endpoint"),
    "export": ("lenet_jax.cli.export", "a jax.export artefact (and a SavedModel)"),
    "info": ("lenet_jax.cli.info", "the trained models shipped in the package, their cards"),
    "site": ("lenet_jax.cli.site", "the page as a static folder: the model runs in the browser"),
    "read": ("lenet_jax.cli.read", "read the numbers written in your pictures"),
}


def usage() -> str:
    lines = [f"  {name:9s} {what}" for name, (_, what) in COMMANDS.items()]
    return ("usage: lenet-jax {train,evaluate,serve,export,info,site,read} ... | --version\n\n"
            "commands:\n" + "\n".join(lines) + "\n\n'lenet-jax COMMAND --help' lists a "
            "command's flags.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        import lenet_jax

        print(f"lenet-jax {lenet_jax.__version__}")
        return cli.EXIT_OK
    if argv[:1] in (["--help"], ["-h"]):
        print(usage())
        return cli.EXIT_OK
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}" if argv else "a command is needed"
        return cli.fail("lenet-jax", f"{given}; choose train, evaluate, serve, export, info, "
                                     "site or read (--help says what each does)")
    command = argv[0]
    return cli.guarded("lenet-jax", lambda: importlib.import_module(COMMANDS[command][0])
                       .main(argv[1:]))


def console() -> NoReturn:
    """The ``lenet-jax`` console script: ``main`` as the process (``cli.run``)."""
    cli.run(main)


if __name__ == "__main__":
    console()

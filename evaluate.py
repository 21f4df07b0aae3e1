"""Evaluate a checkpoint: ``python evaluate.py --ckpt runs/best``, the same as
``lenet-jax evaluate ...`` (the command line: ``lenet_jax/cli/evaluate.py``)."""

from lenet_jax import cli
from lenet_jax.cli.evaluate import main

if __name__ == "__main__":
    cli.run(main)

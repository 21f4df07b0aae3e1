"""Train a LeNet-5 variant on MNIST: ``python train.py --epochs 10 --preset original``, the
same as ``lenet-jax train ...`` (the command line: ``lenet_jax/cli/train.py``)."""

from lenet_jax import cli
from lenet_jax.cli.train import main

if __name__ == "__main__":
    cli.run(main)

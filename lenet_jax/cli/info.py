"""``lenet-jax info``: the trained models shipped in the package, and one's card
(``lenet-jax info original``, ``lenet-jax info fashion_mnist/relu_avgpool_pad2``).

Exit codes (``lenet_jax.cli``): 0 done, 2 no such shipped model.
"""

from __future__ import annotations

import argparse

from lenet_jax import cli


def main(argv: list[str] | None = None) -> int:
    cli.tolerant_console()
    parser = cli.ArgumentParser(prog="lenet-jax info",
                                description="The trained models shipped in lenet-jax.")
    parser.add_argument("name", nargs="?", default=None,
                        help="a preset (trained on MNIST) or DATASET/PRESET: its card")
    args = parser.parse_args(argv)
    return cli.guarded(parser.prog, lambda: info(args))


def info(args: argparse.Namespace) -> int:
    from lenet_jax import zoo

    if args.name is not None:
        print(zoo.describe(*zoo.parse_name(args.name)))
        return 0
    print(f"{'name':38s} {'test accuracy':>13s}   its recipe over 5 seeds")
    for dataset, shipped in zoo.cards().items():
        for preset, card in shipped.items():
            name = preset if dataset == "mnist" else f"{dataset}/{preset}"
            five = card["five_seeds"]
            print(f"{name:38s} {100 * card['test_accuracy']:12.2f}%   "
                  f"{five['mean']:.2f} ± {five['std']:.2f}%")
    for preset, card in zoo.cards(zoo.NUMBERS_CARDS).get(zoo.NUMBERS, {}).items():
        print(f"\n{zoo.NUMBERS}/{preset}: reads whole numbers (lenet-jax read), "
              f"{100 * card['numbers_read']:.2f}% of test strips of 1-6 digits exactly")
    print("\n'lenet-jax info NAME' shows a card; load one with "
          "lenet_jax.pretrained(\"original\") or --pretrained NAME.")
    return 0

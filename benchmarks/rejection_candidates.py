"""The "not a digit" candidates side by side on checkpoints: each score is calibrated as
training calibrates the chosen one (its quantile on the MNIST validation slice, Gaussians
fitted there too), then judged on the MNIST test digits and, per source, on a set of
``benchmarks/style_sets.py`` (``dev`` to choose; ``held-out`` only to report).

    python benchmarks/rejection_candidates.py --ckpt runs/best [--ckpt ...] [--set dev]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import style_sets  # noqa: E402
from lenet_jax import data, evaluation, models, rejection  # noqa: E402

QUANTILES = (0.99, 0.995)


def features(predictor: evaluation.Predictor, images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: logits, F6, S4 flattened and the map statistics."""
    @jax.jit
    def of_chunk(chunk):
        x = models.preprocess(chunk, predictor.module.preset)
        logits, kept = predictor.module.apply({"params": predictor.params}, x, mutable=["maps"])
        layers = kept["maps"]["layers"]
        return {"logits": logits, "F6": layers["F6"], "S4": layers["S4"].reshape(len(chunk), -1),
                "map statistics": rejection.map_statistics(layers)}

    parts = [of_chunk(images[i:i + 500]) for i in range(0, len(images), 500)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def scores(name: str, val: dict, val_labels: np.ndarray) -> callable:
    """Higher = less like a digit: the candidate ``name`` as a function of features."""
    if name == "maximum softmax probability":
        return lambda f: -np.asarray(jax.nn.softmax(f["logits"])).max(1)
    if name == "energy":
        return lambda f: -np.asarray(jax.nn.logsumexp(f["logits"], axis=1))
    if name == "largest logit":
        return lambda f: -f["logits"].max(1)
    layer = name.removeprefix("Mahalanobis on ")
    rule = rejection.fit(val[layer], val_labels)
    return lambda f: rule.distance(f[layer])


CANDIDATES = ("maximum softmax probability", "energy", "largest logit",
              "Mahalanobis on map statistics", "Mahalanobis on F6", "Mahalanobis on S4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", action="append", required=True)
    parser.add_argument("--set", default="dev", choices=style_sets.SETS)
    args = parser.parse_args()
    mnist = data.load("mnist")
    pictures = style_sets.read(args.set)
    for ckpt in args.ckpt:
        predictor = evaluation.Predictor.load(ckpt)
        val_split = mnist.train.take(slice(-predictor.metadata["config"]["val_size"], None))
        val, test = features(predictor, val_split.images), features(predictor, mnist.test.images)
        sources = {s: features(predictor, images) for s, (_, images, _) in pictures.items()}
        config = predictor.metadata["config"]
        print(f"\n{ckpt}: {config['preset']}, not_digits {config.get('not_digits', 0)}, "
              f"test {100 * predictor.metadata['metrics']['test_accuracy']:.2f}%")
        print(f"{'candidate':32s} {'q':>6s} {'MNIST':>6s} " +
              " ".join(f"{s[:9]:>9s}" for s in pictures))
        for name in CANDIDATES:
            score = scores(name, val, val_split.labels)
            for q in QUANTILES:
                threshold = np.quantile(score(val), q)
                cells = [100 * np.mean(score(sources[s]) > threshold) for s in pictures]
                print(f"{name:32s} {q:6.3f} {100 * np.mean(score(test) > threshold):5.2f}% "
                      + " ".join(f"{c:8.1f}%" for c in cells))


if __name__ == "__main__":
    main()

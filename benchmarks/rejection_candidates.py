"""The "not a digit" candidates of issue #13, side by side on one checkpoint: each is
calibrated as training calibrates the chosen one (a score's 99.5% quantile on the
validation slice, Gaussians fitted there too) and then judged on the MNIST test digits
and on ``rejection.non_digit_pictures`` read through the image reader.

    python benchmarks/rejection_candidates.py --ckpt runs/best
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lenet_jax import data, evaluation, models, rejection  # noqa: E402


def features(predictor: evaluation.Predictor, images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: the softmax, F6, S4 flattened and the chosen map statistics."""
    @jax.jit
    def of_chunk(chunk):
        x = models.preprocess(chunk, predictor.module.preset)
        logits, kept = predictor.module.apply({"params": predictor.params}, x, mutable=["maps"])
        layers = kept["maps"]["layers"]
        return {"softmax": jax.nn.softmax(logits), "logits": logits, "F6": layers["F6"],
                "S4": layers["S4"].reshape(len(chunk), -1),
                "map statistics": rejection.map_statistics(layers)}

    parts = [of_chunk(images[i:i + 500]) for i in range(0, len(images), 500)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def scores(name: str, val: dict, val_labels: np.ndarray, *splits: dict) -> list[np.ndarray]:
    """Higher = less like a digit, for the validation slice and then each split."""
    if name == "maximum softmax probability":
        return [-s["softmax"].max(1) for s in (val, *splits)]
    if name == "RBF distance (original)":
        return [-s["logits"].max(1) for s in (val, *splits)]
    rule = rejection.fit(val[name], val_labels)
    return [rule.distance(s[name]) for s in (val, *splits)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    args = parser.parse_args()
    predictor = evaluation.Predictor.load(args.ckpt)
    mnist = data.load("mnist")
    val_split = mnist.train.take(slice(-predictor.metadata["config"]["val_size"], None))
    val, test = features(predictor, val_split.images), features(predictor, mnist.test.images)
    kinds, pictures = evaluation.read_non_digits()  # every one is read: none is blank
    pictures = np.stack(pictures)
    other = features(predictor, pictures)
    names = ["maximum softmax probability", "F6", "S4", "map statistics"]
    if predictor.module.preset.head == "rbf":
        names.insert(1, "RBF distance (original)")
    print(f"{'candidate':30s} {'digits':>7s} {'non-digits':>10s}  " +
          " ".join(f"{k:>7s}" for k in dict.fromkeys(kinds)))
    for name in names:
        v, t, o = scores(name, val, val_split.labels, test, other)
        threshold = np.quantile(v, rejection.QUANTILE)
        refused = o > threshold
        print(f"{name:30s} {100 * np.mean(t > threshold):6.2f}% {100 * refused.mean():9.1f}%  "
              + " ".join(f"{100 * refused[kinds == k].mean():6.0f}%" for k in dict.fromkeys(kinds)))


if __name__ == "__main__":
    main()

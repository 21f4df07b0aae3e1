""""Not a digit": the rejection rule each checkpoint carries.

The network always answers one of its ten classes, noise included. The rule is a
class-conditional Gaussian with one shared covariance (Lee et al., 2018, "A simple
unified framework for detecting out-of-distribution samples and adversarial attacks")
over the mean and standard deviation of every feature map of C1, S2, C3 and S4 (88
numbers for LeNet-5: how much of each learned stroke and edge the image holds). Training
fits it on the validation slice at each checkpoint; an image whose squared Mahalanobis
distance to the nearest class mean is beyond the ``QUANTILE`` of the validation digits'
is "not a digit". The candidates measured against it (maximum softmax probability, F6,
S4's 400 values, the RBF distance) are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lenet_jax.errors import UserError

STATISTIC_LAYERS = ("C1", "S2", "C3", "S4")
QUANTILE = 0.995  # of the validation digits' distances: ~0.5% of digits rejected
SHRINKAGE = 0.01  # towards a scaled identity, so a small slice still gives an inverse


def map_statistics(maps: dict[str, jax.Array]) -> jax.Array:
    """(N, 2 * maps) the mean and standard deviation of each map of ``STATISTIC_LAYERS``,
    from the NHWC maps ``LeNet.show`` keeps."""
    return jnp.concatenate([jnp.concatenate([maps[layer].mean((1, 2)), maps[layer].std((1, 2))],
                                            axis=-1) for layer in STATISTIC_LAYERS], axis=-1)


@dataclasses.dataclass(frozen=True)
class Rule:
    means: np.ndarray  # (classes seen, D) the statistics' mean per class
    precision: np.ndarray  # (D, D) the inverse of the shared, shrunk covariance
    threshold: float  # the largest squared distance a digit may have

    def distance(self, statistics: np.ndarray) -> np.ndarray:
        """(N,) the squared Mahalanobis distance to the nearest class mean."""
        s = np.asarray(statistics, np.float64)
        sp = s @ self.precision
        to_mean = (sp * s).sum(1)[:, None] - 2 * sp @ self.means.T
        return (to_mean + np.einsum("kd,de,ke->k", self.means, self.precision, self.means)).min(1)

    def rejects(self, statistics: np.ndarray) -> np.ndarray:
        """(N,) True where the image is not a digit."""
        return self.distance(statistics) > self.threshold

    def to_json(self) -> dict:
        return {"kind": "mahalanobis_map_statistics", "layers": list(STATISTIC_LAYERS),
                "quantile": QUANTILE, "shrinkage": SHRINKAGE, "threshold": self.threshold,
                "means": self.means.tolist(), "precision": self.precision.tolist()}


def fit(statistics: np.ndarray, labels: np.ndarray) -> Rule:
    """The rule for these digits' statistics (from ``map_statistics``) and labels."""
    s, labels = np.asarray(statistics, np.float64), np.asarray(labels)
    classes = np.unique(labels)
    means = np.stack([s[labels == k].mean(0) for k in classes])
    centred = s - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / len(s)
    dims = len(covariance)
    shrunk = ((1 - SHRINKAGE) * covariance
              + SHRINKAGE * np.trace(covariance) / dims * np.eye(dims))
    rule = Rule(means, np.linalg.pinv(shrunk, hermitian=True), np.inf)
    return dataclasses.replace(rule, threshold=float(np.quantile(rule.distance(s), QUANTILE)))


class RuleError(UserError, ValueError):
    """Checkpoint metadata whose rejection rule cannot be used."""


def from_metadata(metadata: dict) -> Rule | None:
    """The checkpoint's rule, or None for one saved without (before the rule existed, or
    trained without a validation slice)."""
    record = metadata.get("rejection")
    if record is None:
        return None
    try:
        means = np.asarray(record["means"], np.float64)
        precision = np.asarray(record["precision"], np.float64)
        threshold = float(record["threshold"])
    except (KeyError, TypeError, ValueError) as err:
        raise RuleError(f"the rejection rule in the metadata is damaged ({err})") from None
    if means.ndim != 2 or precision.shape != (means.shape[1],) * 2 or np.isnan(threshold):
        raise RuleError(f"the rejection rule in the metadata has shapes {means.shape} and "
                        f"{precision.shape}")
    return Rule(means, precision, threshold)


def non_digit_pictures(seed: int = 0) -> list[tuple[str, Any]]:
    """(kind, PIL picture) for 90 pictures that are not digits: 25 of uniform noise, 25
    blank pages with specks, 25 filled shapes and 15 letters in PIL's default font."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    pictures = [("noise", Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)))
                for _ in range(25)]
    for _ in range(25):
        page = np.full((64, 64), 255, np.uint8)
        rows, cols = rng.integers(0, 64, (2, 6))
        page[rows, cols] = 0
        pictures.append(("specks", Image.fromarray(page)))
    for n in range(25):
        shape = Image.new("L", (64, 64), 255)
        box = [*rng.integers(5, 25, 2), *rng.integers(40, 60, 2)]
        draw = ImageDraw.Draw(shape)
        (draw.ellipse if n % 2 else draw.rectangle)(box, fill=0)
        pictures.append(("shape", shape))
    font = ImageFont.load_default()
    for letter in "ACEFHKMNPRUVWXY":
        page = Image.new("L", (16, 16), 255)
        ImageDraw.Draw(page).text((3, 1), letter, fill=0, font=font)
        pictures.append(("letter", page))
    return pictures

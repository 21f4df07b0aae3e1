""""Not a digit": the rejection rule each checkpoint carries, one of three kinds.

- ``energy`` (presets trained with outlier exposure, ``TrainConfig.not_digits``): the
  network was taught to spread its belief over all ten classes for non-digits, so a low
  ``logsumexp`` of the logits (a high free energy: Liu et al., 2020, "Energy-based
  out-of-distribution detection") marks one, and so does a low top-class probability
  (Hendrycks and Gimpel, 2017): a picture near all ten codes at once has a low energy
  but no favourite, and so does ink in pieces (``largest_piece``): a digit is written in
  one or two strokes that touch, noise and specks scatter. For ``original`` the energy
  is a soft minimum of F6's squared distances to the ten RBF codes.
- ``mahalanobis_map_statistics`` (the others): a class-conditional Gaussian with one
  shared covariance (Lee et al., 2018) over the mean and standard deviation of every
  feature map of C1, S2, C3 and S4 (88 numbers for LeNet-5).
- ``rubbish_class`` (networks trained with the paper's MAP criterion, ``--recipe paper``):
  the paper's own. The criterion's constant j is a class of its own, so its posterior
  e^-j / (e^-j + sum_i e^-y_i) says how likely a picture is rubbish; above 1/2 it is
  likelier than all ten digits together, and refused. Nothing is fitted.

The first two are calibrated the same way: training fits it on the validation slice at each
checkpoint, and an image scoring beyond the ``QUANTILE`` of the validation digits' scores
(the energy rule: beyond any of its three quantiles) is "not a digit". The candidates
measured against each other, on pictures of other styles, are in benchmarks/RESULTS.md
("not a digit").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy.special import logsumexp

from lenet_jax.errors import UserError
from lenet_jax.models import MAP_LAYERS

ENERGY, MAHALANOBIS, RUBBISH = "energy", "mahalanobis_map_statistics", "rubbish_class"
RUBBISH_THRESHOLD = 0.5  # the rubbish class likelier than every digit together
STATISTIC_LAYERS = MAP_LAYERS  # C1, S2, C3 and S4
QUANTILE = 0.995  # of the validation digits' distances: ~0.5% of digits rejected
# The energy rule's two: each refuses 0.3% of the validation digits, about 0.5% together
# (they overlap); chosen on benchmarks/style_sets.py's dev set (benchmarks/RESULTS.md).
ENERGY_QUANTILE, CONFIDENCE_QUANTILE = 0.997, 0.003
# and the ink's largest piece: 0.1% of the validation digits are in more pieces than this
PIECE_QUANTILE = 0.001
INK_LEVEL = 64  # of 255: what counts as ink when its pieces are counted
SHRINKAGE = 0.01  # towards a scaled identity, so a small slice still gives an inverse


def map_statistics(maps: dict[str, jax.Array]) -> jax.Array:
    """(N, 2 * maps) the mean and standard deviation of each map of ``STATISTIC_LAYERS``,
    from the NHWC maps ``LeNet.keep_map`` keeps."""
    return jnp.concatenate([jnp.concatenate([maps[layer].mean((1, 2)), maps[layer].std((1, 2))],
                                            axis=-1) for layer in STATISTIC_LAYERS], axis=-1)


@dataclasses.dataclass(frozen=True)
class Rule:
    kind: str  # "energy", "mahalanobis_map_statistics" or "rubbish_class"
    threshold: float  # the largest score a digit may have
    confidence: float = 0.0  # energy: the smallest top-class probability a digit may have
    whole: float = 0.0  # energy: the smallest share of its ink a digit's largest piece holds
    rubbish: float = 0.0  # rubbish_class: j, the MAP criterion's constant
    logit_scale: float = 1.0  # rubbish_class: logits = -logit_scale x the penalties
    means: np.ndarray | None = None  # (classes seen, D) the statistics' mean per class
    precision: np.ndarray | None = None  # (D, D) the inverse of the shared, shrunk covariance

    @property
    def needs_statistics(self) -> bool:
        """Whether ``score`` reads the map statistics (else the logits alone)."""
        return self.kind == MAHALANOBIS

    def score(self, logits: np.ndarray, statistics: np.ndarray | None = None) -> np.ndarray:
        """(N,) higher is less like a digit: the free energy, the squared distance, or the
        rubbish class's posterior."""
        if self.kind == ENERGY:
            return -logsumexp(np.asarray(logits, np.float64), axis=-1)
        if self.kind == RUBBISH:
            return rubbish_posterior(logits, self.rubbish, self.logit_scale)
        return self.distance(statistics)

    def rejects(self, logits: np.ndarray, statistics: np.ndarray | None = None,
                images: np.ndarray | None = None) -> np.ndarray:
        """(N,) True where the image is not a digit; ``images`` (N, 28, 28, 1), the uint8
        pictures the logits are of, for an energy rule that counts the ink's pieces."""
        rejected = self.score(logits, statistics) > self.threshold
        if self.kind == ENERGY:
            rejected |= top_probability(logits) < self.confidence
            if self.whole > 0:
                if images is None:
                    raise ValueError("this rule counts the ink's pieces: give it the images")
                rejected |= largest_piece(images) < self.whole
        return rejected

    def distance(self, statistics: np.ndarray) -> np.ndarray:
        """(N,) the squared Mahalanobis distance to the nearest class mean."""
        s = np.asarray(statistics, np.float64)
        sp = s @ self.precision
        to_mean = (sp * s).sum(1)[:, None] - 2 * sp @ self.means.T
        return (to_mean + np.einsum("kd,de,ke->k", self.means, self.precision, self.means)).min(1)

    def to_json(self) -> dict:
        if self.kind == RUBBISH:
            return {"kind": RUBBISH, "threshold": self.threshold, "rubbish": self.rubbish,
                    "logit_scale": self.logit_scale}
        if self.kind == ENERGY:
            return {"kind": ENERGY, "quantile": ENERGY_QUANTILE, "threshold": self.threshold,
                    "confidence_quantile": CONFIDENCE_QUANTILE, "confidence": self.confidence,
                    "piece_quantile": PIECE_QUANTILE, "ink_level": INK_LEVEL,
                    "whole": self.whole}
        return {"kind": MAHALANOBIS, "layers": list(STATISTIC_LAYERS),
                "quantile": QUANTILE, "shrinkage": SHRINKAGE, "threshold": self.threshold,
                "means": self.means.tolist(), "precision": self.precision.tolist()}


def fit(statistics: np.ndarray, labels: np.ndarray) -> Rule:
    """The Mahalanobis rule for these digits' statistics (``map_statistics``) and labels."""
    s, labels = np.asarray(statistics, np.float64), np.asarray(labels)
    classes = np.unique(labels)
    means = np.stack([s[labels == k].mean(0) for k in classes])
    centred = s - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / len(s)
    dims = len(covariance)
    shrunk = ((1 - SHRINKAGE) * covariance
              + SHRINKAGE * np.trace(covariance) / dims * np.eye(dims))
    rule = Rule(MAHALANOBIS, np.inf, means=means,
                precision=np.linalg.pinv(shrunk, hermitian=True))
    return dataclasses.replace(rule, threshold=float(np.quantile(rule.distance(s), QUANTILE)))


def fit_energy(logits: np.ndarray, images: np.ndarray) -> Rule:
    """The energy rule for these digits' logits and uint8 pictures (N, 28, 28, 1)."""
    energy = Rule(ENERGY, np.inf).score(logits)
    return Rule(ENERGY, float(np.quantile(energy, ENERGY_QUANTILE)),
                confidence=float(np.quantile(top_probability(logits), CONFIDENCE_QUANTILE)),
                whole=float(np.quantile(largest_piece(images), PIECE_QUANTILE)))


def largest_piece(images: np.ndarray) -> np.ndarray:
    """(N,) the share of each picture's ink (pixels above ``INK_LEVEL``, weighed by their
    level) that its largest 8-connected piece holds; 1 for a picture with no ink."""
    images = np.asarray(images)
    images = images.reshape(images.shape[:3])  # (N, 28, 28, 1) or (N, 28, 28)
    shares = np.ones(len(images))
    for n, image in enumerate(images):
        inked = image > INK_LEVEL
        pieces, count = ndimage.label(inked, structure=np.ones((3, 3)))
        if count > 1:
            mass = ndimage.sum_labels(image.astype(np.float64), pieces, range(1, count + 1))
            shares[n] = mass.max() / mass.sum()
    return shares


def rubbish_rule(rubbish: float, logit_scale: float) -> Rule:
    """The paper's rule for a network trained with the MAP criterion's constant
    ``rubbish`` (j), whose logits are ``-logit_scale`` x the penalties."""
    return Rule(RUBBISH, RUBBISH_THRESHOLD, rubbish=rubbish, logit_scale=logit_scale)


def rubbish_posterior(logits: np.ndarray, rubbish: float, logit_scale: float) -> np.ndarray:
    """(N,) e^-j / (e^-j + sum_i e^-y_i), the penalties y_i = -logits / logit_scale
    (``lenet_jax.paper.rubbish_posterior``, in float64 on the host)."""
    penalties = -np.asarray(logits, np.float64) / logit_scale
    both = np.concatenate([np.full(penalties.shape[:-1] + (1,), -rubbish), -penalties], -1)
    return np.exp(-rubbish - logsumexp(both, axis=-1))


def top_probability(logits: np.ndarray) -> np.ndarray:
    """(N,) the softmax's largest probability."""
    logits = np.asarray(logits, np.float64)
    return np.exp(logits.max(-1) - logsumexp(logits, axis=-1))


class RuleError(UserError, ValueError):
    """Checkpoint metadata whose rejection rule cannot be used."""


def from_metadata(metadata: dict) -> Rule | None:
    """The checkpoint's rule, or None for one saved without (before the rule existed, or
    trained without a validation slice)."""
    record = metadata.get("rejection")
    if record is None:
        return None
    try:
        kind = record.get("kind", MAHALANOBIS)
        threshold = float(record["threshold"])
        confidence = float(record.get("confidence", 0.0))  # saved before it existed: none
        whole = float(record.get("whole", 0.0))  # likewise
        rubbish = float(record.get("rubbish", 0.0))
        logit_scale = float(record.get("logit_scale", 1.0))
        if (kind not in (ENERGY, MAHALANOBIS, RUBBISH)
                or np.isnan([threshold, confidence, whole, rubbish]).any() or not logit_scale > 0):
            raise RuleError(f"the rejection rule in the metadata is damaged (kind {kind!r}, "
                            f"threshold {threshold}, confidence {confidence}, whole {whole}, "
                            f"rubbish {rubbish}, logit scale {logit_scale})")
        means = precision = None
        if kind == MAHALANOBIS:
            means = np.asarray(record["means"], np.float64)
            precision = np.asarray(record["precision"], np.float64)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise RuleError(f"the rejection rule in the metadata is damaged ({err})") from None
    if kind == MAHALANOBIS and (means.ndim != 2 or precision.shape != (means.shape[1],) * 2):
        raise RuleError(f"the rejection rule in the metadata has shapes {means.shape} and "
                        f"{precision.shape}")
    return Rule(kind, threshold, confidence, whole, rubbish, logit_scale, means=means,
                precision=precision)


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

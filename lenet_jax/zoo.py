"""Trained weights shipped inside the package: every preset on MNIST, and the best
Fashion-MNIST preset, each with a card (its recipe, command, seed, test accuracy, and the
recipe's 5-seed mean ± std). No network and no training:

    import lenet_jax
    model, params, metadata = lenet_jax.pretrained("original")
    probabilities = lenet_jax.predict(model, params, uint8_images)

Each file's SHA-256 is on its card and checked on every load. ``benchmarks/pretrained.py``
trains them from the project's own recipes and writes ``lenet_jax/trained/``.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from lenet_jax.errors import UserError

CARDS = "cards.json"
# Readers of whole numbers (lenet_jax.reading), "numbers/PRESET": trained on MNIST's
# digits too, but cards of their own, apart from the single-digit models'.
NUMBERS = "numbers"
NUMBERS_CARDS = "numbers.json"


class PretrainedError(UserError, LookupError):
    """No shipped model of that name, or its file is damaged; the message says which."""


def _folder():
    return resources.files("lenet_jax") / "trained"


def cards(file: str = CARDS) -> dict[str, dict[str, dict]]:
    """dataset -> preset -> card, for every shipped single-digit model (of
    ``NUMBERS_CARDS``: the number readers, under "numbers")."""
    try:
        return json.loads((_folder() / file).read_text())
    except (OSError, ValueError) as err:
        raise PretrainedError(f"the package's cards of trained weights are unreadable "
                              f"({err}); reinstall lenet-jax") from None


def card(preset: str, dataset: str = "mnist") -> dict:
    """The card of the shipped ``preset`` trained on ``dataset`` (``NUMBERS``: the number
    reader of that preset)."""
    shipped = cards(NUMBERS_CARDS if dataset == NUMBERS else CARDS)
    if preset not in shipped.get(dataset, {}):
        names = "; ".join(f"{d}: {', '.join(sorted(p))}" for d, p in shipped.items())
        raise PretrainedError(f"no trained {preset!r} on {dataset} is shipped (shipped: "
                              f"{names})")
    return shipped[dataset][preset]


def parse_name(name: str) -> tuple[str, str]:
    """(preset, dataset) of a command line's ``--pretrained`` value: ``PRESET`` (MNIST) or
    ``DATASET/PRESET``."""
    dataset, _, preset = name.rpartition("/")
    return preset, dataset or "mnist"


def weights_digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def restore(preset: str, dataset: str = "mnist") -> tuple[Any, dict]:
    """(params, metadata) of a shipped model, its file checked against the card's SHA-256;
    the metadata is what its checkpoint held (normalisation, "not a digit" rule, ...)."""
    import jax
    import jax.numpy as jnp
    from flax import serialization

    entry = card(preset, dataset)
    params = serialization.msgpack_restore(_checked(entry["file"], entry["sha256"], preset,
                                                    dataset))
    return jax.tree.map(jnp.asarray, params), metadata(preset, dataset)


def metadata(preset: str, dataset: str = "mnist") -> dict:
    """What a shipped model's checkpoint held besides its weights (preset, normalisation,
    metrics, "not a digit" rule), from the JSON file beside them, digest-checked."""
    entry = card(preset, dataset)
    file = str(Path(entry["file"]).with_suffix(".json"))
    return json.loads(_checked(file, entry["metadata_sha256"], preset, dataset))


def _checked(file: str, sha256: str, preset: str, dataset: str) -> bytes:
    try:
        blob = (_folder() / file).read_bytes()
    except OSError as err:
        raise PretrainedError(f"the trained {preset} ({dataset}) is missing from the "
                              f"package ({err.strerror or err}); reinstall lenet-jax") from None
    if weights_digest(blob) != sha256:
        raise PretrainedError(f"the trained {preset} ({dataset}) is damaged: the SHA-256 of "
                              f"{file} is not the card's; reinstall lenet-jax")
    return blob


def pretrained(preset: str = "original", dataset: str = "mnist") -> tuple[Any, Any, dict]:
    """(model, params, metadata) of a shipped model, ready for ``lenet_jax.predict``."""
    from lenet_jax import models

    params, metadata = restore(preset, dataset)
    model, _ = models.create_model(metadata["preset"])
    return model, params, metadata


def describe(preset: str, dataset: str = "mnist") -> str:
    """The card as lines a person reads (``lenet-jax info``)."""
    c = card(preset, dataset)
    if dataset == NUMBERS:
        return "\n".join([
            f"{preset} reading whole numbers, shipped in lenet-jax (lenet-jax read)",
            f"  numbers read    {100 * c['numbers_read']:.2f}% of {c['test_strips']:,} test "
            f"strips of 1-6 digits, exactly, after pass {c['epoch']} of {c['epochs']}",
            f"  single digits   {100 * c['test_accuracy']:.2f}% of the MNIST test set",
            f"  trained by      {c['command']}",
            f"  file            lenet_jax/trained/{c['file']} ({c['bytes']:,} bytes, sha256 "
            f"{c['sha256'][:16]}...)",
        ])
    five = c["five_seeds"]
    rule = (metadata(preset, dataset).get("rejection") or {}).get("kind", "none")
    return "\n".join([
        f"{preset} trained on {dataset}, shipped in lenet-jax",
        f"  test accuracy   {100 * c['test_accuracy']:.2f}% ({c['test_errors']} of "
        f"{c['test_examples']:,} wrong), after epoch {c['epoch']} of {c['epochs']}",
        f"  its recipe      {five['mean']:.2f} ± {five['std']:.2f}% over 5 seeds "
        f"({five['source']})",
        f"  trained by      {c['command']}",
        f"  seed            {c['seed']}",
        f"  recipe          {', '.join(f'{k} {v}' for k, v in c['recipe'].items())}",
        f"  not a digit     {rule}",
        f"  file            lenet_jax/trained/{c['file']} ({c['bytes']:,} bytes, sha256 "
        f"{c['sha256'][:16]}...)",
    ])

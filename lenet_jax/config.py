"""What a training run is set to: ``TrainConfig``, each field with its help text, and each
preset's measured recipe as one complete ``TrainConfig`` in ``RECIPES`` (as big_vision's
configs, with the result each reached). ``recipe(name, **changes)`` is a run's config.

The network itself (layers, input) is the preset (``models.Preset``); nothing here
changes a parameter's shape."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from lenet_jax.data import DATASETS, SPLIT_SIZES
from lenet_jax.errors import UserError
from lenet_jax.models import PRESETS

TRAIN_SIZE = SPLIT_SIZES["train"]
SEEDS = 2**31  # jax.random.key takes a signed 32-bit seed
MAX_STEPS = 2**31 - 1  # Optax counts steps in an int32
Schedule = Literal["constant", "cosine", "paper"]
Optimizer = Literal["adam", "sdlm"]
Loss = Literal["cross_entropy", "map"]
Init = Literal["preset", "paper", "shipped"]
Task = Literal["digits", "numbers"]
Loop = Literal["scan", "step"]


def _setting(default: Any, help: str, **argparse_options: Any) -> Any:  # noqa: A002
    return dataclasses.field(default=default, metadata={"help": help, **argparse_options})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    preset: str = _setting("original", "preset name (below)")
    task: Task = _setting("digits", "digits: one centred digit per image; numbers: the "
                                    "network swept along strips of 1-6 digits, trained "
                                    "with CTC (lenet_jax.reading)")
    strips: int = _setting(30_000, "numbers: strips composed afresh for each pass")
    dataset: str = _setting("mnist", "data set (TFDS name)", choices=DATASETS)
    epochs: int = _setting(10, "passes over the training set")
    batch_size: int = _setting(64, "global batch (divides over the devices)")
    optimizer: Optimizer = _setting("adam", "adam, or sdlm: the paper's stochastic diagonal "
                                            "Levenberg-Marquardt (lenet_jax.paper)")
    learning_rate: float = _setting(1e-3, "learning rate (sdlm: the first pass's eta x the "
                                          "batch size)")
    mu: float = _setting(0.02, "sdlm's mu: the step is eta / (mu + h), h the curvature")
    mu_start_passes: int = _setting(0, "sdlm: passes at mu 1 before mu applies (at the "
                                       "paper's initialisation a small mu diverges at first)",
                                    metavar="PASSES")
    loss: Loss = _setting("cross_entropy", "softmax cross-entropy, or map: the paper's MAP "
                                           "criterion on the output penalties")
    rubbish: float = _setting(0.0, "j of the map loss: the rubbish class's penalty; for "
                                   "numbers, the blank's (its logit is -j)")
    init: Init = _setting("preset", "parameter initialisation: the preset's, paper: "
                                    "Appendix A's uniform +-2.4/fan-in, or shipped: the "
                                    "package's trained weights of the preset")
    weight_decay: float = _setting(
        0.0, "L2 weight decay added to the gradient, as PyTorch's Adam(weight_decay=)")
    schedule: Schedule = _setting("constant", "learning-rate schedule, cosine = warmup then "
                                              "decay to 0, paper = Sec. III-C's rate per "
                                              "pass (times learning_rate / 0.0005)")
    warmup_epochs: float = _setting(0.0, "linear warmup of the cosine schedule, in epochs")
    seed: int = _setting(0, "initialisation, data order, dropout and distortions")
    val_size: int = _setting(5000, "examples held out from the end of train to select "
                                   "runs/best; 0 selects on test")
    limit_train: int = _setting(0, "train on the first N training images only (quick "
                                   "trials); 0: all", metavar="N")
    augment: bool = _setting(False, "random affine distortions on device: shift, rotate, "
                                    "scale (the paper's, Sec. V-B)")
    flip: bool = _setting(False, "random left-right flips of half the training images "
                                 "(right for clothes, wrong for digits)")
    not_digits: float = _setting(0.0, "outlier exposure: weight of a loss that teaches "
                                      "uncertainty on generated non-digits (letters, "
                                      "scribbles, shapes, noise) and the digits of worse "
                                      "pictures (lenet_jax.outliers); 0: off",
                                 metavar="WEIGHT")
    devices: int = _setting(0, "data-parallel over this many devices (default 0: all "
                               "visible); the batch size must divide by it")
    # "step" stays for a progress bar that moves every batch and for profiling one step.
    loop: Loop = _setting("scan", "epoch as one lax.scan call, or one jit'd call per batch "
                                  "(same result up to float rounding; scan measured faster)")

    def distortions(self) -> tuple[str, ...]:
        """What distorts each training batch (``training.distort``)."""
        return ("affine",) * self.augment + ("flip",) * self.flip

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first setting that cannot work."""
        if self.preset not in PRESETS:
            raise ConfigError("preset", self.preset, "unknown {name} {value!r}; valid presets: "
                              + ", ".join(PRESETS))
        if self.epochs <= 0:
            raise ConfigError("epochs", self.epochs, "{name} must be positive, got {value}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError("learning_rate", self.learning_rate,
                              "{name} must be positive and finite, got {value}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError("weight_decay", self.weight_decay,
                              "{name} must be 0 or positive, got {value}")
        if not 0 <= self.warmup_epochs < self.epochs:  # NaN fails too
            raise ConfigError("warmup_epochs", self.warmup_epochs,
                              f"{{name}} must be in [0, {self.epochs}) (the epochs), got "
                              "{value}")
        if not 0 <= self.seed < SEEDS:
            raise ConfigError("seed", self.seed, f"{{name}} must be in [0, {SEEDS}), got {{value}}")
        if not 0 <= self.val_size < TRAIN_SIZE:
            raise ConfigError("val_size", self.val_size,
                              f"{{name}} must be in [0, {TRAIN_SIZE}), got {{value}}")
        train_size = TRAIN_SIZE - self.val_size
        if not 0 <= self.limit_train <= train_size:
            raise ConfigError("limit_train", self.limit_train,
                              f"{{name}} must be in [0, {train_size}], got {{value}}")
        train_size = self.limit_train or train_size
        if not 0 < self.batch_size <= train_size:
            raise ConfigError("batch_size", self.batch_size, f"{{name}} must be in [1, "
                              f"{train_size}] (the training set), got {{value}}")
        if not (self.mu > 0 and math.isfinite(self.mu)):
            raise ConfigError("mu", self.mu, "{name} must be positive, got {value}")
        if self.mu_start_passes < 0:
            raise ConfigError("mu_start_passes", self.mu_start_passes,
                              "{name} must be 0 or positive, got {value}")
        if not (self.rubbish >= 0 and math.isfinite(self.rubbish)):
            raise ConfigError("rubbish", self.rubbish,
                              "{name} must be 0 or positive, got {value}")
        if not (self.not_digits >= 0 and math.isfinite(self.not_digits)):
            raise ConfigError("not_digits", self.not_digits,
                              "{name} must be 0 or positive, got {value}")
        if self.not_digits and self.dataset != "mnist":
            raise ConfigError("not_digits", self.not_digits,
                              f"{{name}} teaches what is not a digit: for mnist, not "
                              f"{self.dataset}")
        if self.task == "numbers":
            self._validate_numbers()
        if self.devices < 0:
            raise ConfigError("devices", self.devices,
                              "{name} must be 0 (all) or positive, got {value}")
        steps = -(-train_size // self.batch_size)
        if self.epochs * steps > MAX_STEPS:
            raise ConfigError("epochs", self.epochs,
                              f"{{name}} must be at most {MAX_STEPS // steps:,} at this batch "
                              "size (the step count is a 32-bit integer), got {value}")


    def _validate_numbers(self) -> None:
        if PRESETS[self.preset].c5 != "conv":
            sweeps = ", ".join(n for n, p in PRESETS.items() if p.c5 == "conv")
            raise ConfigError("task", self.task, f"{{name}} {{value}} sweeps C5 along a strip, "
                              f"so it needs a convolutional C5 ({sweeps}), not "
                              f"{self.preset!r}")
        if self.dataset != "mnist":
            raise ConfigError("dataset", self.dataset,
                              "numbers are composed from MNIST digits, not {value}")
        for field in ("augment", "flip", "not_digits"):
            if getattr(self, field):
                raise ConfigError(field, getattr(self, field), "{name} is for digits; "
                                  "numbers training does not use it")
        if self.optimizer != "adam" or self.loss != "cross_entropy":
            raise ConfigError("optimizer", self.optimizer, "numbers train with adam and "
                              "CTC; {name} and loss cannot change")
        if self.devices > 1:
            raise ConfigError("devices", self.devices, "numbers train on one device")
        if self.strips < self.batch_size:
            raise ConfigError("strips", self.strips, f"{{name}} must be at least the batch "
                              f"({self.batch_size}), got {{value}}")


class ConfigError(UserError, ValueError):
    """A setting that cannot work: ``field`` of ``TrainConfig``, its ``value``, and
    ``template``, the sentence with ``{name}`` for whatever names the field (the field
    here, its flag in a CLI) and ``{value}``."""

    def __init__(self, field: str, value: Any, template: str):
        self.field, self.value, self.template = field, value, template
        super().__init__(self.said(field))

    def said(self, name: str) -> str:
        return self.template.format(name=name, value=self.value)


class ResumeMismatchError(UserError):
    """A resume whose ``field`` differs from the run's: trained with ``saved``, asked
    for ``asked``."""

    def __init__(self, field: str, saved: Any, asked: Any):
        self.field, self.saved, self.asked = field, saved, asked
        super().__init__(self.said(field))

    def said(self, name: str) -> str:
        return (f"cannot resume: the run was trained with {name}={self.saved!r}, this "
                f"command asks for {self.asked!r}")


# The paper's mu (0.02) diverges here at its rates: mu 1 while eta is the first rate, then
# 0.1, and j 10 measured best on the validation digits (benchmarks/RESULTS.md, "The
# paper's training" and "mu after the start").
PAPER_MU = 0.1
PAPER_MU_START_PASSES = 2  # mu 1 (paper.START_MU) while eta is the first pass's
PAPER_RUBBISH = 10.0

# Each preset's training recipe, complete; `python benchmarks/accuracy_table.py` measured
# each over 5 seeds x 10 epochs on MNIST (test accuracy, mean ± std, benchmarks/ACCURACY.md).
RECIPES: dict[str, TrainConfig] = {
    # 99.20 ± 0.07%. Adam 3e-3 with a cosine schedule and the paper's distortions measured
    # best for the paper's net (the sweep: benchmarks/RESULTS.md, "original's recipe").
    "original": TrainConfig("original", learning_rate=3e-3, schedule="cosine", augment=True,
                            not_digits=0.5),
    "tanh_avgpool": TrainConfig("tanh_avgpool"),  # 98.77 ± 0.10%
    "relu_maxpool": TrainConfig("relu_maxpool"),  # 98.72 ± 0.19%
    "sigmoid_maxpool_28": TrainConfig("sigmoid_maxpool_28"),  # 98.53 ± 0.20%
    # 99.07 ± 0.04%. With non-digits at a constant rate its accuracy fell (98.77-99.00%
    # over 3 seeds); a cosine decay brings it back (benchmarks/RESULTS.md, "Not a digit").
    "relu_avgpool_pad2": TrainConfig("relu_avgpool_pad2", schedule="cosine", not_digits=0.5),
    # 97.74 ± 0.18%, with the write-up's Adam(weight_decay=0.01) (98.78% without: README,
    # "Seed recipes").
    "relu_avgpool_pad2_dropout": TrainConfig("relu_avgpool_pad2_dropout", weight_decay=0.01),
}


# Recipes by name, for any preset: `train.py --preset original --recipe paper`.
NAMED_RECIPES: dict[str, TrainConfig] = {
    # The 1998 paper's training (Sec. II-B, III-C, Appendix A; lenet_jax.paper): the MAP
    # criterion, SDLM at its rate per pass, Appendix A's initialisation, one pattern a
    # step, all 60,000 images, 20 passes.
    "paper": TrainConfig("original", epochs=20, batch_size=1, optimizer="sdlm",
                         learning_rate=5e-4, mu=PAPER_MU,
                         mu_start_passes=PAPER_MU_START_PASSES, schedule="paper", loss="map",
                         rubbish=PAPER_RUBBISH, init="paper", val_size=0),
}


# Reading numbers (#29), for any preset whose C5 is a convolution: from the shipped
# single-digit weights, CTC with a constant blank logit of -6 (the paper's rubbish class,
# no new parameter), 30,000 fresh strips a pass, 120 passes, Adam 1e-3 cosine, a batch of
# single digits beside each batch of strips (benchmarks/RESULTS.md, "Numbers on a GPU",
# "120 passes").
NUMBERS = TrainConfig(task="numbers", epochs=120, learning_rate=1e-3, schedule="cosine",
                      init="shipped", rubbish=6.0)


def recipe(preset: str, name: str | None = None, **changes: Any) -> TrainConfig:
    """Preset ``preset``'s recipe (or recipe ``name`` of ``NAMED_RECIPES`` for it) with
    ``changes``; an unknown preset or name is a ``ConfigError``. With
    ``task="numbers"`` the base is ``NUMBERS``."""
    if preset not in RECIPES:
        TrainConfig(preset).validate()
    if name is not None and name not in NAMED_RECIPES:
        raise ConfigError("recipe", name, "unknown {name} {value!r}; valid recipes: "
                          + ", ".join(NAMED_RECIPES))
    if changes.get("dataset", "mnist") != "mnist":  # non-digits teach nothing about clothes
        changes.setdefault("not_digits", 0.0)
    if name is not None:
        base = dataclasses.replace(NAMED_RECIPES[name], preset=preset)
    elif changes.get("task") == "numbers":
        base = dataclasses.replace(NUMBERS, preset=preset)
    else:
        base = RECIPES[preset]
    return dataclasses.replace(base, **changes)

"""Every training setting, declared once: ``TrainConfig``'s fields carry their help
text, and ``train.py``'s flags are derived from them (``add_arguments``/``from_args``),
so a new setting is one field."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from typing import Literal

from lenet_jax.data import DATASETS, SPLIT_SIZES
from lenet_jax.models import PRESETS, Schedule, get_preset

TRAIN_SIZE = SPLIT_SIZES["train"]


def _setting(default, help: str, flag: str | None = None, **argparse_options):  # noqa: A002
    return dataclasses.field(default=default,
                             metadata={"help": help, "flag": flag, **argparse_options})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    preset: str = _setting("original", "preset name (below)", flag="--variant")
    dataset: str = _setting("mnist", "data set (TFDS name)", choices=DATASETS)
    epochs: int = _setting(10, "passes over the training set")
    batch_size: int = _setting(64, "global batch (divides over the devices)")
    learning_rate: float | None = _setting(
        None, "Adam learning rate (default: the preset's: 3e-3 for original, else 1e-3)",
        flag="--lr")
    weight_decay: float | None = _setting(
        None, "L2 weight decay added to the gradient, as PyTorch's Adam(weight_decay=) "
              "(default: the preset's, 0 but for relu_avgpool_pad2_dropout)")
    schedule: Schedule | None = _setting(
        None, "learning-rate schedule, cosine = warmup then decay to 0 (default: the preset's)")
    warmup_epochs: float = _setting(0.0, "linear warmup of the cosine schedule, in epochs")
    seed: int = _setting(0, "initialisation, data order, dropout and distortions")
    val_size: int = _setting(5000, "examples held out from the end of train to select "
                                   "runs/best; 0 selects on test")
    limit_train: int = _setting(0, "train on the first N training images only (quick "
                                   "trials); 0: all", metavar="N")
    augment: bool | None = _setting(
        None, "random affine distortions on device: shift, rotate, scale (default: the "
              "preset's, on for original)")
    flip: bool = _setting(False, "random left-right flips of half the training images "
                                 "(right for clothes, wrong for digits)")
    devices: int = _setting(0, "data-parallel over this many devices (default 0: all "
                               "visible); the batch size must divide by it")
    loop: Literal["scan", "step"] = _setting(
        "scan", "epoch as one lax.scan call, or one jit'd call per batch (same result up "
                "to float rounding; scan measured faster, benchmarks/RESULTS.md)")

    def resolved(self) -> TrainConfig:
        """This config with the preset's recipe filled in where a field is None."""
        preset = get_preset(self.preset)
        return dataclasses.replace(
            self,
            learning_rate=self.learning_rate or preset.learning_rate,
            weight_decay=preset.weight_decay if self.weight_decay is None else self.weight_decay,
            schedule=self.schedule or preset.schedule,
            augment=preset.augment if self.augment is None else self.augment,
        )

    def distortions(self) -> tuple[str, ...]:
        """What distorts each training batch (``training._distort``); resolved config."""
        return ("affine",) * bool(self.augment) + ("flip",) * self.flip

    def problem(self) -> str | None:
        """The first setting that cannot work, said with its flag, or None."""
        if self.preset not in PRESETS:
            return f"unknown {flag('preset')} {self.preset!r}; valid presets: {', '.join(PRESETS)}"
        if self.epochs <= 0:
            return f"--epochs must be positive, got {self.epochs}"
        if self.learning_rate is not None and not self.learning_rate > 0:
            return f"--lr must be positive, got {self.learning_rate}"
        if self.weight_decay is not None and not 0 <= self.weight_decay < float("inf"):
            return f"--weight-decay must be 0 or positive, got {self.weight_decay}"
        if not 0 <= self.val_size < TRAIN_SIZE:
            return f"--val-size must be in [0, {TRAIN_SIZE}), got {self.val_size}"
        train_size = TRAIN_SIZE - self.val_size
        if not 0 <= self.limit_train <= train_size:
            return f"--limit-train must be in [0, {train_size}], got {self.limit_train}"
        train_size = self.limit_train or train_size
        if not 0 < self.batch_size <= train_size:
            return (f"--batch-size must be in [1, {train_size}] (the training set), "
                    f"got {self.batch_size}")
        if self.devices < 0:
            return f"--devices must be 0 (all) or positive, got {self.devices}"
        return None


class ConfigError(ValueError):
    """A setting that cannot work; the message names its flag."""


def flag(field: str) -> str:
    """The command-line flag of ``TrainConfig.<field>``."""
    metadata = _fields()[field].metadata
    return metadata["flag"] or "--" + field.replace("_", "-")


@functools.cache
def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _argparse_options(field: dataclasses.Field, hint) -> dict:
    options = {k: v for k, v in field.metadata.items() if k not in ("flag",)}
    options["default"] = field.default
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: takes an X
        (hint,) = (t for t in typing.get_args(hint) if t is not type(None))
    if hint is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(hint) is Literal:
        options["choices"] = typing.get_args(hint)
    else:
        options["type"] = hint
    return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field, with its default, type and help."""
    hints = typing.get_type_hints(TrainConfig)
    for name, field in _fields().items():
        parser.add_argument(flag(name), dest=name, **_argparse_options(field, hints[name]))


def from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{name: getattr(args, name) for name in _fields()})

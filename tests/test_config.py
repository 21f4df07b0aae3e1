"""Every training setting is declared once, in TrainConfig; train.py's flags come from it."""

import argparse
import dataclasses

import pytest

from lenet_jax import config
from lenet_jax.config import TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser


def test_every_field_is_a_flag_with_its_default_and_help():
    parser = _parser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(actions) == set(fields)
    for name, field in fields.items():
        assert actions[name].default == field.default, name
        assert actions[name].help == field.metadata["help"], name
        assert config.flag(name) in actions[name].option_strings
    assert config.from_args(parser.parse_args([])) == TrainConfig()


def test_flags_parse_into_the_config_with_their_types():
    args = _parser().parse_args(["--variant", "relu_maxpool", "--lr", "0.01", "--no-augment",
                                 "--limit-train", "640", "--schedule", "cosine",
                                 "--warmup-epochs", "0.5", "--loop", "step"])
    assert config.from_args(args) == TrainConfig(
        preset="relu_maxpool", learning_rate=0.01, augment=False, limit_train=640,
        schedule="cosine", warmup_epochs=0.5, loop="step")
    with pytest.raises(SystemExit):  # a Literal field takes only its values
        _parser().parse_args(["--schedule", "linear"])


@pytest.mark.parametrize(("changes", "problem"), [
    ({"preset": "lenet7"}, "unknown --variant 'lenet7'; valid presets: original, tanh_avgpool"),
    ({"epochs": 0}, "--epochs must be positive, got 0"),
    ({"limit_train": 55_001}, "--limit-train must be in [0, 55000], got 55001"),
    ({"limit_train": 100, "batch_size": 101}, "--batch-size must be in [1, 100]"),
    ({"devices": -1}, "--devices must be 0 (all) or positive, got -1"),
    ({"weight_decay": -0.1}, "--weight-decay must be 0 or positive, got -0.1"),
    ({"weight_decay": float("nan")}, "--weight-decay must be 0 or positive, got nan"),
])
def test_problems_name_the_flag(changes, problem):
    assert problem in TrainConfig(**changes).problem()
    assert TrainConfig().problem() is None


def test_resolved_takes_the_presets_recipe_where_unset():
    assert TrainConfig().resolved() == TrainConfig(learning_rate=3e-3, schedule="cosine",
                                                   augment=True, weight_decay=0.0)
    mine = TrainConfig(preset="relu_maxpool", learning_rate=0.02, augment=True)
    assert mine.resolved() == dataclasses.replace(mine, schedule="constant", weight_decay=0.0)
    dropout = TrainConfig(preset="relu_avgpool_pad2_dropout")
    assert dropout.resolved().weight_decay == 0.01
    assert dataclasses.replace(dropout, weight_decay=0.0).resolved().weight_decay == 0.0

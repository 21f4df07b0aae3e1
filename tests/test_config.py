"""TrainConfig and the recipes: every setting one field, each preset's recipe one complete
TrainConfig, train.py's flags derived from the fields, errors that carry their field."""

import dataclasses

import pytest

from lenet_jax import cli, config, models
from lenet_jax.config import RECIPES, ConfigError, TrainConfig, recipe


def _parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="test")
    cli.add_config_arguments(parser)
    return parser


def test_each_preset_has_one_complete_recipe_and_presets_hold_no_training_settings():
    assert set(RECIPES) == set(models.PRESETS)
    for name, row in RECIPES.items():
        assert isinstance(row, TrainConfig) and row.preset == name
    preset_fields = {f.name for f in dataclasses.fields(models.Preset)}
    assert not preset_fields & {"learning_rate", "weight_decay", "schedule", "augment",
                                "epochs", "batch_size", "flip"}
    # the measured recipes (benchmarks/ACCURACY.md)
    assert recipe("original") == TrainConfig("original", learning_rate=3e-3,
                                             schedule="cosine", augment=True, not_digits=0.5)
    assert recipe("relu_avgpool_pad2") == TrainConfig("relu_avgpool_pad2", schedule="cosine",
                                                      not_digits=0.5)
    assert recipe("relu_avgpool_pad2_dropout").weight_decay == 0.01
    assert recipe("relu_maxpool") == TrainConfig("relu_maxpool")
    # Non-digits teach nothing about clothes: off for another data set, unless asked.
    assert recipe("original", dataset="fashion_mnist").not_digits == 0
    with pytest.raises(ConfigError, match="for mnist, not fashion_mnist"):
        recipe("original", dataset="fashion_mnist", not_digits=0.5).validate()


def test_every_field_is_a_flag_and_an_unset_flag_keeps_the_recipe():
    parser = _parser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(actions) - {"recipe"} == {f.name for f in dataclasses.fields(TrainConfig)}
    for name, action in actions.items():
        assert cli.flag(name) in action.option_strings
    assert actions["preset"].option_strings == ["--preset", "--variant"]
    assert cli.config_from_args(parser.parse_args([])) == RECIPES["original"]
    dropout = cli.config_from_args(parser.parse_args(["--variant", "relu_avgpool_pad2_dropout"]))
    assert dropout == RECIPES["relu_avgpool_pad2_dropout"]
    mine = cli.config_from_args(parser.parse_args(["--preset", "original", "--lr", "0.02",
                                                   "--no-augment"]))
    assert mine == dataclasses.replace(RECIPES["original"], learning_rate=0.02, augment=False)


def test_flags_parse_into_the_config_with_their_types():
    args = _parser().parse_args(["--preset", "relu_maxpool", "--lr", "0.01", "--augment",
                                 "--limit-train", "640", "--schedule", "cosine",
                                 "--warmup-epochs", "0.5", "--loop", "step"])
    assert cli.config_from_args(args) == TrainConfig(
        preset="relu_maxpool", learning_rate=0.01, augment=True, limit_train=640,
        schedule="cosine", warmup_epochs=0.5, loop="step")
    with pytest.raises(SystemExit):  # a Literal field takes only its values
        _parser().parse_args(["--schedule", "linear"])


@pytest.mark.parametrize(("changes", "field", "said"), [
    ({"preset": "lenet7"}, "preset", "unknown --preset 'lenet7'; valid presets: original, "
                                     "tanh_avgpool"),
    ({"epochs": 0}, "epochs", "--epochs must be positive, got 0"),
    ({"learning_rate": -1.0}, "learning_rate", "--lr must be positive and finite, got -1.0"),
    ({"limit_train": 55_001}, "limit_train", "--limit-train must be in [0, 55000], got 55001"),
    ({"limit_train": 100, "batch_size": 101}, "batch_size", "--batch-size must be in [1, 100]"),
    ({"devices": -1}, "devices", "--devices must be 0 (all) or positive, got -1"),
    ({"weight_decay": -0.1}, "weight_decay", "--weight-decay must be 0 or positive, got -0.1"),
    ({"weight_decay": float("nan")}, "weight_decay",
     "--weight-decay must be 0 or positive, got nan"),
    ({"epochs": 1, "warmup_epochs": 1.0}, "warmup_epochs",
     "--warmup-epochs must be in [0, 1) (the epochs), got 1.0"),
    ({"warmup_epochs": float("nan")}, "warmup_epochs", "--warmup-epochs must be in [0, 10)"),
    ({"warmup_epochs": float("inf")}, "warmup_epochs", "--warmup-epochs must be in [0, 10)"),
    ({"seed": 2**31}, "seed", "--seed must be in [0, 2147483648), got 2147483648"),
    ({"seed": -1}, "seed", "--seed must be in [0, 2147483648), got -1"),
    ({"mu_start_passes": -1}, "mu_start_passes", "--mu-start-passes must be 0 or positive"),
])
def test_an_impossible_setting_raises_naming_its_field_and_the_cli_its_flag(changes, field,
                                                                           said):
    with pytest.raises(ConfigError) as raised:
        TrainConfig(**changes).validate()
    assert raised.value.field == field
    assert repr(raised.value.value) == repr(changes[field])  # nan included
    assert "--" not in str(raised.value)  # the library names the field, not a flag
    assert cli.describe(raised.value).startswith(said)
    TrainConfig().validate()


def test_a_resume_mismatch_carries_its_values_and_the_cli_names_the_flag():
    error = config.ResumeMismatchError("learning_rate", 0.001, 0.003)
    assert (error.field, error.saved, error.asked) == ("learning_rate", 0.001, 0.003)
    assert cli.describe(error) == ("cannot resume: the run was trained with lr=0.001, this "
                                   "command asks for 0.003")

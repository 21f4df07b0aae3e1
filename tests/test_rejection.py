"""The "not a digit" rule: its statistics, its fit, how it travels with a checkpoint, and
what evaluate.py says with it and without it."""

import contextlib
import dataclasses
import json
import re

import jax
import numpy as np
import pytest
from helpers import run_main
from PIL import Image

from lenet_jax import checkpoint, evaluation, inference, models, rejection


def _two_gaussians(n=4000, dims=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    mixing = rng.normal(size=(dims, dims))
    statistics = rng.normal(size=(n, dims)) @ mixing + 5.0 * labels[:, None]
    return statistics, labels, mixing


def test_rule_is_the_mahalanobis_distance_to_the_nearest_class_mean():
    statistics, labels, mixing = _two_gaussians()
    rule = rejection.fit(statistics, labels)
    means = np.stack([statistics[labels == k].mean(0) for k in (0, 1)])
    centred = statistics - means[labels]
    covariance = centred.T @ centred / len(statistics)
    shrunk = 0.99 * covariance + 0.01 * np.trace(covariance) / 6 * np.eye(6)
    point = statistics[:5]
    expected = [min(float((p - m) @ np.linalg.solve(shrunk, p - m)) for m in means)
                for p in point]
    np.testing.assert_allclose(rule.distance(point), expected, rtol=1e-8)
    # The threshold is the validation quantile: 0.5% of these digits, and far points out;
    # the logits play no part.
    logits = np.zeros((len(statistics), 2))
    assert np.mean(rule.rejects(logits, statistics)) == pytest.approx(0.005, abs=1e-3)
    far = means[0] + 8 * mixing[0]  # 8 standard deviations along a real direction
    assert rule.rejects(logits[:1], far[None])[0] and not rule.rejects(logits[:2], means)[0]


def test_rule_round_trips_through_json_metadata_and_damage_is_an_error():
    statistics, labels, _ = _two_gaussians()
    rule = rejection.fit(statistics, labels)
    metadata = json.loads(json.dumps({"rejection": rule.to_json()}))
    restored = rejection.from_metadata(metadata)
    np.testing.assert_array_equal(restored.distance(statistics), rule.distance(statistics))
    assert restored.threshold == rule.threshold
    assert rejection.from_metadata({"preset": "original"}) is None  # saved before the rule
    metadata["rejection"]["precision"] = [[1.0, 2.0]]
    with pytest.raises(rejection.RuleError, match=r"shapes \(2, 6\) and \(1, 2\)"):
        rejection.from_metadata(metadata)
    del metadata["rejection"]["means"]
    with pytest.raises(rejection.RuleError, match="damaged"):
        rejection.from_metadata(metadata)
    with pytest.raises(rejection.RuleError, match="whole nan"):  # the pieces' bound
        rejection.from_metadata({"rejection": {"kind": "energy", "threshold": 1.0,
                                               "whole": float("nan")}})


def test_map_statistics_are_each_maps_mean_and_std(trained_original, tiny_dataset):
    params, _ = checkpoint.restore_for_inference(trained_original / "best")
    module, _ = models.create_model("original")
    images = tiny_dataset.test.images[:5]
    _, statistics = inference.predict_with_statistics(module, params, images)
    x = models.preprocess(images, module.preset)
    _, kept = jax.jit(module.apply, static_argnames="mutable")(  # a program, not op by op
        {"params": params}, x, mutable=("maps",))
    c3 = np.asarray(kept["maps"]["layers"]["C3"])
    assert statistics.shape == (5, 2 * (6 + 6 + 16 + 16))
    # C3's 16 means follow C1's and S2's 2 x 6; its 16 standard deviations follow them.
    np.testing.assert_allclose(statistics[:, 24:40], c3.mean((1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(statistics[:, 40:56], c3.std((1, 2)), rtol=1e-4, atol=1e-6)


def test_training_saves_the_rule_fitted_on_the_validation_slice(trained_original,
                                                                mnist_sample):
    """The checkpoint's rule (energy: `original`'s recipe trains with non-digits) is the
    fit of the validation slice (the last 1,500 of the sample's train split) under the
    saved params, and the logged rate is its test rejection."""
    predictor = evaluation.Predictor.load(trained_original / "best")
    assert predictor.rule.kind == "energy" and not predictor.rule.needs_statistics
    val = mnist_sample.train.take(slice(-1500, None))
    val_logits = inference.predict_logits(predictor.module, predictor.params, val.images)
    refit = rejection.fit_energy(np.asarray(val_logits), val.images)
    assert predictor.rule.threshold == pytest.approx(refit.threshold, rel=1e-4)
    assert predictor.rule.confidence == pytest.approx(refit.confidence, rel=1e-4)
    assert predictor.rule.whole == refit.whole and 0.3 < refit.whole < 1
    # Each condition refuses its 0.3% (pieces: 0.1%) of the slice; together, at most the sum.
    share = 1 - rejection.ENERGY_QUANTILE
    assert share - 1 / 1500 <= np.mean(refit.rejects(val_logits, images=val.images)) \
        <= 2 * share + rejection.PIECE_QUANTILE + 3 / 1500  # one more each: interpolation
    test_logits = inference.predict_logits(predictor.module, predictor.params,
                                           mnist_sample.test.images)
    logged = predictor.metadata["metrics"]["test_rejected"]
    assert logged == pytest.approx(
        predictor.rule.rejects(test_logits, images=mnist_sample.test.images).mean(), abs=1e-9)


def test_energy_rule_is_minus_logsumexp_and_a_least_top_probability_and_round_trips():
    logits = np.random.default_rng(0).normal(size=(2000, 10)) * 3
    one_piece = np.full((2000, 28, 28, 1), 255, np.uint8)
    rule = rejection.fit_energy(logits, one_piece)
    assert rule.whole == 1.0  # all in one piece: none refused for its pieces
    expected = -np.log(np.exp(logits).sum(1))
    np.testing.assert_allclose(rule.score(logits), expected, rtol=1e-12)
    assert rule.threshold == pytest.approx(np.quantile(expected, rejection.ENERGY_QUANTILE))
    top = np.exp(logits).max(1) / np.exp(logits).sum(1)
    assert rule.confidence == pytest.approx(np.quantile(top, rejection.CONFIDENCE_QUANTILE))
    np.testing.assert_array_equal(rule.rejects(logits, images=one_piece),
                                  (expected > rule.threshold) | (top < rule.confidence))
    # Low, equal logits (belief spread, nothing close) are refused; one high logit kept;
    # high, equal logits (close to all ten at once: a low energy) are refused too.
    picture = one_piece[:1]
    assert rule.rejects(np.full((1, 10), -5.0), images=picture)[0]
    assert not rule.rejects(np.eye(10)[:1] * 20, images=picture)[0]
    assert rule.score(np.full((1, 10), 20.0))[0] < rule.threshold
    assert rule.rejects(np.full((1, 10), 20.0), images=picture)[0]
    with pytest.raises(ValueError, match="counts the ink's pieces"):
        rule.rejects(np.eye(10)[:1] * 20)
    restored = rejection.from_metadata(json.loads(json.dumps({"rejection": rule.to_json()})))
    assert (restored.kind, restored.threshold, restored.confidence, restored.whole) == (
        "energy", rule.threshold, rule.confidence, rule.whole)
    # A checkpoint saved before the confidence (or the pieces) existed keeps its energy
    # rule alone.
    older = rejection.from_metadata({"rejection": {"kind": "energy", "threshold": 1.0}})
    assert older.confidence == older.whole == 0.0 and not older.rejects(np.full((1, 10), 20.0))[0]
    with pytest.raises(rejection.RuleError, match="kind 'magic'"):
        rejection.from_metadata({"rejection": {"kind": "magic", "threshold": 1.0}})


def test_largest_piece_is_the_inks_share_in_its_biggest_8_connected_piece():
    pictures = np.zeros((3, 28, 28, 1), np.uint8)
    pictures[0, 5:20, 10:13] = 200  # one stroke
    pictures[1, 5:10, 5:10], pictures[1, 20:22, 20:22] = 100, 250  # 2,500 and 1,000
    pictures[2, 5, 5] = pictures[2, 6, 6] = pictures[2, 20, 20] = 200  # corners touch
    pictures[2, 10, 10] = rejection.INK_LEVEL  # at the level: not ink
    np.testing.assert_allclose(rejection.largest_piece(pictures), [1, 2500 / 3500, 400 / 600],
                               rtol=1e-15)
    # The energy rule refuses ink in pieces however sure the network is.
    rule = rejection.Rule("energy", threshold=0.0, confidence=0.5, whole=0.7)
    sure = np.eye(10)[:3] * 30
    assert rule.rejects(sure, images=pictures).tolist() == [False, False, True]
    assert dataclasses.replace(rule, whole=0.0).rejects(sure).tolist() == [False] * 3


def test_the_rule_keeps_real_digits_and_refuses_non_digits(trained_original, held_out_digits,
                                                           tmp_path):
    """On 2,000 real digits no fit saw, and 90 generated non-digits of another seed than
    the report's, each written as a PNG and read back as a user's picture would be.
    Measured on this fixture (3 epochs on 2,000 digits, energy rule; Intel Xeon, 2026-12-07):
    0.95% of the digits refused, 78% of the non-digits (the 10-epoch recipe's figures:
    tests/test_styles.py)."""
    predictor = evaluation.Predictor.load(trained_original / "best")
    digits = [answer.rejected for answer in predictor.answer(held_out_digits.images)]
    assert 0.001 <= np.mean(digits) <= 0.04, np.mean(digits)
    pictures = []
    for n, (_, picture) in enumerate(rejection.non_digit_pictures(seed=1)):
        picture.save(tmp_path / f"{n}.png")
        with contextlib.suppress(evaluation.ImageError):  # blank to the reader: refused
            pictures.append(evaluation.mnist_like(tmp_path / f"{n}.png"))
    refused = [answer.rejected for answer in predictor.answer(np.stack(pictures))]
    assert np.mean(refused) >= 0.4, np.mean(refused)


def _noise_png(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)


def _evaluate_main(capsys, *argv):
    result = run_main("evaluate", capsys, *argv)
    return result.returncode, result.stdout, result.stderr


def test_cli_says_not_a_digit_for_noise(trained_original, tmp_path, capsys):
    noise = tmp_path / "noise.png"
    _noise_png(noise)
    code, out, err = _evaluate_main(capsys, "--ckpt", str(trained_original / "best"),
                                    "--image", str(noise), "--json")
    assert code == 0, err
    assert json.loads(out)["rejected"] is True
    code, out, err = _evaluate_main(capsys, "--ckpt", str(trained_original / "best"),
                                    "--image", str(noise))
    assert re.fullmatch(rf"{re.escape(str(noise))}: not a digit \(closest: \d, \d+%\)\n", out)


def test_answer_reads_not_a_digit_with_the_closest_class():
    names = tuple("0123456789")
    refused = evaluation.Answer(evaluation.top_k(np.eye(10)[7] * 0.31, names), True)
    assert str(refused) == "not a digit (closest: 7, 31%)"
    assert refused.to_json()["rejected"] is True
    kept = evaluation.Answer(evaluation.top_k(np.array([.1, .6, .3] + [0] * 7), names), False)
    assert str(kept) == "1 60.0%, 2 30.0%, 0 10.0%"


def test_checkpoint_saved_before_the_rule_evaluates_without_rejection(trained_original,
                                                                      tmp_path, capsys):
    """A checkpoint whose metadata has no rule (as every one saved before it) still
    predicts; evaluate.py says once that nothing is rejected, and JSON says null."""
    predictor = evaluation.Predictor.load(trained_original / "best")
    old_metadata = {k: v for k, v in predictor.metadata.items() if k != "rejection"}
    old = checkpoint.RunCheckpoints(tmp_path / "old")
    old.save(1, predictor.params, {"count": np.zeros((), np.int32)}, old_metadata)
    old.close()
    noise = tmp_path / "noise.png"
    _noise_png(noise)
    code, out, err = _evaluate_main(capsys, "--ckpt", str(tmp_path / "old" / "best"),
                                    "--image", str(noise), "--json")
    assert code == 0, err
    assert json.loads(out)["rejected"] is None
    notes = [x for x in err.splitlines() if x.startswith("evaluate.py: note")]
    assert len(notes) == 1 and "carries no 'not a digit' rule" in notes[0]

"""Applying the model: a few pictures in one padded call, each its own answer."""

import jax
import numpy as np
import reference

from lenet_jax import evaluation, inference, models


def test_a_few_pictures_get_each_its_own_probabilities(trained_original, held_out_digits):
    """3 pictures (padded to 4 for one compiled call) get the logits whose probabilities
    the NumPy reference gives each; one alone gets the same as in company."""
    predictor = evaluation.Predictor.load(trained_original / "best")
    images = held_out_digits.images[:3]
    logits, _ = inference.predict_images(predictor.module, predictor.params, images)
    probabilities = reference.softmax(logits)
    reference.use_codes(models.rbf_codes())
    expected = reference.softmax(reference.forward(jax.device_get(predictor.params), images,
                                                   "original")["logits"])
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    alone, _ = inference.predict_images(predictor.module, predictor.params, images[1:2])
    np.testing.assert_allclose(alone[0], logits[1], atol=1e-5)

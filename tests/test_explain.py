"""The explain figure's panels are what the network computes, against the NumPy reference."""

import jax
import numpy as np
import reference

from lenet_jax import models


def test_explain_panels_are_what_the_numpy_reference_computes(trained_original,
                                                              held_out_digits):
    """Every panel against tests/reference.py: the preprocessed input, each layer's maps,
    F6 as the paper's 7x12 picture beside the nearest RBF code, the probabilities."""
    from lenet_jax import checkpoint, explain

    params, _ = checkpoint.restore_for_inference(trained_original / "best")
    module, _ = models.create_model("original")
    image = held_out_digits.images[3]
    drawn = explain.panels(module, params, image)
    reference.use_codes(models.rbf_codes())
    expected = reference.forward(jax.device_get(params), image[None], "original")
    closest = int(np.argmin(expected["squared_distance"][0]))
    assert {name: panel.shape for name, panel in drawn.items()} == {
        "input": (32, 32), "C1": (28, 28, 6), "S2": (14, 14, 6), "C3": (10, 10, 16),
        "S4": (5, 5, 16), "F6": (12, 7), f"closest RBF code: {closest}": (12, 7),
        "probabilities": (10,)}
    np.testing.assert_allclose(drawn["input"], expected["input"][0], atol=1e-5)
    for layer in ("C1", "S2", "C3", "S4"):
        np.testing.assert_allclose(drawn[layer], expected[layer][0], atol=2e-4, err_msg=layer)
    np.testing.assert_allclose(drawn["F6"].ravel(), expected["F6"][0], atol=2e-4)
    code = "".join("#" if v > 0 else "." for v in drawn[f"closest RBF code: {closest}"].ravel())
    if closest in reference.RBF_ROWS:
        assert code == reference.RBF_ROWS[closest]
    np.testing.assert_allclose(drawn["probabilities"],
                               reference.softmax(expected["logits"][0]), atol=1e-5)

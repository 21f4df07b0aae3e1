"""Numbers as rows of MNIST digits, and LeNet-5 swept along them (#29): the strip
generator's labels against the digits it used, its geometry, and the space displacement
network's output width and values against the single-digit network on each window."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lenet_jax import models, strips, zoo


def test_strips_label_the_digits_they_were_made_of(mnist_sample):
    split = mnist_sample.test
    made = strips.compose(split.images, split.labels, 300, seed=5)
    lengths = made.lengths
    assert made.images.shape[:2] == (300, strips.HEIGHT) and made.images.dtype == np.uint8
    assert set(lengths) == set(range(1, strips.MOST_DIGITS + 1))
    used = made.sources >= 0
    np.testing.assert_array_equal(used, made.labels >= 0)
    np.testing.assert_array_equal(made.labels[used], split.labels[made.sources[used]])
    assert made.numbers[0] == "".join(str(split.labels[i]) for i in made.sources[0] if i >= 0)
    # Digits left to right, each centred where a column of the sweep can see it.
    centres = np.where(used, made.centres, np.nan)
    assert (np.diff(centres, axis=1)[used[:, 1:]] > 0).all()
    assert (made.centres[used] >= strips.FIELD // 2).all()
    # Ink where each digit is said to be, and none past the last one's field.
    for n, c in zip(*np.nonzero(used), strict=True):
        centre = int(round(made.centres[n, c]))
        assert made.images[n, :, centre - 2:centre + 3].max() > 0, (n, c)
    last = np.nanmax(centres, axis=1)
    assert all(made.images[n, :, int(last[n]) + strips.FIELD:].max(initial=0) == 0
               for n in range(len(made)))


def test_strips_are_a_function_of_their_seed_and_width_steps_by_four(mnist_sample):
    split = mnist_sample.train
    first = strips.compose(split.images, split.labels, 50, seed=7)
    again = strips.compose(split.images, split.labels, 50, seed=7)
    other = strips.compose(split.images, split.labels, 50, seed=8)
    np.testing.assert_array_equal(first.images, again.images)
    assert first.numbers == again.numbers and first.numbers != other.numbers
    widths = [strips.compose(split.images, split.labels, 1, seed=s).images.shape[2]
              for s in range(12)]  # one strip: no padding to another's width
    assert all(w >= strips.FIELD and (w - strips.FIELD) % strips.STEP == 0 for w in widths)
    assert len(set(widths)) > 3, widths
    # Touching digits: with gaps from -4 to -4 every neighbour's ink overlaps.
    touching = strips.compose(split.images, split.labels, 20, seed=9, lengths=(2, 2),
                              gaps=(-4, -4))
    apart = strips.compose(split.images, split.labels, 20, seed=9, lengths=(2, 2),
                           gaps=(12, 12))
    assert (touching.centres[:, 1] - touching.centres[:, 0]
            < apart.centres[:, 1] - apart.centres[:, 0]).all()
    assert touching.images.shape[2] < apart.images.shape[2]


@pytest.mark.parametrize("preset", [n for n, p in models.PRESETS.items() if p.c5 == "conv"])
def test_sweep_gives_one_answer_per_four_pixels_equal_to_the_window_s(preset):
    """A strip 32 + 4k wide gives k + 1 answers; answer j is the single-digit network's
    on the 32-pixel window starting at 4j (float rounding apart)."""
    module, params, _ = zoo.pretrained(preset)
    apply = jax.jit(module.apply, static_argnames="sweep")  # a program, not op by op
    size = module.preset.input_size
    x = jax.random.normal(jax.random.key(1), (2, size, size + 4 * 7, 1))
    swept = apply({"params": params}, x, sweep=True)
    assert swept.shape == (2, 8, models.CLASSES)
    windows = apply({"params": params}, jnp.concatenate(
        [x[:, :, 4 * j:4 * j + size] for j in (0, 3, 7)]))
    np.testing.assert_allclose(swept[:, [0, 3, 7]], windows.reshape(3, 2, -1).swapaxes(0, 1),
                               rtol=1e-4, atol=1e-4)
    assert apply({"params": params}, x[:, :, :size], sweep=True).shape == (2, 1, 10)


def test_sweep_refuses_a_dense_c5_and_widths_off_the_step():
    module, _ = models.create_model("relu_avgpool_pad2")
    params = models.init_params(module, jax.random.key(0))
    with pytest.raises(ValueError, match="has a dense C5, so it cannot sweep a strip; the "
                                         "presets whose C5 is a convolution can: original"):
        module.apply({"params": params}, np.zeros((1, 28, 36, 1), np.float32), sweep=True)
    module, _ = models.create_model("original")
    params = models.init_params(module, jax.random.key(0))
    with pytest.raises(ValueError, match=r"sweeps strips of shape \(N, 32, 32 \+ 4k, 1\), "
                                         r"got \(1, 32, 34, 1\)"):
        module.apply({"params": params}, np.zeros((1, 32, 34, 1), np.float32), sweep=True)


def _answers(classes: list[int], surest: float = 0.9) -> np.ndarray:
    """(1, K, 11) probabilities whose likeliest class at each answer is ``classes[k]``."""
    rows = np.full((len(classes), strips.BLANK + 1), (1 - surest) / strips.BLANK)
    rows[np.arange(len(classes)), classes] = surest
    return rows[None]


def test_decode_merges_runs_and_splits_them_at_blanks():
    b = strips.BLANK
    cases = {(b, 5, 5, b, 5, b): "55", (3, 3, 3): "3", (b, b): "", (1, b, 1): "11",
             (2, 3): "23", (b, 7, 7, 1, 1, b, 1): "711", (): ""}
    for classes, number in cases.items():
        answers = _answers(list(classes)).reshape(1, len(classes), b + 1)
        read = strips.decode(answers)[0]
        assert "".join(str(r.digit) for r in read) == number, classes
        assert strips.decode_numbers(answers) == [number], classes
    # Each digit at the answer surest of it: its column, the field's centre there.
    answers = _answers([b, 4, 4, 4, b])
    answers[0, 2, 4] = 0.97
    (four,) = strips.decode(answers)[0]
    assert (four.digit, four.column, four.centre, four.confidence) == (4, 2, 24, 0.97)


def test_decode_finds_the_likeliest_number_not_each_answers_likeliest_class():
    # A 7 spread over three answers, none of them sure of it: each answer's likeliest class
    # is the blank (0.55-0.6), so the likeliest path reads nothing (0.6 * 0.55 * 0.6 =
    # 0.20), but the paths that spell "7" add up to 1 - 0.20 - P("77": 0.4 * 0.55 * 0.4).
    b = strips.BLANK
    answers = np.zeros((1, 3, b + 1))
    answers[0, :, 7], answers[0, :, b] = 0.4, 0.6
    answers[0, 1, 7], answers[0, 1, b] = 0.45, 0.55
    (seven,) = strips.decode(answers)[0]
    assert (seven.digit, seven.column, seven.centre, seven.confidence) == (7, 1, 20, 0.45)
    # Two digits each spread so: both found, each at its own surest answer.
    answers = np.concatenate([answers, answers[:, :, [0, 1, 2, 3, 4, 5, 6, 9, 8, 7, 10]]], 1)
    assert [(r.digit, r.column) for r in strips.decode(answers)[0]] == [(7, 1), (9, 4)]

"""Training's non-digits (lenet_jax.outliers): a function of their seed, none of them a
1 in MNIST's eyes, and a cache that a damaged or unwritable directory never stops."""

import numpy as np
import pytest

from lenet_jax import ink, outliers


@pytest.fixture
def small_bank(monkeypatch):
    """The bank with 1 font, 16 characters and 400 generated pictures (the whole one takes
    40 s)."""
    monkeypatch.setattr(outliers, "FONT_FILES", outliers.FONT_FILES[:1])
    monkeypatch.setattr(outliers, "CHARACTERS", outliers.CHARACTERS[::3])
    monkeypatch.setattr(outliers, "GENERATED", 400)


def test_non_digits_are_a_function_of_their_seed_and_none_is_an_upright_bar(small_bank):
    first = outliers.bank(7)
    assert first.dtype == np.uint8 and first.shape[1:] == (ink.MNIST_SIZE, ink.MNIST_SIZE, 1)
    # 1 font x 16 characters x 4 (2 printed, 2 as if written), and the 400 generated,
    # less the bars and empty pages (5 of them at seeds 7 and 8)
    assert len(outliers.CHARACTERS) == 16
    assert 16 * 4 + 400 - 25 <= len(first) <= 16 * 4 + 400
    np.testing.assert_array_equal(outliers.bank(7), first)
    other = outliers.bank(8)
    assert other.shape != first.shape or (other != first).any()
    for picture in first:  # ink 2.5x taller than wide: MNIST's 1 (a dash, two specks)
        rows, cols = np.nonzero(picture[..., 0] > 64)
        assert rows.size == 0 or np.ptp(rows) + 1 < 2.5 * (np.ptp(cols) + 1)



def test_shapes_come_in_any_proportions():
    """Tall, narrow outlines (a thin triangle) were the held-out shapes read as 0 or 1:
    half the shapes are squeezed, so a sixth come out under half as wide as tall (without
    the squeeze, 3% of these 300)."""
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(300):
        rows, cols = np.nonzero(np.asarray(outliers._shape(rng)) > 0)
        ratios.append((np.ptp(cols) + 1) / (np.ptp(rows) + 1))
    assert np.mean(np.array(ratios) < 0.5) >= 0.12

def test_cached_restyled_digits_survive_a_damaged_or_unwritable_cache(
        mnist_sample, tmp_path, monkeypatch):
    images, labels = mnist_sample.train.images[:40], mnist_sample.train.labels[:40]
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "cache"))
    drawn = outliers.restyled(images, labels)
    assert drawn[0].shape == (40, 28, 28, 1) and drawn[0].dtype == np.uint8
    assert sorted(drawn[1]) == sorted(labels)  # each digit keeps its own label

    def same(got):
        assert len(got) == 2
        for a, b in zip(got, drawn, strict=True):
            np.testing.assert_array_equal(a, b)

    same(outliers.cached_restyled(images, labels))  # drawn, and kept
    (kept,) = (tmp_path / "cache" / "outliers").iterdir()
    with monkeypatch.context() as patched:  # read back, not drawn again
        patched.setattr(outliers, "restyled", lambda *a, **k: pytest.fail("drawn again"))
        same(outliers.cached_restyled(images, labels))
    other = outliers.cached_restyled(images[:20], labels[:20])  # other digits: their own
    assert len(other[0]) == 20 and len(list(kept.parent.iterdir())) == 2

    good = kept.read_bytes()
    wrong_shape = tmp_path / "wrong.npz"
    np.savez(wrong_shape, np.zeros((3, 5), np.uint8), np.zeros(3))
    for damage in (good[:len(good) // 2], b"", b"\0" * 999, wrong_shape.read_bytes()):
        kept.write_bytes(damage)
        same(outliers.cached_restyled(images, labels))
        assert kept.read_bytes() == good  # drawn again, and kept again
    kept.unlink()
    kept.mkdir()
    same(outliers.cached_restyled(images, labels))

    (tmp_path / "a file").write_text("not a directory")
    monkeypatch.setenv("LENET_JAX_CACHE", str(tmp_path / "a file"))
    same(outliers.cached_restyled(images, labels))  # cannot be written: drawn, no error

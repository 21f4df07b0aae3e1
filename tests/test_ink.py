"""The image reader's pen (lenet_jax.ink): strokes of any width come out with MNIST's,
filled shapes stay filled, and ink MNIST could have written is left as it is."""

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage.morphology import skeletonize

from lenet_jax import ink

# MNIST's 2nd-98th percentile of stroke widths (ink area over skeleton length) at its
# 20 px box, from ink.WIDTHS measured at the 80 px working box.
MNIST_WIDTHS_AT_28 = (ink.WIDTHS[0] / 4, ink.WIDTHS[1] / 4)


def _seven(pen: int) -> np.ndarray:
    """A 7 drawn with a ``pen`` px pen, dark on a light 200x200 page."""
    page = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(page).line([(50, 40), (150, 40), (90, 170)], fill=0, width=pen,
                              joint="curve")
    return np.asarray(page, np.float32)


def _stroke_width(digit: np.ndarray) -> float:
    mask = digit[..., 0] > 127
    return mask.sum() / max(skeletonize(mask).sum(), 1)


@pytest.mark.parametrize("pen", [2, 4, 40, 60])
def test_a_hairline_and_a_felt_tip_get_mnists_pen(pen):
    """Read as it is, a 2 px pen on a 200 px page is a dotted hairline at 28 px (width
    about 1) and a 60 px one a blob (width about 9): both come out within MNIST's range."""
    width = _stroke_width(ink.mnist_digit(_seven(pen)))
    assert MNIST_WIDTHS_AT_28[0] <= width <= MNIST_WIDTHS_AT_28[1], width


def test_a_filled_square_stays_filled():
    page = np.full((100, 100), 255, np.float32)
    page[20:80, 20:80] = 0
    digit = ink.mnist_digit(page)[..., 0]
    rows, cols = np.nonzero(digit > 127)
    assert (np.ptp(rows) + 1, np.ptp(cols) + 1) == (20, 20)
    assert (digit[rows.min():rows.max() + 1, cols.min():cols.max() + 1] > 127).all()


def test_ink_mnist_could_have_written_is_left_as_it_is(mnist_sample):
    """MNIST's own test digits come back as they were (mean difference under one gray
    level) for at least 88% of 300; re-drawing every stroke would change most of them
    by about 14 levels (benchmarks/RESULTS.md: it costs test accuracy)."""
    digits = mnist_sample.test.images[:300, ..., 0]
    differences = np.array([
        np.abs(ink.mnist_digit(d.astype(np.float32))[..., 0].astype(float) - d).mean()
        for d in digits])
    assert (differences < 1.0).mean() >= 0.88, np.percentile(differences, [50, 90])


def test_a_page_without_ink_is_none():
    assert ink.mnist_digit(np.full((40, 30), 255, np.float32)) is None
    assert ink.mnist_digit(np.zeros((40, 30), np.float32)) is None


def _page(digit: np.ndarray, seed: int) -> Image.Image:
    """A real digit written dark on grey paper with grain, 140x140."""
    big = np.asarray(Image.fromarray(digit).resize((100, 100), Image.Resampling.BICUBIC),
                     np.float32)
    page = np.pad(210 - 170 * big / 255, 20, constant_values=210)
    page += np.random.default_rng(seed).normal(0, 3, page.shape)
    return Image.fromarray(np.clip(page, 0, 255).astype(np.float32), "F")


def test_a_turned_or_framed_pages_fill_is_read_as_paper(mnist_sample):
    """A page turned after it was taken (a scanner's deskew, an editor's rotate), its
    corners filled black or white, or framed in black or white, is read as the same digit
    as the page turned or framed with its paper's own level, and accepted alike. Without
    the fill taken for paper, a black fill is the ink and a white one the paper's edge."""
    from lenet_jax import evaluation

    pictures = []
    for n, digit in enumerate(mnist_sample.test.images[:10, ..., 0]):
        page = _page(digit, n)
        angle = 5 if n % 2 else -4
        for fill in (210, 0, 255):  # 210: the paper's own level
            pictures.append(page.rotate(angle, Image.Resampling.BICUBIC, expand=True,
                                        fillcolor=fill))
            pictures.append(np.pad(np.asarray(page), 15, constant_values=fill))
    answers = evaluation.Predictor.pretrained("original").answer(
        np.stack([ink.mnist_digit(np.asarray(p, np.float32)) for p in pictures]))
    read = np.reshape([(a.top[0][0], a.rejected) for a in answers], (10, 3, 2, 2))
    assert (read[:, 0, :, 0] == mnist_sample.test.labels[:10, None].astype(str)).mean() >= 0.9
    assert (read == read[:, :1]).all()  # black and white fills read as the paper's own


def test_a_picture_without_a_page_in_a_fill_is_left_as_it_is(mnist_sample):
    """MNIST's own digits (black round the ink), a page's grain up to its border, a filled
    rectangle, an outline (one level inside and out), and a thick square ring drawn in one
    level, in a picture MNIST's size or on a pad, hold no page to take a fill off."""
    for digit in mnist_sample.test.images[..., 0].astype(np.float32):
        assert ink._unfilled(digit) is digit
    grain = np.asarray(_page(mnist_sample.test.images[0, ..., 0], 0))
    assert ink._unfilled(grain) is grain
    for draw in ("rectangle", "outline"):
        picture = Image.new("L", (120, 120), 0)
        ImageDraw.Draw(picture).rectangle((15, 20, 100, 105), fill=255 if draw == "rectangle"
                                          else None, outline=255, width=12)
        pixels = np.asarray(picture, np.float32)
        assert ink._unfilled(pixels) is pixels, draw
    ring = np.zeros((28, 28), np.float32)
    ring[2:26, 3:25] = 255.0
    ring[8:20, 9:19] = 0.0
    assert ink._unfilled(ring) is ring
    pad = np.full((200, 200), 255.0, np.float32)  # dark on the page's white pad
    pad[40:160, 40:160] = 0.0
    pad[80:120, 80:120] = 255.0
    assert ink._unfilled(pad) is pad

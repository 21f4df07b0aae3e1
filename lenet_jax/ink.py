"""A picture's ink as MNIST would have it (``mnist_digit``): what the image reader
(``evaluation.mnist_like``) does once a picture is decoded, and what training's
non-digits (``lenet_jax.outliers``) go through too.

MNIST's pen (``mnist_pen``): a hairline scan, a felt-tip photo and a blurred note differ
from MNIST mostly in the pen, which the network never saw vary that much. So the ink's
contrast is stretched, and its stroke measured (width: area over skeleton length, with
scikit-image's ``skeletonize``; softness: the share of half-tone pixels). A stroke outside
what 96% of MNIST's digits have is made crisp and its outline moved out or in by half the
difference to MNIST's median pen: a hairline or a felt-tip gets MNIST's width, a blur
gets edges, and a filled shape stays a filled shape. Ink MNIST could have written keeps
its own strokes (making every digit alike costs MNIST's test digits accuracy:
benchmarks/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

from lenet_jax.models import MNIST_SIZE

MNIST_BOX = 20  # MNIST digits are scaled to fit 20x20, then centred by mass in 28x28

WORK_BOX = 80  # the ink's longer side, in pixels, while its pen is changed (4x MNIST's box)
# MNIST's strokes at that size, over 2,000 training digits (benchmarks/RESULTS.md): the
# median width (ink area over skeleton length), the 2nd-98th percentile of widths, and
# the 98th percentile of softness (the share of inked pixels between 10% and 90% of the
# brightest: blur, or a picture enlarged from a few pixels).
PEN = 10.9
WIDTHS = (6.4, 19.0)
SOFTNESS = 0.93
INK = 0.5  # of the brightest level: what counts as ink when it is measured


def mnist_pen(ink: np.ndarray, box: int) -> np.ndarray:
    """``ink`` (H, W), white on black, cropped to the ink: its brightest level made white,
    with MNIST's pen if its strokes are unlike MNIST's, and scaled so its
    longer side is ``box``. Float32 in [0, 255]."""
    ink = np.asarray(ink, np.float32) * (255 / max(float(np.max(ink)), 1e-6))
    big = _scaled(ink, WORK_BOX / max(ink.shape), Image.Resampling.BILINEAR)
    mask = big > INK * 255
    width = mask.sum() / max(skeletonize(mask).sum(), 1)
    inked = big > 0.1 * 255
    softness = (inked & (big < 0.9 * 255)).sum() / max(inked.sum(), 1)
    if WIDTHS[0] <= width <= WIDTHS[1] and softness <= SOFTNESS:
        return np.clip(_scaled(ink, box / max(ink.shape), Image.Resampling.LANCZOS), 0, 255)
    margin = int(PEN)
    mask = np.pad(mask, margin)
    if not mask.any():  # nothing at half the brightest after scaling: the brightest pixel
        mask[np.unravel_index(np.argmax(np.pad(big, margin)), mask.shape)] = True
    if width > WIDTHS[1] and softness <= SOFTNESS:
        # Too thick: the outline moved in by half the difference to MNIST's pen (a filled
        # shape stays one, where drawing its skeleton would make it a stroke).
        inside = ndimage.distance_transform_edt(mask) - 0.5
        pen = np.clip(inside - (width - PEN) / 2 + 0.5, 0, 1) * 255
    else:  # too thin, or soft (a blur's ink is a blob): the skeleton drawn with MNIST's pen
        pen = np.clip(PEN / 2 + 0.5 - ndimage.distance_transform_edt(~skeletonize(mask)),
                      0, 1) * 255
    if not pen.any():  # thinned away (uneven ink): keep it as it was
        pen = mask * 255.0
    rows, cols = np.nonzero(pen)
    pen = pen[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return np.clip(_scaled(pen, box / max(pen.shape), Image.Resampling.LANCZOS), 0, 255)


def _scaled(pixels: np.ndarray, scale: float, resample: Image.Resampling) -> np.ndarray:
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    return np.asarray(Image.fromarray(pixels.astype(np.float32), "F").resize(size, resample))


def mnist_digit(pixels: np.ndarray) -> np.ndarray | None:
    """Gray levels (H, W) in [0, 255] of a picture of one digit as MNIST has its digits:
    uint8 (28, 28, 1), white on black; None if the picture holds no ink.

    A light background is inverted; the ink is cropped, given MNIST's contrast and pen
    (``mnist_pen``), scaled to fit 20x20 (aspect kept) and placed so its centre of mass
    is the centre of a 28x28 field.
    """
    pixels = np.asarray(pixels, np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if np.median(border) > 127:  # dark ink on a light background
        pixels = 255.0 - pixels
    pixels = np.clip(pixels - np.median(border if np.median(border) <= 127 else 255 - border),
                     0, 255)
    ink = np.argwhere(pixels > 0.25 * pixels.max()) if pixels.max() > 0 else np.empty((0, 2))
    if len(ink) == 0:
        return None
    (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0) + 1
    digit = mnist_pen(pixels[top:bottom, left:right], MNIST_BOX)
    field = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    mass = digit.sum()
    rows, cols = np.indices(digit.shape)
    centre_r = (rows * digit).sum() / mass if mass else digit.shape[0] / 2
    centre_c = (cols * digit).sum() / mass if mass else digit.shape[1] / 2
    top = int(np.clip(round(MNIST_SIZE / 2 - centre_r), 0, MNIST_SIZE - digit.shape[0]))
    left = int(np.clip(round(MNIST_SIZE / 2 - centre_c), 0, MNIST_SIZE - digit.shape[1]))
    field[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return np.clip(field, 0, 255).astype(np.uint8)[..., None]

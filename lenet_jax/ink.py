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

import dataclasses

import numpy as np
from PIL import Image
from scipy import ndimage, spatial
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
# Of the brightest level: what counts as ink where it is cropped or cut into pieces (a
# faint edge or a smudge of paper does not stretch a crop nor join two digits).
PIECE = 0.25


def mnist_pen(ink: np.ndarray, box: int) -> np.ndarray:
    """``ink`` (H, W), white on black, cropped to the ink: its brightest level made white,
    with MNIST's pen if its strokes are unlike MNIST's, and scaled so its
    longer side is ``box``. Float32 in [0, 255]."""
    ink = _whitened(ink)
    big = _scaled(ink, WORK_BOX / max(ink.shape), Image.Resampling.BILINEAR)
    mask = big > INK * 255
    width = mask.sum() / max(skeletonize(mask).sum(), 1)
    inked = big > 0.1 * 255
    softness = (inked & (big < 0.9 * 255)).sum() / max(inked.sum(), 1)
    if WIDTHS[0] <= width <= WIDTHS[1] and softness <= SOFTNESS:
        return _fitted(ink, box)
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
        pen = stroked(skeletonize(mask), PEN / 2)
    if not pen.any():  # thinned away (uneven ink): keep it as it was
        pen = mask * 255.0
    rows, cols = np.nonzero(pen)
    pen = pen[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return _fitted(pen, box)


def stroked(skeleton: np.ndarray, radius: float) -> np.ndarray:
    """A skeleton (bool (H, W)) drawn with a round pen of ``radius`` pixels, its edge one
    pixel of antialiasing: float in [0, 255]."""
    return np.clip(radius + 0.5 - ndimage.distance_transform_edt(~skeleton), 0, 1) * 255


def _whitened(ink: np.ndarray) -> np.ndarray:
    """Ink (H, W) as float32, its brightest level made white (255)."""
    return np.asarray(ink, np.float32) * (255 / max(float(np.max(ink)), 1e-6))


def _inked(pixels: np.ndarray) -> np.ndarray:
    """Where gray levels (H, W), white on black, are over ``PIECE`` of the brightest:
    bool (H, W), none where the picture is black."""
    brightest = float(np.max(pixels))
    return pixels > PIECE * brightest if brightest > 0 else np.zeros(np.shape(pixels), bool)


def _fitted(ink: np.ndarray, box: int) -> np.ndarray:
    """Ink (H, W) in [0, 255] scaled so its longer side is ``box``."""
    return np.clip(_scaled(ink, box / max(ink.shape), Image.Resampling.LANCZOS), 0, 255)


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
    found = _ink(pixels)
    if found is None:
        return None
    return centred(mnist_pen(found[0], MNIST_BOX))


def centred(digit: np.ndarray) -> np.ndarray:
    """A digit's ink (H, W) in [0, 255], white on black, no longer side over 20 pixels,
    placed so its centre of mass is the centre of a 28x28 field: uint8 (28, 28, 1)."""
    field = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    mass = digit.sum()
    rows, cols = np.indices(digit.shape)
    centre_r = (rows * digit).sum() / mass if mass else digit.shape[0] / 2
    centre_c = (cols * digit).sum() / mass if mass else digit.shape[1] / 2
    top = int(np.clip(round(MNIST_SIZE / 2 - centre_r), 0, MNIST_SIZE - digit.shape[0]))
    left = int(np.clip(round(MNIST_SIZE / 2 - centre_c), 0, MNIST_SIZE - digit.shape[1]))
    field[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return np.clip(field, 0, 255).astype(np.uint8)[..., None]


def coverage(strip: np.ndarray) -> float:
    """The share of a strip's pixels (H, W), white on black, that are ink (over ``PIECE``
    of the brightest, as ``apart`` counts it), between its first and last inked column
    and over at least a digit's height (``MNIST_BOX``) of columns: a 1 alone is a bar."""
    inked = _inked(np.asarray(strip, np.float32))
    columns = np.flatnonzero(inked.any(0))
    if not len(columns):
        return 0.0
    return float(inked.sum() / (strip.shape[0] * max(columns[-1] - columns[0] + 1, MNIST_BOX)))


def apart(strip: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """The pieces of a strip's ink (H, W), white on black, that stand apart, left to
    right: each as its first and last-but-one column and as MNIST would have it alone
    (uint8 (28, 28, 1); the pen left as drawn, a strip's is already one digit's).

    Ink over ``PIECE`` of the brightest, joined at edges or corners, is a piece; specks
    (under 5% of the largest piece) are left out, and pieces sharing half the narrower's
    columns are one (a 5's detached bar, a broken 4). A piece takes in one pixel round
    its ink: the faint edge of the strokes."""
    strip = np.asarray(strip, np.float32)
    pieces, count = ndimage.label(_inked(strip), np.ones((3, 3)))
    if count == 0:
        return []
    sizes = ndimage.sum_labels(np.ones_like(pieces), pieces, range(1, count + 1))
    spans = sorted((box[1].start, box[1].stop, [label])
                   for label, (box, size) in enumerate(zip(ndimage.find_objects(pieces),
                                                           sizes, strict=True), 1)
                   if size >= 0.05 * sizes.max())
    merged: list[tuple[int, int, list[int]]] = []
    for start, stop, labels in spans:
        if merged:
            first, last, joined = merged[-1]
            if min(stop, last) - start >= 0.5 * min(stop - start, last - first):
                merged[-1] = (first, max(stop, last), joined + labels)
                continue
        merged.append((start, stop, labels))
    edged = [ndimage.binary_dilation(np.isin(pieces, labels), np.ones((3, 3)))
             for _, _, labels in merged]
    out = []
    for (start, stop, _), mask in zip(merged, edged, strict=True):
        piece = np.where(mask, strip, 0.0)
        rows, cols = np.nonzero(piece)
        piece = _whitened(piece[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
        out.append((start, stop, centred(_fitted(piece, MNIST_BOX))))
    return out


def _ink(pixels: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """(the ink, white on black, cropped; its top row; its left column) of gray levels
    (H, W): a light background inverted, the background level taken off; None if no ink."""
    pixels = _dark_paper(pixels)
    return _cropped(np.clip(pixels - np.median(_border(pixels)), 0, 255))


def _cropped(pixels: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """(the ink cropped to what is over ``PIECE`` of its brightest; its top row; its
    left column); None if no ink."""
    ink = np.argwhere(_inked(pixels))
    if len(ink) == 0:
        return None
    (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0) + 1
    return pixels[top:bottom, left:right], int(top), int(left)


def _dark_paper(pixels: np.ndarray) -> np.ndarray:
    """Gray levels as float32, a turned or framed page's fill given the paper's level
    (``_unfilled``), inverted if the picture's border is mostly light."""
    pixels = _unfilled(np.asarray(pixels, np.float32))
    return 255.0 - pixels if np.median(_border(pixels)) > 127 else pixels


# A page turned after it was taken (a scanner's deskew, an editor's rotate) or framed has
# a fill of one level round it, often black or white: along the whole border, where the
# paper's level is read. Within FILL_LEVELS of one level (a JPEG's fill is not exact), at
# most MOST_FILL of the picture, round a page (a rectangle at any angle) of another level
# that holds ink (FILL_CONTRAST from its paper).
FILL_LEVELS = 8
FLAT = 2  # levels: most of a fill's border is within this of one level
MOST_FILL = 0.75
# Over this share a fill is taken only round paper with grain: a shape drawn as thick as a
# page, in one level (a square 0 on the page's pad), is no page.
GRAINLESS_FILL = 0.5
FILL_CONTRAST = 40
FILL_EDGE = 4  # pixels at most
SMALLEST_PAGE = 40  # pixels: MNIST's own pictures, 28 wide, hold no page


def _unfilled(pixels: np.ndarray) -> np.ndarray:
    """Float32 gray levels with the fill round a turned or framed page (the pixels within
    ``FILL_LEVELS`` of the border's commonest level that reach the border, specks in it
    and the page's edge) set to the page's level (its median); unchanged where there is
    no such page."""
    border = _border(pixels)
    levels, counts = np.unique(np.round(border), return_counts=True)
    level = levels[np.argmax(counts)]
    if (np.abs(border - level) <= FLAT).mean() < 0.5:  # no fill: paper has grain
        return pixels
    pieces, count = ndimage.label(np.abs(pixels - level) <= FILL_LEVELS)
    reaches = np.zeros(count + 1, bool)
    reaches[_border(pieces)] = True
    reaches[0] = False
    fill = reaches[pieces]
    if not 0 < fill.mean() <= MOST_FILL:
        return pixels
    rest, _ = ndimage.label(~fill)
    page = ndimage.binary_fill_holes(  # ink as dark as a black fill is the page's too
        rest == 1 + np.argmax(np.bincount(rest.ravel())[1:]))
    outside = 1 - page.mean()
    if outside > MOST_FILL or min(np.ptp(np.nonzero(page), 1)) < SMALLEST_PAGE:
        return pixels
    # the page's edge blends into the fill (and a JPEG rings there): not paper either
    page = ndimage.binary_erosion(page, np.ones((3, 3)), iterations=max(
        1, min(FILL_EDGE, round(0.02 * min(page.shape)))))
    if _rectangle_share(page) < 0.95:
        return pixels
    on_page = pixels[page]
    paper = float(np.median(on_page))
    inked = np.abs(on_page - paper) > FILL_CONTRAST
    if abs(paper - level) <= FILL_LEVELS or not 0.005 <= inked.mean() <= 0.45:
        return pixels  # an outline round the fill's level, a uniform shape, mostly ink
    if outside > GRAINLESS_FILL and np.median(np.abs(on_page[~inked] - paper)) < 1:
        return pixels
    return np.where(page, pixels, np.float32(paper))


def _rectangle_share(region: np.ndarray) -> float:
    """The share of its smallest enclosing rectangle, at any angle, that ``region`` (bool
    (H, W)) fills: 1 for a rectangle, pi/4 for an ellipse."""
    rows = np.flatnonzero(region.any(1))
    if len(rows) < 2:
        return 0.0
    ends = np.concatenate([np.stack([rows, region[rows].argmax(1)], 1),  # pixels' centres
                           np.stack([rows, region.shape[1] - 1 - region[rows, ::-1].argmax(1)],
                                    1)]).astype(np.float64)
    try:
        hull = ends[spatial.ConvexHull(ends).vertices]
    except spatial.QhullError:  # a line of pixels: no rectangle
        return 0.0
    edges = np.roll(hull, -1, 0) - hull
    along = edges / np.linalg.norm(edges, axis=1, keepdims=True)
    across = along[:, ::-1] * [-1, 1]
    areas = np.ptp(hull @ along.T, 0) * np.ptp(hull @ across.T, 0)
    return float(region.sum() / areas.min())


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])


def _number_ink(pixels: np.ndarray) -> tuple[np.ndarray, int, int, float] | None:
    """As ``_ink``, for a photo of a written number: (the ink, its top row, its left
    column, a digit's height: the median of its pieces' ``_digit_heights``); None if no ink.

    Where the light falls unevenly the paper's level is taken off pixel by pixel (its
    grey opening over two thirds of the shorter side), ruled or squared paper's lines are taken
    off (``_without_grid``), and ink that is no digit is left out: the paper's edge, the
    table beside it, a shadow or a line across the page (a piece lying along a side, or
    filled from side to side, twice a digit's height long or more), ruled lines and
    underlines (twice a digit's height wide, under a third of it high), and dust (pieces
    under a tenth of the largest, more than half a digit's height from the others). The
    single-digit reader keeps them: its "not a digit" rule counts scattered ink, and
    there a filled shape is no paper."""
    pixels = _dark_paper(pixels)
    rows, cols = pixels.shape
    # The paper's level: an opening two thirds of the shorter side wide, which no stroke
    # is, the picture held either way (a digit cropped to its ink is no wider).
    paper = ndimage.grey_opening(pixels, size=(max(3, 2 * min(rows, cols) // 3),) * 2)
    if np.subtract(*np.percentile(paper, [95, 5])) > UNEVEN_PAPER:
        pixels = pixels - paper
    pixels = np.clip(pixels - np.median(_border(pixels)), 0, 255)
    if pixels.max() <= 0:
        return None
    pixels = _without_grid(pixels)
    pieces, count = ndimage.label(_inked(pixels), np.ones((3, 3)))
    boxes = ndimage.find_objects(pieces)
    sizes = ndimage.sum_labels(np.ones_like(pieces), pieces, range(1, count + 1))
    heights = np.array([box[0].stop - box[0].start for box in boxes])
    widths = np.array([box[1].stop - box[1].start for box in boxes])
    # The paper's edge, the table beside it, a shadow, a line across the page: a piece
    # lying along a whole side of the picture, or filled and from one side to the other;
    # twice a digit's height long or more (a number cropped to its ink has digits
    # touching its sides, none that long).
    sides = [pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]]
    along = np.max([np.bincount(side, minlength=count + 1)[1:] / len(side) for side in sides],
                   axis=0) >= 0.9
    across = np.array([(box[0].start == 0 and box[0].stop == rows)
                       or (box[1].start == 0 and box[1].stop == cols) for box in boxes])
    edge = along | (across & (sizes >= 0.5 * heights * widths))
    edge &= ~edge.all()  # nothing else: it is what was written
    flat = widths >= 8 * heights  # a line, no digit: left out of a digit's height
    while True:  # the digits' height without the edge, the edge by their height
        big = ~edge & (sizes >= 0.1 * sizes[~edge].max())
        height = float(np.median(_digit_heights(pieces, boxes, np.flatnonzero(
            big & ~flat if (big & ~flat).any() else big))))
        longer = edge & ((heights >= 2 * height) | (widths >= 3 * height))
        if (longer == edge).all():
            break
        edge = longer
    line = big & (widths >= 2 * height) & (heights <= height / 3)
    reach = max(2, round(height / 2))  # a line is under a third of the median: not all are
    near = ndimage.maximum_filter(np.isin(pieces, np.flatnonzero(big & ~line) + 1),
                                  2 * reach + 1)
    small = ~edge & ~big
    dust = small & ~np.isin(np.arange(1, count + 1), pieces[near & (pieces > 0)])
    if (edge | line | dust).any():
        dropped = np.isin(pieces, np.flatnonzero(edge | line | dust) + 1)
        # faint pixels round the strokes kept (their soft edge), the dropped ink's not
        kept = ndimage.maximum_filter((pieces > 0) & ~dropped,
                                      2 * max(2, round(height / 4)) + 1) & ~dropped
        pixels = np.where(kept, pixels, 0)
    ink, top, left = _cropped(pixels)
    return ink, top, left, height


# A piece wider than this times its height is taken for touching digits; their columns'
# 90th percentile of ink heights for a digit's (benchmarks/RESULTS.md, "Touching digits
# cut from a picture").
TOUCHING, COLUMN_QUANTILE = 1.5, 90


def _digit_heights(pieces: np.ndarray, boxes: list, which: np.ndarray) -> np.ndarray:
    """The height of each piece in ``which`` (indices into ``boxes``) as a digit's: its
    box's, or, for touching digits (a piece wider than ``TOUCHING`` times its height
    with no run of ink along a row as long as it is tall), what its columns' ink spans,
    if less: digits each moved up or down a little span a taller box together. A ruled
    line through the digits keeps the box (measured: they are read more often so)."""
    tall = np.empty(len(which))
    for n, i in enumerate(which):
        on = pieces[boxes[i]] == i + 1
        tall[n] = height = on.shape[0]
        if (on.shape[1] <= TOUCHING * height
                or ndimage.binary_opening(on, np.ones((1, height), bool)).any()):
            continue
        spans = height - on.argmax(0) - on[::-1].argmax(0)  # a piece: ink in every column
        spans = spans[spans > height / 3]  # a stroke between two digits: no digit's height
        if len(spans):  # none: a slanting line
            tall[n] = min(height, np.percentile(spans, COLUMN_QUANTILE))
    return tall


def _without_grid(pixels: np.ndarray) -> np.ndarray:
    """Ink (H, W), white on black, without the lines of ruled or squared paper: lines
    through the digits join them into one piece. Lines are taken off by their own level
    (a grey opening along them: a digit's stroke that crosses one keeps what is brighter
    than it), and only where they look like a ruled page or a grid (``_grid_taken_off``);
    else the ink as it was. Lines turned with the photo (up to ``TURN`` degrees) are
    looked for turned back, and then the picture is turned back with them, the writing
    on its lines."""
    brightest = float(pixels.max())
    angle = _turn(pixels)
    if abs(angle) >= TURNED:  # beyond the drift _lines allows, which would leave ink
        turned = Image.fromarray(pixels.astype(np.float32), "F").rotate(
            angle, Image.Resampling.BILINEAR)
        taken_off = _grid_taken_off(np.asarray(turned), brightest)
        if taken_off is not None:
            return taken_off
    taken_off = _grid_taken_off(pixels, brightest)
    return pixels if taken_off is None else taken_off


def _grid_taken_off(pixels: np.ndarray, brightest: float) -> np.ndarray | None:
    """``pixels`` less their lines, or None if they are not on ruled or squared paper:
    three or more pale lines across (``_grid_level``), two of them from side to side
    (``RULED``), and a margin line if there is one; or as many down too, printed alike."""
    across = _lines(pixels, 1)
    level = _grid_level(across, 1, brightest)
    if not level:  # most pictures: no need to look for the other family
        return None
    down = _lines(pixels, 0)
    other = _grid_level(down, 0, brightest)
    if not other:  # ruled paper: lines from side to side, which no digit's strokes are
        on = across > 0.5 * level
        reach = [on[start:stop].any(0).mean() for start, stop in _runs(on.any(1))]
        if np.sum(np.array(reach) >= RULED) < 2:
            return None
        # and its margin line: one from top to bottom (a turned photo's corners cut it)
        return pixels - np.maximum(across, _lines(pixels, 0, int(0.8 * len(pixels))))
    if min(level, other) < 0.5 * max(level, other):  # not printed alike
        return None
    return pixels - np.maximum(across, down)


def _turn(pixels: np.ndarray, blocks: int = 16) -> float:
    """The angle (degrees, as ``Image.rotate`` takes it) that brings lines running nearly
    across the picture level, or 0 where there are not three such lines. The picture is
    cut into ``blocks`` columns whose row means are moved by each angle's slope; a row's
    level is what all but the faintest quarter of the columns reach (lines cross most of
    the width, a digit's stroke a few columns), and the angle is the one whose rows make
    the sharpest profile."""
    rows, cols = pixels.shape
    if cols < 4 * blocks:
        return 0.0
    edges = np.linspace(0, cols, blocks + 1).astype(int)
    means = np.add.reduceat(pixels, edges[:-1], axis=1) / np.diff(edges)
    centres = (edges[:-1] + edges[1:]) / 2 - cols / 2
    reach = int(np.ceil(cols / 2 * np.tan(np.radians(TURN)))) + 1
    padded = np.pad(means, ((reach, reach), (0, 0)))
    angles = np.arange(-TURN, TURN + 1e-9, 0.25)
    shifts = reach + np.round(np.tan(np.radians(angles))[:, None] * centres).astype(int)
    moved = padded[shifts[:, None, :] + np.arange(rows)[None, :, None],
                   np.arange(blocks)]  # (angles, rows, blocks)
    profiles = np.partition(moved, blocks // 4, axis=2)[..., blocks // 4]
    best = int(np.argmax(np.square(profiles).sum(1)))
    across = profiles[best]
    lines = _runs(across > 0.5 * across.max()) if across.max() > 0 else []
    return float(angles[best]) if len(lines) >= 3 else 0.0


def _lines(pixels: np.ndarray, axis: int, length: int = 0) -> np.ndarray:
    """The ink of ``pixels`` (H, W) in straight lines along ``axis`` (1: across, 0: down)
    ``length`` long, or a third of the picture wide or half of it high, which no digit's
    stroke is; a line may drift two pixels aside over that length (a photo turned a
    little)."""
    size = [1, 1]
    size[axis] = max(3, length or pixels.shape[axis] // (3 if axis == 1 else 2))
    aside = ndimage.maximum_filter1d(pixels, 5, axis=1 - axis)
    return np.minimum(ndimage.grey_opening(aside, size=tuple(size)), pixels)


def _grid_level(lines: np.ndarray, axis: int, brightest: float) -> float:
    """The level of ``lines`` (long straight ink along ``axis``) where they are three or
    more lines, most of them evenly spaced (one may be missed, or be a margin), thin
    beside their spacing and fainter than the digits (a grid is printed pale, and a
    tightly cropped 0 or 8 has sides and bars too); else 0."""
    profile = lines.max(axis)
    runs = _runs(profile > 0.1 * brightest)  # under that: the paper's noise
    if len(runs) < 3:
        return 0.0
    # The typical line's level, not the brightest's: a margin line or a digit's long
    # stroke may be darker than the grid.
    level = float(np.median([profile[start:stop].max() for start, stop in runs]))
    runs = _runs(profile > 0.5 * level)
    if len(runs) < 3:
        return 0.0
    starts, stops = runs.T
    spacing = np.diff((starts + stops) / 2)
    step = np.median(spacing)
    grid = (np.mean(np.abs(spacing / step - np.round(spacing / step)) < 0.2) >= 0.75
            and np.max(stops - starts) <= 0.7 * step
            and np.percentile(lines[lines > 0.5 * level], 90) < GRID * brightest)
    return level if grid else 0.0


def _runs(on: np.ndarray) -> np.ndarray:
    """(start, stop) of each run of True in a 1-D bool array: (N, 2)."""
    edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], 1)


# Squared paper's lines are fainter than this share of the brightest ink: at most 0.59 on
# 400 dev pictures, where two of 100 tightly cropped 2-digit numbers have strokes that
# look like a grid at 0.75 and 0.89 (benchmarks/RESULTS.md, "Numbers on squared paper").
GRID = 0.65
# Ruled paper's lines run across this share of the picture's width, which a tightly
# cropped number's strokes do not (benchmarks/RESULTS.md, "Numbers on ruled paper").
RULED = 0.9
# A photo's ruled lines or grid turned up to TURN degrees are found; under TURNED, _lines'
# drift of two pixels over a third of the width takes its lines off as they are.
TURN, TURNED = 6.0, 0.75

# The paper's level varying by more than this (of 255) between its 5th and 95th
# percentile is taken off pixel by pixel; evenly lit paper keeps its border's level.
UNEVEN_PAPER = 32
STRIP_HEIGHT = 32  # the paper's input height (strips.HEIGHT)
STRIP_MARGIN = 16  # background each side of the ink: a field centred on the edge digits
MOST_STRIP_DIGITS = 40  # a picture wider than about this many digits is no number


@dataclasses.dataclass(frozen=True)
class Strip:
    """A picture of a written number as ``strips.compose`` has its numbers."""

    pixels: np.ndarray  # uint8 (32, 32 + 4k, 1), white on black
    left: int  # the picture's column of the ink's left edge
    scale: float  # strip pixels per picture pixel

    def picture_x(self, strip_x: float) -> float:
        """The picture's column of a strip's column."""
        return self.left + (strip_x - STRIP_MARGIN) / self.scale


# MNIST's strokes, a digit scaled to WORK_BOX rows: the 2nd percentile, over 2,000
# training digits, of the 90th percentile of widths along a digit's skeleton (twice the
# distance to the background; benchmarks/RESULTS.md, "Numbers written with a fine pen").
NUMBER_PEN = 8.2


def _number_pen(ink: np.ndarray, scale: float) -> np.ndarray:
    """A number's ink (H, W) with MNIST's pen where its strokes are thinner than MNIST's
    (even the widest tenth along the skeleton under ``NUMBER_PEN``, scaled by ``scale``
    so that a digit is ``WORK_BOX`` tall, or less where the row must shrink to fit):
    the skeleton drawn again with ``PEN`` there, brought back to the ink's own size. A
    hairline shrunk to a strip's 20 pixels fades to nothing. The widest tenth: a ruled
    line through the digits is thin and may be longer than their strokes."""
    big = _scaled(_whitened(ink), scale, Image.Resampling.BOX)
    mask = big > PIECE * 255  # a hairline shrunk fades: all its ink counts, not the brightest's
    skeleton = skeletonize(mask)
    widths = 2 * ndimage.distance_transform_edt(mask)[skeleton]
    if not skeleton.any() or np.percentile(widths, 90) >= NUMBER_PEN:
        return ink
    pen = stroked(skeleton, PEN / 2)
    return np.asarray(Image.fromarray(pen.astype(np.float32), "F")
                      .resize((ink.shape[1], ink.shape[0]), Image.Resampling.BILINEAR))


# A number's line of writing is followed over a Gaussian this many digits' heights wide
# (its sigma): wide enough that a digit keeps its shape, narrow enough for a line turned
# or bent (benchmarks/RESULTS.md, "Numbers written along a sloping line").
LINE_REACH = 1.5


def _levelled(ink: np.ndarray, height: float) -> np.ndarray:
    """A number's ink (H, W), white on black, with its line of writing made level: each
    column moved up or down to bring the ink's centre of mass round it (``LINE_REACH``)
    to one row. A number written along a sloping line, or turned with the photo, has
    its edge digits far off the strip's middle row and shrinks to fit the strip; each
    column keeps its place, so the picture's columns map back as they did. Ink narrower
    than ``TOUCHING`` times a digit's height is one digit, with no line to level."""
    if ink.shape[1] < TOUCHING * height:
        return ink
    rows = np.arange(ink.shape[0], dtype=np.float64)[:, None]
    mass, moment = ink.sum(0, dtype=np.float64), (rows * ink).sum(0)
    near = ndimage.gaussian_filter1d(mass, LINE_REACH * height, mode="constant")
    centre = ndimage.gaussian_filter1d(moment, LINE_REACH * height, mode="constant")
    inked = near > 1e-3 * near.max()  # beyond, no ink to move
    moved = np.where(inked, centre / np.where(inked, near, 1) - moment.sum() / mass.sum(), 0)
    reach = int(np.ceil(np.abs(moved).max()))
    if reach == 0:
        return ink
    padded = np.pad(ink, ((reach, reach), (0, 0)))
    out_rows, cols = np.mgrid[:padded.shape[0], :ink.shape[1]]
    level = ndimage.map_coordinates(padded, [out_rows + moved, cols], order=1)
    kept = np.flatnonzero(_inked(level).any(1))  # the rows only: columns keep their place
    return level[kept[0]:kept[-1] + 1] if len(kept) else ink


def mnist_strip(pixels: np.ndarray, step: int = 4) -> Strip | None:
    """Gray levels (H, W) in [0, 255] of a picture of a written number as a strip the
    swept network reads; None if the picture holds no ink.

    Its ink as ``_number_ink`` finds it (the paper's edge, ruled lines and dust left
    out), its line of writing made level (``_levelled``); its contrast stretched,
    scaled so a digit's height is MNIST's 20-pixel box (the median height of the ink's
    pieces), its centre of mass on the middle row, 16 pixels of background each side
    (half a field: an answer then looks straight at a digit at either end), and the
    width made 32 + ``step`` k. Strokes thinner than
    MNIST's are drawn again with its pen (``_number_pen``); others are left as drawn."""
    found = _number_ink(pixels)
    if found is None:
        return None
    ink, _, left, height = found
    ink = _levelled(ink, height)
    # A digit's height sets the scale, not the number's (a slanted or jittered row of
    # digits is taller than any of them), capped so the whole row fits the strip.
    scale = min(MNIST_BOX / height, (STRIP_HEIGHT - 2) / ink.shape[0])
    if round(ink.shape[1] * scale) > MOST_STRIP_DIGITS * MNIST_BOX:
        return None
    ink = _number_pen(ink, scale * WORK_BOX / MNIST_BOX)
    digits = np.clip(_scaled(_whitened(ink), scale, Image.Resampling.LANCZOS), 0, 255)
    width = max(STRIP_HEIGHT, digits.shape[1] + 2 * STRIP_MARGIN)
    width = STRIP_HEIGHT + -(-(width - STRIP_HEIGHT) // step) * step
    rows = np.arange(digits.shape[0])[:, None]
    centre = (rows * digits).sum() / max(float(digits.sum()), 1e-6)
    top = int(np.clip(round(STRIP_HEIGHT / 2 - centre), 0, STRIP_HEIGHT - digits.shape[0]))
    strip = np.zeros((STRIP_HEIGHT, width), np.float32)
    strip[top:top + digits.shape[0], STRIP_MARGIN:STRIP_MARGIN + digits.shape[1]] = digits
    return Strip(np.clip(strip, 0, 255).astype(np.uint8)[..., None], left,
                 digits.shape[1] / ink.shape[1])

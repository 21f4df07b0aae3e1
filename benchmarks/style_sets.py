"""Pictures the project did not tune on, for the "not a digit" rule: real digits of other
styles (positives) and non-digits of the same styles (negatives), each read through the
image reader a user's picture goes through (``evaluation.mnist_like``).

Two disjoint sets, so that what chooses a rule is not what grades it:

- ``dev``: print fonts (FreeFont, Go) and three handwriting fonts, the MNIST
  *validation* digits re-stroked, seed 1, and its own second shapes and noise (``symbol``:
  crosses, hearts, crescents...; ``texture``: Gaussian, smooth, stripes...). Used to
  compare candidates and set thresholds.
- ``held-out``: fifteen other handwriting fonts, scanned digits of another collection
  (scikit-learn's 8x8 UCI digits, blown up and blurred as a phone photo of a note would
  be), the MNIST *test* digits re-stroked, seed 2, and second shapes and noise of its own
  (``sign``: arrows, bolts, half discs...; ``pattern``: value noise, blocks, scan
  lines...), written before the training they grade and never used to choose. Only
  reported.

Training's non-digits (``lenet_jax.outliers``) come from matplotlib's own fonts and
generators and seeds of their own: none of these sources. The fonts are Debian packages
(``apt-get install``, ``.ci/run``); a missing one is an error, not a smaller set.

    python benchmarks/style_sets.py --ckpt runs/best [--set held-out] [--json out.json]
    python benchmarks/style_sets.py --pretrained original          # a shipped model
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FONTS = Path("/usr/share/fonts")
# Debian packages: fonts-freefont-ttf fonts-go fonts-comic-neue fonts-humor-sans fonts-bwht
# fonts-breip fonts-femkeklaver fonts-kristi fonts-klee fonts-dancingscript
# fonts-kaushanscript fonts-dkg-handwriting fonts-leckerli-one fonts-joscelyn fonts-lobster
DEV_FONTS = ("truetype/freefont/FreeSans.ttf", "truetype/freefont/FreeSerif.ttf",
             "truetype/freefont/FreeMono.ttf", "truetype/freefont/FreeSansBoldOblique.ttf",
             "fonts-go/Go-Regular.ttf", "fonts-go/Go-Mono.ttf", "fonts-go/Go-Bold-Italic.ttf",
             "opentype/comic-neue/ComicNeue-Regular.otf", "truetype/humor-sans/Humor-Sans.ttf",
             "opentype/bwht/BecauseWeBuild-Regular.otf")
HELD_OUT_FONTS = ("truetype/breip/Breip.ttf", "truetype/femkeklaver/femkeklaver.ttf",
                  "truetype/kristi/Kristi.ttf", "truetype/klee/KleeOne-Regular.ttf",
                  "opentype/dancingscript/DancingScript-Regular.otf",
                  "opentype/kaushanscript/KaushanScript-Regular.otf",
                  "truetype/fifthhorseman/dkg.ttf", "truetype/fifthhorseman/dkgBd.ttf",
                  "opentype/bwht/BecauseWeConnect-Regular.otf",
                  "opentype/bwht/BecauseWeCreate-Regular.otf",
                  "opentype/bwht/BecauseWeLearn-Regular.otf",
                  "opentype/bwht/BecauseWeMentor-Regular.otf",
                  "opentype/bwht/BecauseWeOrganize-Regular.otf",
                  "opentype/comic-neue/ComicNeue-BoldItalic.otf",
                  "truetype/leckerli-one/LeckerliOne-Regular.ttf")
DEBIAN_PACKAGES = ("fonts-freefont-ttf", "fonts-go", "fonts-comic-neue", "fonts-humor-sans",
                   "fonts-bwht", "fonts-breip", "fonts-femkeklaver", "fonts-kristi", "fonts-klee",
                   "fonts-dancingscript", "fonts-kaushanscript", "fonts-dkg-handwriting",
                   "fonts-leckerli-one")
# The letters and symbols: none of them looks like a digit.
NON_DIGIT_CHARACTERS = "AEFHKMNPRTWXYaehkmnrwxy#@&?%"


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float,
         steps: int = 12) -> list[tuple[float, float]]:
    angles = np.linspace(np.radians(start), np.radians(end), steps)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


# Each digit as a hand draws it: strokes of points in a unit box (x right, y down; drawn
# DIGIT_WIDTH as wide as tall). The page's browser test draws these with the mouse, and
# ``drawn_digit`` with a pen of any width.
DIGIT_WIDTH = 0.65
DIGIT_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.5, 0.5, 0.45, 0.48, -100, 265, 24)],
    1: [[(0.35, 0.15), (0.6, 0.0), (0.55, 0.5), (0.5, 1.0)]],
    2: [_arc(0.5, 0.28, 0.4, 0.28, 190, 370, 10) + [(0.75, 0.5), (0.05, 1.0), (0.95, 1.0)]],
    3: [_arc(0.45, 0.25, 0.4, 0.25, 200, 450, 12) + _arc(0.45, 0.74, 0.45, 0.26, -90, 150, 12)],
    4: [[(0.15, 0.0), (0.05, 0.62), (0.95, 0.62)], [(0.72, 0.15), (0.7, 1.0)]],
    5: [[(0.9, 0.0), (0.2, 0.0), (0.12, 0.45)] + _arc(0.45, 0.7, 0.45, 0.3, -120, 150, 14)],
    6: [[(0.75, 0.0), (0.35, 0.3)] + _arc(0.5, 0.7, 0.42, 0.3, 190, 540, 20)],
    7: [[(0.05, 0.0), (0.95, 0.0), (0.35, 1.0)]],
    8: [[(0.5 + 0.38 * np.sin(2 * t), 0.5 - 0.49 * np.cos(t))
         for t in np.linspace(0, 2 * np.pi, 36)]],
    9: [_arc(0.5, 0.3, 0.42, 0.3, 10, 370, 20) + [(0.9, 0.4), (0.75, 1.0)]],
}


def drawn_digit(label: int, side: float, pen: float, rng: np.random.Generator) -> Image.Image:
    """``DIGIT_STROKES[label]``, ``side`` pixels tall, drawn with a round ``pen``, a little
    slanted and wobbly, somewhere on a page."""
    page = int(side * 2)
    ink = Image.new("L", (page, page), 0)
    draw = ImageDraw.Draw(ink)
    slant, origin = rng.uniform(-0.15, 0.25), rng.uniform(0.1, 0.4, 2) * page
    for stroke in DIGIT_STROKES[label]:
        points = [(origin[0] + (DIGIT_WIDTH * x + slant * (1 - y)) * side
                   + rng.normal(0, side / 80),
                   origin[1] + y * side + rng.normal(0, side / 80)) for x, y in stroke]
        draw.line(points, fill=255, width=max(1, round(pen)), joint="curve")
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    return on_paper(ink, rng)


def fonts(names: tuple[str, ...]) -> list[Path]:
    paths = [FONTS / name for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"fonts missing (apt-get install {' '.join(DEBIAN_PACKAGES)}): "
                                f"{', '.join(missing)}")
    return paths


def on_paper(ink: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A white-on-black mask as dark ink on light paper, a little uneven, as a photo."""
    mask = np.asarray(ink, np.float32) / 255
    paper, pen = rng.uniform(200, 255), rng.uniform(0, 70)
    page = paper - mask * (paper - pen) + rng.normal(0, 3, mask.shape)
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))


def glyph(font: Path, character: str, rng: np.random.Generator) -> Image.Image:
    """``character`` in ``font`` at a random size (24-110 px), rotated up to 12 degrees,
    somewhere on a page."""
    size = int(rng.integers(24, 110))
    face = ImageFont.truetype(str(font), size)
    side = size * 3
    ink = Image.new("L", (side, side), 0)
    offset = rng.integers(size // 2, size, 2)
    ImageDraw.Draw(ink).text(tuple(int(o) for o in offset), character, fill=255, font=face)
    ink = ink.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    return on_paper(ink, rng)


def restroked(image: np.ndarray, how: str, rng: np.random.Generator) -> Image.Image:
    """An MNIST digit (28, 28) drawn again: 4x larger, then thinner, thicker, blurred,
    at a low resolution or in low contrast."""
    big = Image.fromarray(image).resize((112, 112), Image.Resampling.BICUBIC)
    if how == "thin":
        big = big.point(lambda v: 255 if v > 200 else 0).filter(ImageFilter.MinFilter(3))
    elif how == "thick":
        big = big.filter(ImageFilter.MaxFilter(int(rng.choice([5, 7, 9]))))
    elif how == "blurred":
        big = big.filter(ImageFilter.GaussianBlur(float(rng.uniform(3, 6))))
    elif how == "low resolution":
        small = int(rng.integers(8, 12))
        big = big.resize((small, small), Image.Resampling.BOX).resize(
            (112, 112), Image.Resampling.BILINEAR)
    elif how == "low contrast":
        page = 150 - np.asarray(big, np.float32) * rng.uniform(0.12, 0.3)
        return Image.fromarray(np.clip(page + rng.normal(0, 2, page.shape), 0, 255)
                               .astype(np.uint8))
    return on_paper(big, rng)


def scanned(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A UCI digit (8x8, 0-16) as a blurry low-resolution photo of a note."""
    ink = Image.fromarray((image * 255 / 16).astype(np.uint8))
    side = int(rng.integers(24, 64))
    ink = ink.resize((side, side), Image.Resampling.BICUBIC)
    ink = ink.filter(ImageFilter.GaussianBlur(side / 24))
    framed = Image.new("L", (side * 2, side * 2), 0)
    framed.paste(ink, (side // 2, side // 2))
    return on_paper(framed, rng)


def scribble(rng: np.random.Generator) -> Image.Image:
    ink = Image.new("L", (128, 128), 0)
    corners = rng.integers(10, 118, (int(rng.integers(4, 12)), 2))
    points = [(int(x), int(y)) for x, y in corners]
    ImageDraw.Draw(ink).line(points, fill=255, width=int(rng.integers(3, 12)), joint="curve")
    return on_paper(ink, rng)


def shape(rng: np.random.Generator) -> Image.Image:
    """A filled rectangle, ellipse, triangle or polygon, or a triangle's or a star's
    outline (a ring would be a fair 0)."""
    ink = Image.new("L", (128, 128), 0)
    draw = ImageDraw.Draw(ink)
    a, b = rng.integers(8, 50, 2), rng.integers(78, 120, 2)
    box = [int(a[0]), int(a[1]), int(b[0]), int(b[1])]
    kind, width = int(rng.integers(0, 6)), int(rng.integers(3, 12))
    triangle = [(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])]
    if kind == 0:
        draw.rectangle(box, fill=255)
    elif kind == 1:
        draw.ellipse(box, fill=255)
    elif kind == 2:
        draw.polygon(triangle, fill=255)
    elif kind == 3:
        draw.regular_polygon((64, 64, int(rng.integers(30, 55))), int(rng.integers(5, 9)),
                             fill=255)
    elif kind == 4:
        draw.line([*triangle, triangle[0]], fill=255, width=width, joint="curve")
    else:
        angles = np.linspace(0, 4 * np.pi, 6) + rng.uniform(0, np.pi)
        radius = rng.uniform(30, 55)
        draw.line([(64 + radius * np.sin(t), 64 - radius * np.cos(t)) for t in angles],
                  fill=255, width=width, joint="curve")
    return on_paper(ink, rng)


def noise(rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(16, 128))
    pixels = rng.integers(0, 256, (side, side), dtype=np.uint8)
    if rng.integers(0, 2):
        return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3))))
    return Image.fromarray(pixels)


def _turned(points: list[tuple[float, float]], centre: np.ndarray, scale: float,
            angle: float) -> list[tuple[float, float]]:
    c, s = np.cos(angle), np.sin(angle)
    return [(centre[0] + scale * (x * c - y * s), centre[1] + scale * (x * s + y * c))
            for x, y in points]


def symbol(rng: np.random.Generator) -> Image.Image:
    """The dev set's second shapes: a wide bar, an outlined square or hexagon, a triangle
    at any angle, a cross, a heart, a five-pointed star, a crescent."""
    ink = Image.new("L", (128, 128), 0)
    draw = ImageDraw.Draw(ink)
    kind, width = int(rng.integers(0, 8)), int(rng.integers(4, 14))
    cx, cy = 64 + rng.integers(-10, 10, 2)
    r = int(rng.integers(25, 55))
    if kind == 0:
        draw.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=255)
    elif kind == 1:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], outline=255, width=width)
    elif kind == 2:
        draw.regular_polygon((int(cx), int(cy), r), 3, rotation=float(rng.uniform(0, 360)),
                             fill=255)
    elif kind == 3:
        draw.line([(cx - r, cy), (cx + r, cy)], fill=255, width=width)
        draw.line([(cx, cy - r), (cx, cy + r)], fill=255, width=width)
        if rng.integers(0, 2):
            ink = ink.rotate(45)
    elif kind == 4:
        draw.ellipse([cx - r, cy - r // 2, cx, cy + r // 4], fill=255)
        draw.ellipse([cx, cy - r // 2, cx + r, cy + r // 4], fill=255)
        draw.polygon([(cx - r, cy), (cx + r, cy), (cx, cy + r)], fill=255)
    elif kind == 5:
        draw.polygon([(cx + (r if k % 2 == 0 else 0.4 * r) * np.sin(k * np.pi / 5),
                       cy - (r if k % 2 == 0 else 0.4 * r) * np.cos(k * np.pi / 5))
                      for k in range(10)], fill=255)
    elif kind == 6:
        draw.regular_polygon((int(cx), int(cy), r), 6, rotation=float(rng.uniform(0, 60)),
                             outline=255, width=width)
    else:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        draw.ellipse([cx - r + int(0.6 * r), cy - r, cx + r + int(0.6 * r), cy + r], fill=0)
    return on_paper(ink, rng)


def sign(rng: np.random.Generator) -> Image.Image:
    """The held-out set's second shapes: a half disc, a pie with a slice out, an arrow, a
    trapezoid, a wide rounded frame, a diamond, two nested squares, a lightning bolt, a
    triangle pointing down."""
    ink = Image.new("L", (160, 160), 0)
    draw = ImageDraw.Draw(ink)
    kind = int(rng.integers(0, 9))
    centre = 80 + rng.integers(-15, 15, 2)
    cx, cy = (float(v) for v in centre)
    r, width = float(rng.uniform(30, 65)), int(rng.integers(5, 16))
    if kind == 0:
        draw.pieslice([cx - r, cy - r, cx + r, cy + r], 0, 180, fill=255)
    elif kind == 1:
        a = float(rng.uniform(20, 50))
        draw.pieslice([cx - r, cy - r, cx + r, cy + r], a, 360 - a, fill=255)
    elif kind == 2:
        arrow = [(-1, -.25), (.3, -.25), (.3, -.6), (1, 0), (.3, .6), (.3, .25), (-1, .25)]
        draw.polygon(_turned(arrow, centre, r, rng.uniform(0, 2 * np.pi)), fill=255)
    elif kind == 3:
        t = rng.uniform(.2, .8)
        draw.polygon([(cx - r, cy + r * .6), (cx + r, cy + r * .6), (cx + r * t, cy - r * .6),
                      (cx - r * t, cy - r * .6)], fill=255)
    elif kind == 4:
        draw.rounded_rectangle([cx - r, cy - r * .5, cx + r, cy + r * .5], radius=int(r * .2),
                               outline=255, width=width)
    elif kind == 5:
        draw.polygon([(cx, cy - r), (cx + r * .7, cy), (cx, cy + r), (cx - r * .7, cy)],
                     fill=255)
    elif kind == 6:
        for q in (1.0, 0.55):
            draw.rectangle([cx - r * q, cy - r * q, cx + r * q, cy + r * q], outline=255,
                           width=width)
    elif kind == 7:
        bolt = [(.1, -1), (-.5, .1), (-.05, .1), (-.2, 1), (.5, -.2), (.05, -.2), (.3, -1)]
        draw.polygon(_turned(bolt, centre, r, 0.0), fill=255)
    else:
        draw.line([(cx - r, cy - r * .7), (cx + r, cy - r * .7), (cx, cy + r * .8),
                   (cx - r, cy - r * .7)], fill=255, width=width, joint="curve")
    return on_paper(ink, rng)


def texture(rng: np.random.Generator) -> Image.Image:
    """The dev set's second noise: Gaussian, salt and pepper, smooth (a few levels
    enlarged), stripes or checks, a blurred texture stretched in contrast."""
    kind, side = int(rng.integers(0, 5)), int(rng.integers(28, 200))
    if kind == 0:
        page = rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (side, side))
    elif kind == 1:
        page = np.where(rng.random((side, side)) < rng.uniform(0.02, 0.5), 0.0, 255.0)
    elif kind == 2:
        grid = int(rng.integers(3, 10))
        levels = Image.fromarray((rng.random((grid, grid)) * 255).astype(np.uint8))
        page = np.asarray(levels.resize((side, side), Image.Resampling.BICUBIC), np.float64)
    elif kind == 3:
        rows, cols = np.mgrid[0:128, 0:128]
        period, angle = rng.uniform(6, 40), rng.uniform(0, np.pi)
        wave = np.sin((cols * np.cos(angle) + rows * np.sin(angle)) * 2 * np.pi / period)
        if rng.integers(0, 2):
            wave = wave * np.sin((cols * np.sin(angle) - rows * np.cos(angle)) * 2 * np.pi / period)
        page = (wave > 0) * 255.0
    else:
        grain = np.clip(rng.normal(128, 40, (96, 96)), 0, 255).astype(np.uint8)
        blurred = np.asarray(Image.fromarray(grain).filter(
            ImageFilter.GaussianBlur(float(rng.uniform(1, 6)))), np.float64)
        page = (blurred - blurred.mean()) * rng.uniform(2, 6) + 128
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))


def pattern(rng: np.random.Generator) -> Image.Image:
    """The held-out set's second noise: value noise in three octaves, blocks, faint noise
    on white, scan lines, blurred salt and pepper."""
    kind, side = int(rng.integers(0, 5)), int(rng.integers(32, 180))
    if kind == 0:
        page = np.zeros((side, side), np.float32)
        for octave in (4, 8, 16):
            levels = Image.fromarray(rng.random((octave, octave)).astype(np.float32), "F")
            page += np.asarray(levels.resize((side, side), Image.Resampling.BILINEAR)) * 4 / octave
        page = (page - page.min()) / (np.ptp(page) + 1e-6) * 255
    elif kind == 1:
        block = int(rng.integers(4, 16))
        levels = rng.integers(0, 256, (side // block + 1,) * 2)
        page = np.kron(levels, np.ones((block, block)))[:side, :side]
    elif kind == 2:
        page = 235 + rng.normal(0, rng.uniform(5, 25), (side, side))
    elif kind == 3:
        page = np.repeat(rng.integers(0, 256, (side, 1)), side, 1) + rng.normal(0, 20, (side, side))
    else:
        dots = np.where(rng.random((side, side)) < rng.uniform(.05, .3), 0, 255).astype(np.uint8)
        page = np.asarray(Image.fromarray(dots).filter(
            ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2)))), np.float32)
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))


def specks(rng: np.random.Generator) -> Image.Image:
    page = np.full((128, 128), rng.uniform(200, 255)) + rng.normal(0, 3, (128, 128))
    rows, cols = rng.integers(0, 128, (2, int(rng.integers(1, 12))))
    page[rows, cols] = rng.uniform(0, 90)
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))


# Per set: fonts, seed, MNIST split, and its own second generators of shapes and noise.
SETS = {"dev": (DEV_FONTS, 1, "validation", symbol, texture),
        "held-out": (HELD_OUT_FONTS, 2, "test", sign, pattern)}


def sources(name: str) -> dict[str, tuple[bool, Callable[[], Iterator[tuple[Image.Image, int]]]]]:
    """Each source of set ``name``: (is a digit, pictures with their labels; -1: none)."""
    font_names, seed, mnist_split, second_shape, second_noise = SETS[name]
    paths = fonts(font_names)

    def digits_in_fonts():
        rng = np.random.default_rng(seed)
        for font in paths:
            for label in range(10):
                for _ in range(2):
                    yield glyph(font, str(label), rng), label

    def letters_in_fonts():
        rng = np.random.default_rng(seed + 100)
        for font in paths:
            for character in NON_DIGIT_CHARACTERS:
                yield glyph(font, character, rng), -1

    def mnist_restroked(how: str):
        def pictures():
            from lenet_jax import data
            mnist = data.load("mnist")
            split = (mnist.test if mnist_split == "test"
                     else mnist.train.take(slice(-5000, None)))
            rng = np.random.default_rng(seed + 200)
            for i in rng.choice(len(split), 100, replace=False):
                yield restroked(split.images[i, ..., 0], how, rng), int(split.labels[i])
        return pictures

    def uci_scans():
        from sklearn.datasets import load_digits
        uci = load_digits()
        rng = np.random.default_rng(seed + 300)
        half = slice(0, 898) if name == "dev" else slice(898, None)  # two disjoint halves
        images, labels = uci.images[half], uci.target[half]
        for i in rng.choice(len(images), 200, replace=False):
            yield scanned(images[i], rng), int(labels[i])

    def generated(make: Callable, count: int, offset: int):
        def pictures():
            rng = np.random.default_rng(seed + offset)
            for _ in range(count):
                yield make(rng), -1
        return pictures

    def digits_drawn():  # side 30-300 px, a pen of 1 to 20% of the side
        rng = np.random.default_rng(seed + 800)
        for n in range(200):
            side = float(rng.uniform(30, 300))
            yield drawn_digit(n % 10, side, side * rng.uniform(0.01, 0.2), rng), n % 10

    table = {"digits in fonts": (True, digits_in_fonts), "UCI scans": (True, uci_scans),
             "digits drawn, any pen": (True, digits_drawn)}
    for how in ("thin", "thick", "blurred", "low resolution", "low contrast"):
        table[f"MNIST {how}"] = (True, mnist_restroked(how))
    table |= {"letters and symbols": (False, letters_in_fonts),
              "scribbles": (False, generated(scribble, 100, 400)),
              "shapes": (False, generated(shape, 100, 500)),
              f"{second_shape.__name__}s": (False, generated(second_shape, 200, 900)),
              "noise": (False, generated(noise, 100, 600)),
              f"{second_noise.__name__}s": (False, generated(second_noise, 200, 1000)),
              "blank with specks": (False, generated(specks, 100, 700))}
    return table


def png(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def read(name: str) -> dict[str, tuple[bool, np.ndarray, np.ndarray]]:
    """Set ``name`` as the reader gives it: source -> (is a digit, uint8 (N, 28, 28, 1),
    labels). A picture the reader refuses as blank is left out (none is, by design)."""
    from lenet_jax import evaluation

    out = {}
    for source, (is_digit, pictures) in sources(name).items():
        images, labels = [], []
        for picture, label in pictures():
            try:
                images.append(evaluation.mnist_like(png(picture)))
            except evaluation.ImageError:
                continue
            labels.append(label)
        out[source] = (is_digit, np.stack(images), np.asarray(labels))
    return out


def table(predictor, pictures: dict) -> list[dict]:
    """Per source: pictures, "not a digit" rate and (digits) top-1 accuracy."""
    rows = []
    for source, (is_digit, images, labels) in pictures.items():
        answers = predictor.answer(images)
        rejected = np.array([bool(a.rejected) for a in answers])
        top1 = np.array([int(a.top[0][0]) for a in answers])
        rows.append({"source": source, "digits": is_digit, "count": len(images),
                     "rejected": float(rejected.mean()),
                     "top1": float((top1 == labels).mean()) if is_digit else None})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| source | pictures | top-1 right | said \"not a digit\" |", "|---|---|---|---|"]
    for r in rows:
        top1 = f"{100 * r['top1']:.1f}%" if r["digits"] else "–"
        lines.append(f"| {r['source']} | {r['count']} | {top1} | {100 * r['rejected']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt", help="a checkpoint (as evaluate.py --ckpt takes it)")
    which.add_argument("--pretrained", metavar="PRESET", help="a model shipped in the package")
    parser.add_argument("--set", default="held-out", choices=SETS)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    from lenet_jax import evaluation

    predictor = (evaluation.Predictor.load(args.ckpt) if args.ckpt
                 else evaluation.Predictor.pretrained(args.pretrained))
    rows = table(predictor, read(args.set))
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

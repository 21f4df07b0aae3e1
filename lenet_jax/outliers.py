"""Training's non-digits: the pictures outlier exposure teaches the network to be unsure
of (Hendrycks et al., 2019, "Deep anomaly detection with outlier exposure"; the 1998
paper's own SDNN trained a rubbish class the same way).

``bank`` draws them once per run, from a seed, and reads each through the image
reader's own normalisation (``ink.mnist_digit``), so they look as a user's picture will:
letters and symbols no digit resembles, in the fonts matplotlib ships (DejaVu, STIX,
Computer Modern: on every machine that has matplotlib), printed and as if written,
scribbles, filled shapes, noise and specks. The pictures the rule is judged on
(``benchmarks/style_sets.py``) come from other fonts and other generators, none of these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage
from skimage.morphology import skeletonize

from lenet_jax import files, ink
from lenet_jax.data import default_cache_dir, digest

# No digit looks like these (O, I, l, S, Z, B, G, g, q, b, D, J, Q, z, s, i, j, and
# ( ) / | ! are left out: each is some digit in somebody's hand).
CHARACTERS = "ACEFHKLMNPRTUVWXYacefhkmnprtuvwxy#@&?%*+=$<>{}~^"
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
              "DejaVuSans-BoldOblique.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
              "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
              "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
              "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmss10.ttf",
              "cmtt10.ttf", "cmti10.ttf", "cmb10.ttf")
GENERATED = 2400  # scribbles, shapes, noise and specks, a quarter each
SEED = 1998


def font_paths() -> list[Path]:
    import matplotlib

    directory = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [directory / name for name in FONT_FILES]


def cached_bank(seed: int = SEED) -> np.ndarray:
    """``bank(seed)``, kept in ``~/.cache/lenet_jax/outliers`` (``$LENET_JAX_CACHE``)."""
    return _cached(f"bank-{seed}", lambda: (bank(seed),))[0]


def cached_restyled(images: np.ndarray, labels: np.ndarray,
                    seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``restyled(images, labels, seed)``, kept beside the bank under a name that changes
    with the digits too."""
    name = f"restyled-{seed}-{digest(images)[:12]}-{digest(labels)[:12]}"
    return _cached(name, lambda: restyled(images, labels, seed))


def _cached(name: str, draw: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``draw()``'s arrays (uint8 pictures first), kept under ``name`` and a fingerprint of
    this code, the reader's and the libraries that draw: drawing and reading take
    seconds, loading milliseconds. A damaged or unwritable cache costs the drawing only."""
    path = default_cache_dir() / "outliers" / f"{name}-{_fingerprint()}.npz"
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = tuple(saved[f"arr_{n}"] for n in range(len(saved.files)))
        pictures = arrays[0]
        if (pictures.dtype == np.uint8 and pictures.shape[1:] == (ink.MNIST_SIZE,) * 2 + (1,)
                and all(len(a) == len(pictures) for a in arrays)):
            return arrays
    except Exception:  # absent, or damaged in any of numpy's ways: drawn again
        pass
    drawn = draw()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.replacing(path) as tmp:
            np.savez(tmp, *drawn)
    except OSError:
        pass
    return drawn


def _fingerprint() -> str:
    import matplotlib
    import PIL
    import skimage

    parts = [Path(__file__).read_bytes(), Path(ink.__file__).read_bytes(),
             f"{PIL.__version__} {matplotlib.__version__} {skimage.__version__}".encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def bank(seed: int = SEED) -> np.ndarray:
    """uint8 (N, 28, 28, 1) non-digits as the image reader gives them, white on black; a
    function of ``seed`` (and of the installed fonts and Pillow) alone."""
    rng = np.random.default_rng(seed)
    # Per font and character: twice printed, twice as if written (sizes, slants, pens).
    pictures = [draw(font, character, rng) for font in font_paths()
                for character in CHARACTERS for draw in (_glyph, _glyph, _written, _written)]
    makers = (_scribble, _shape, _noise, _specks)
    pictures += [makers[n % len(makers)](rng) for n in range(GENERATED)]
    digits = [ink.mnist_digit(np.asarray(p, np.float32)) for p in pictures]
    return np.stack([d for d in digits if d is not None and not _upright_bar(d)])


def restyled(images: np.ndarray, labels: np.ndarray, seed: int = SEED,
             count: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """``count`` of these MNIST digits photographed worse (scanned at a few pixels,
    blurred, thinner, thicker, fainter) and read back through ``ink.mnist_digit``: the
    digits as the reader gives such pictures, with their labels."""
    rng = np.random.default_rng(seed + 1)
    chosen = rng.choice(len(images), min(count, len(images)), replace=False)
    read = [ink.mnist_digit(np.asarray(_worse(images[i, ..., 0], rng), np.float32))
            for i in chosen]
    kept = [n for n, digit in enumerate(read) if digit is not None]
    return np.stack([read[n] for n in kept]), np.asarray(labels)[chosen[kept]]


def _worse(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    picture = Image.fromarray(digit)
    kind = int(rng.integers(0, 5))
    if kind == 0:  # a few pixels, enlarged and blurred
        small = int(rng.integers(6, 13))
        picture = picture.resize((small, small), Image.Resampling.BOX)
        side = int(rng.integers(24, 72))
        return picture.resize((side, side), Image.Resampling.BICUBIC).filter(
            ImageFilter.GaussianBlur(float(rng.uniform(0, side / 16))))
    picture = picture.resize((84, 84), Image.Resampling.BICUBIC)
    if kind == 1:
        return picture.filter(ImageFilter.GaussianBlur(float(rng.uniform(2, 7))))
    if kind == 2:
        return picture.point(lambda v: 255 * (v > 180)).filter(ImageFilter.MinFilter(3))
    if kind == 3:
        return picture.filter(ImageFilter.MaxFilter(int(rng.choice([5, 7, 9, 11]))))
    return picture.point(lambda v: v * float(rng.uniform(0.1, 0.4)))


def _upright_bar(digit: np.ndarray) -> bool:
    """Ink at least 2.5x taller than wide: a 1 in MNIST's eyes, whatever drew it (two
    specks one above the other, a dash, a bar)."""
    rows, cols = np.nonzero(digit[..., 0] > 64)
    return rows.size > 0 and np.ptp(rows) + 1 >= 2.5 * (np.ptp(cols) + 1)


def _printed(font: Path, character: str, size: int) -> Image.Image:
    """``character`` in ``font`` at ``size`` px, white on black, on a page 3x as wide."""
    page = Image.new("L", (size * 3, size * 3), 0)
    ImageDraw.Draw(page).text((size, size // 2), character, fill=255,
                              font=ImageFont.truetype(str(font), size))
    return page


def _glyph(font: Path, character: str, rng: np.random.Generator) -> Image.Image:
    page = _printed(font, character, int(rng.integers(28, 96)))
    return page.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)


def _written(font: Path, character: str, rng: np.random.Generator) -> Image.Image:
    """``character`` as a hand might write it, from a print font: slanted, squeezed, bent
    by a smooth random field (Simard et al., 2003: elastic distortion), then its skeleton
    drawn again with a round pen. Print glyphs alone left most letters in handwriting
    fonts passing as digits (benchmarks/RESULTS.md)."""
    size = int(rng.integers(40, 96))
    page = _printed(font, character, size)
    mask = np.asarray(page, np.float32) / 255
    rows, cols = np.mgrid[0:mask.shape[0], 0:mask.shape[1]].astype(np.float32)
    centre = mask.shape[0] / 2
    shear, squeeze = rng.uniform(-0.4, 0.4), rng.uniform(0.7, 1.3)
    bend = [ndimage.gaussian_filter(rng.normal(size=mask.shape), size / 5) for _ in range(2)]
    bend = [b * (size * rng.uniform(0.04, 0.1) / max(float(np.abs(b).max()), 1e-9))
            for b in bend]
    source_cols = (cols - centre) * squeeze + (rows - centre) * shear + centre + bend[0]
    bent = ndimage.map_coordinates(mask, [rows + bend[1], source_cols], order=1) > 0.5
    if not bent.any():
        return page
    skeleton = skeletonize(bent)
    radius = size * rng.uniform(0.02, 0.09)
    pen = ink.stroked(skeleton, radius)
    return Image.fromarray(pen.astype(np.uint8)).rotate(
        float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)


def _scribble(rng: np.random.Generator) -> Image.Image:
    page = Image.new("L", (96, 96), 0)
    turns = rng.integers(4, 96 - 4, (int(rng.integers(5, 14)), 2))
    ImageDraw.Draw(page).line([(int(x), int(y)) for x, y in turns], fill=255,
                              width=int(rng.integers(2, 14)), joint="curve")
    return page


def _shape(rng: np.random.Generator) -> Image.Image:
    """Filled: a rectangle, an ellipse, a polygon. Outlined: a polygon with corners, a
    star, a grid, an arrow (no ring: that is a 0). Half of them squeezed to 30-100% of
    their width."""
    page = Image.new("L", (96, 96), 0)
    draw = ImageDraw.Draw(page)
    corner, far = rng.integers(4, 40, 2), rng.integers(56, 92, 2)
    box = (int(corner[0]), int(corner[1]), int(far[0]), int(far[1]))
    kind, pen = int(rng.integers(0, 7)), int(rng.integers(2, 12))
    sides = int(rng.integers(3, 7))
    turn = rng.uniform(0, 2 * np.pi)
    radius = rng.uniform(25, 45)
    polygon = [(48 + radius * np.cos(turn + 2 * np.pi * k / sides),
                48 + radius * np.sin(turn + 2 * np.pi * k / sides)) for k in range(sides)]
    if kind == 0:
        draw.rectangle(box, fill=255)
    elif kind == 1:
        draw.ellipse(box, fill=255)
    elif kind == 2:
        draw.polygon(polygon, fill=255)
    elif kind == 3:
        draw.line([*polygon, polygon[0]], fill=255, width=pen, joint="curve")
    elif kind == 4:
        star = [polygon[(2 * k) % sides] for k in range(sides + 1)] if sides % 2 else polygon
        draw.line([*star, star[0]], fill=255, width=pen, joint="curve")
    elif kind == 5:
        step = int(rng.integers(14, 30))
        for v in range(box[0], box[2], step):
            draw.line([(v, box[1]), (v, box[3])], fill=255, width=pen)
        for v in range(box[1], box[3], step):
            draw.line([(box[0], v), (box[2], v)], fill=255, width=pen)
    else:
        tip, tail = polygon[0], (96 - polygon[0][0], 96 - polygon[0][1])
        draw.line([tail, tip], fill=255, width=pen)
        for side in (-0.5, 0.5):
            angle = np.arctan2(tail[1] - tip[1], tail[0] - tip[0]) + side
            draw.line([tip, (tip[0] + 25 * np.cos(angle), tip[1] + 25 * np.sin(angle))],
                      fill=255, width=pen)
    if rng.integers(0, 2):  # drawn shapes come in any proportions: a tall thin triangle too
        width = int(96 * rng.uniform(0.3, 1))
        narrow, page = page.resize((width, 96), Image.Resampling.BILINEAR), Image.new("L", (96, 96))
        page.paste(narrow, ((96 - width) // 2, 0))
    return page


def _noise(rng: np.random.Generator) -> Image.Image:
    side = int(rng.integers(8, 96))
    noise = Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8))
    if rng.integers(0, 2):
        noise = noise.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 4))))
    return noise


def _specks(rng: np.random.Generator) -> Image.Image:
    page = np.zeros((96, 96), np.uint8)
    rows, cols = rng.integers(0, 96, (2, int(rng.integers(2, 20))))
    page[rows, cols] = 255
    return Image.fromarray(page).filter(ImageFilter.MaxFilter(int(rng.choice([1, 3, 5]))))

"""The neighbourhood table of scikit-image's 2-D ``skeletonize``, recovered from what it
does, for the static page's reader (``lenet_jax/static/ink.js``, ``THINNING``).

scikit-image thins as Zhang and Suen (1984) do, two parallel sub-passes a round, but reads
each pixel's fate from a table that is not the paper's conditions. Starting from the
paper's table, each entry in turn takes the value (0 kept, 1 removed in the first
sub-pass, 2 in the second, 3 in both) that makes this simulation agree with
``skeletonize`` on 3,000 random blobs, until they agree on every pixel.

    python benchmarks/skeleton_table.py           # derive it (about 2 minutes), print it
    python benchmarks/skeleton_table.py --check   # ink.js's table against skeletonize
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

INK_JS = Path(__file__).resolve().parents[1] / "lenet_jax" / "static" / "ink.js"


def paper_table() -> np.ndarray:
    """The paper's conditions; bits NW 1, N 2, NE 4, E 8, SE 16, S 32, SW 64, W 128."""
    table = np.zeros(256, np.uint8)
    for code in range(256):
        nw, n, ne, e, se, s, sw, w = ((code >> i) & 1 for i in range(8))
        ring = [n, ne, e, se, s, sw, w, nw]
        rises = sum(not ring[i] and ring[(i + 1) % 8] for i in range(8))
        if 2 <= sum(ring) <= 6 and rises == 1:
            table[code] = (n * e * s == 0 and e * s * w == 0) | (
                (n * e * w == 0 and n * s * w == 0) << 1)
    return table


def thin(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning with ``table``."""
    im = np.pad(image.astype(np.uint8), 1)
    while True:
        removed = False
        for sub_pass in (1, 2):
            code = (im[:-2, :-2] + 2 * im[:-2, 1:-1] + 4 * im[:-2, 2:] + 8 * im[1:-1, 2:]
                    + 16 * im[2:, 2:] + 32 * im[2:, 1:-1] + 64 * im[2:, :-2]
                    + 128 * im[1:-1, :-2])
            gone = (im[1:-1, 1:-1] == 1) & ((table[code] & sub_pass) > 0)
            if gone.any():
                removed = True
                im[1:-1, 1:-1][gone] = 0
        if not removed:
            return im[1:-1, 1:-1].astype(bool)


def blobs(count: int = 3000, seed: int = 0) -> np.ndarray:
    """``count`` random blobs (3-13 px a side, some closed) on one page, 2 px apart."""
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(count):
        h, w = rng.integers(3, 14, 2)
        tile = rng.random((h, w)) < rng.uniform(0.3, 0.95)
        if rng.random() < 0.5:
            tile = ndimage.binary_closing(tile)
        tiles.append(np.pad(tile, ((2, 18 - h), (2, 18 - w))))
    return np.concatenate([np.concatenate(tiles[i:i + 60], 1)
                           for i in range(0, count, 60)], 0)


def derive(page: np.ndarray) -> np.ndarray:
    want = skeletonize(page)
    table = paper_table()
    wrong = int((thin(page, table) != want).sum())
    while wrong:
        before = wrong
        for code in range(256):
            for value in range(4):
                old, table[code] = table[code], value
                now = int((thin(page, table) != want).sum())
                if now < wrong:
                    wrong = now
                else:
                    table[code] = old
        if wrong == before:
            raise SystemExit(f"skeleton_table.py: stuck with {wrong} pixels wrong")
    return table


def ink_js_table() -> np.ndarray:
    text = INK_JS.read_text()
    block = re.search(r"const THINNING = \((.*?)\)\.split", text, re.S).group(1)
    return np.array([int(d) for d in "".join(re.findall(r'"(\d+)"', block))], np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="check ink.js's table against skeletonize instead")
    args = parser.parse_args()
    page = blobs()
    if args.check:
        wrong = int((thin(page, ink_js_table()) != skeletonize(page)).sum())
        print(f"ink.js's table: {wrong} of {page.size} pixels unlike skeletonize's")
        return 0 if wrong == 0 else 1
    print("".join(map(str, derive(page))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

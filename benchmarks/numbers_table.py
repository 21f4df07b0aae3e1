"""How well a number reader reads (#29): string accuracy on 1,000 test strips per length
1-6 and 1,000 of touching digits (``strips.compose`` on MNIST's test split; a number
said to be "not a number" is not read), the share said "not a number", the single
digits of the test split, and numbers printed by a second generator that the package
does not contain, read from PNG files through ``lenet-jax read --json``, as a user's
pictures are. Writes a table (markdown) and, with ``--figure``, the paper-style figure
of one strip.

    python benchmarks/numbers_table.py                      # the shipped reader
    python benchmarks/numbers_table.py --ckpt runs/best --count 200

The second generator ("printed"): whole 28x28 MNIST boxes (not cut to their ink), each
digit scaled on its own (75-130% of a height of 40-110 px), set at gaps of -15% to +60% of
a box, the row sloped by up to 3 degrees, dark ink (gray 0-80) on light paper (gray
170-255) with noise, saved as PNG: sizes, spacing, slope, contrast and resampling that
training's strips never have.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from lenet_jax import data, inference, reading, strips  # noqa: E402


def printed(images: np.ndarray, labels: np.ndarray, length: int,
            rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One number of ``length`` digits as a photo-like picture, and its digits."""
    height = int(rng.integers(40, 111))
    picks = rng.integers(0, len(images), length)
    boxes = []
    for i in picks:
        side = max(8, int(height * rng.uniform(0.75, 1.3)))
        boxes.append(Image.fromarray(images[i, ..., 0]).resize((side, side),
                                                                Image.Resampling.BICUBIC))
    gaps = (rng.uniform(-0.15, 0.6, length) * height).astype(int)
    width = sum(b.width for b in boxes) + int(gaps[1:].sum()) + 2 * height
    canvas = Image.new("L", (max(width, 2 * height), 3 * height), 0)
    x = height
    for box, gap, k in zip(boxes, gaps, range(length), strict=True):
        x += int(gap) if k else 0
        y = (canvas.height - box.height) // 2 + int(rng.integers(-height // 12, height // 12 + 1))
        region = canvas.crop((x, y, x + box.width, y + box.height))
        canvas.paste(Image.fromarray(np.maximum(np.asarray(region), np.asarray(box))), (x, y))
        x += box.width
    canvas = canvas.rotate(float(rng.uniform(-3, 3)), Image.Resampling.BICUBIC)
    ink_level, paper = rng.uniform(0, 80), rng.uniform(170, 255)
    values = np.asarray(canvas, np.float32) / 255
    picture = paper + (ink_level - paper) * values + rng.normal(0, 6, values.shape)
    digits = "".join(str(labels[i]) for i in picks)
    return Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)), digits


def read_files(paths: list[Path], flags: list[str]) -> list[str | None]:
    """Each picture's number as ``lenet-jax read --json`` gives it; None: "not a number"."""
    result = subprocess.run([sys.executable, "-m", "lenet_jax", "read", "--json", *flags,
                             *map(str, paths)], capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"lenet-jax read failed: {result.stderr.strip()}")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return [None if record["rejected"] else record["number"] for record in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="a numbers checkpoint (default: the "
                        "shipped reader)")
    parser.add_argument("--count", type=int, default=1000, help="strips per row")
    parser.add_argument("--figure", default=None, help="write the Fig. 22-24-style figure")
    args = parser.parse_args()
    reader = (reading.NumberReader.load(args.ckpt) if args.ckpt
              else reading.NumberReader.pretrained())
    test = data.load("mnist").test
    rows = []
    start = time.perf_counter()
    for name, lengths, gaps, seed in ([(f"{n} digit{'s' * (n > 1)}", (n, n), strips.GAPS,
                                        100 + n) for n in range(1, 7)]
                                      + [("2-6 digits touching (gaps -4 to 0 px)", (2, 6),
                                          (-4, 0), 107)]):
        made = strips.compose(test.images, test.labels, args.count, seed, lengths, gaps)
        numbers = reader.read([reading.ink.Strip(image, 0, 1.0) for image in made.images])
        swept = [reading.number_of(strips.decode(number.probabilities[None])[0])
                 for number in numbers]  # the same answers, before the second reading
        kept = [None if number.rejected else number.number for number in numbers]
        rows.append((name, *(float(np.mean([got == truth for got, truth
                                            in zip(read, made.numbers, strict=True)]))
                             for read in (swept, kept)),
                     float(np.mean([number.rejected for number in numbers]))))
    seconds = time.perf_counter() - start
    single = inference.evaluate(reader.module, reader.params, test.images,
                                test.labels)["accuracy"]
    flags = ["--ckpt", args.ckpt] if args.ckpt else []
    printed_rows = []
    rng = np.random.default_rng(2029)
    with tempfile.TemporaryDirectory() as folder:
        for length in (1, 2, 4, 6):
            paths, truth = [], []
            for n in range(args.count // 5):
                picture, digits = printed(test.images, test.labels, length, rng)
                paths.append(Path(folder) / f"{length}-{n:04d}.png")
                picture.save(paths[-1])
                truth.append(digits)
            got = read_files(paths, flags)
            printed_rows.append((length, float(np.mean([g == t for g, t in
                                                        zip(got, truth, strict=True)])),
                                 float(np.mean([g is None for g in got]))))
    print(f"reader: {reader.source}; {args.count} strips per row; read in {seconds:.1f}s\n")
    print("| test strips (MNIST test split) | read exactly: the sweep alone | the reader | "
          "said \"not a number\" |\n|---|---|---|---|")
    for name, swept, read, refused in rows:
        print(f"| {name} | {100 * swept:.1f}% | {100 * read:.1f}% | {100 * refused:.1f}% |")
    print(f"| single digits (MNIST test, 10,000) | {100 * single:.2f}% | | |")
    print(f"\n| printed numbers, through `lenet-jax read` ({args.count // 5} per row) | "
          "read exactly | said \"not a number\" |\n|---|---|---|")
    for length, accuracy, refused in printed_rows:
        print(f"| {length} digit{'s' * (length > 1)} | {100 * accuracy:.1f}% | "
              f"{100 * refused:.1f}% |")
    if args.figure:
        made = strips.compose(test.images, test.labels, 1, 2026, (6, 6))
        number = reader.read([reading.ink.Strip(made.images[0], 0, 1.0)])[0]
        reader.plot(number, Path(args.figure), f"MNIST test digits {made.numbers[0]}")


if __name__ == "__main__":
    main()

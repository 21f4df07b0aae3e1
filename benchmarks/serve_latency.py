"""Load on the draw-a-digit server: N requests from T client threads, each a drawn-digit
PNG like the page sends (280x280, white strokes on black), and the latency of each.

    python -m lenet_jax.serve --ckpt runs/best --port 8000 &
    python benchmarks/serve_latency.py --url http://127.0.0.1:8000/ [--json out.json]

Prints the answered and failed counts, the median and the 99th percentile latency.
Exit codes: 0 every request answered 200 with JSON, 1 some failed, 2 bad flags.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageDraw


def drawn_pictures(count: int, seed: int = 0) -> list[bytes]:
    """``count`` PNGs of one random thick stroke each, as a finger on the page draws."""
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        canvas = Image.new("L", (280, 280), 0)
        points = [tuple(p) for p in rng.integers(40, 240, (int(rng.integers(2, 5)), 2))]
        ImageDraw.Draw(canvas).line(points, fill=255, width=36, joint="curve")
        encoded = io.BytesIO()
        canvas.save(encoded, "PNG")
        pictures.append(encoded.getvalue())
    return pictures


def post(url: str, body: bytes) -> tuple[int, float, str]:
    """(status, seconds, error or "") for one ``POST /predict``."""
    request = urllib.request.Request(url.rstrip("/") + "/predict", data=body,
                                     headers={"Content-Type": "image/png"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            json.loads(reply.read())
            return reply.status, time.perf_counter() - start, ""
    except (urllib.error.URLError, OSError, ValueError) as err:
        status = err.code if isinstance(err, urllib.error.HTTPError) else 0
        return status, time.perf_counter() - start, f"{type(err).__name__}: {err}"


def load(url: str, requests: int, threads: int) -> list[tuple[int, float, str]]:
    pictures = drawn_pictures(requests)
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda body: post(url, body), pictures))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server, as lenet_jax.serve prints it")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.requests <= 0 or args.threads <= 0:
        print("serve_latency.py: error: --requests and --threads must be positive",
              file=sys.stderr)
        return 2
    results = load(args.url, args.requests, args.threads)
    seconds = np.array([s for status, s, _ in results if status == 200])
    errors = [e for status, _, e in results if status != 200]
    figures = {"requests": args.requests, "threads": args.threads, "answered": len(seconds),
               "failed": len(errors), "first_errors": errors[:3],
               "median_ms": float(np.median(seconds) * 1e3) if len(seconds) else None,
               "p99_ms": float(np.percentile(seconds, 99) * 1e3) if len(seconds) else None}
    print(f"{len(seconds)} answered, {len(errors)} failed; latency median "
          f"{figures['median_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms "
          f"({args.requests} requests from {args.threads} threads)" if len(seconds)
          else f"0 answered, {len(errors)} failed: {errors[:1]}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())

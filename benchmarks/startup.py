"""Start-up: each command-line tool timed as a whole process, cold and warm, with its
phases, beside the same job in PyTorch (benchmarks/torch_startup.py) in the same run.

    python benchmarks/startup.py                   # this checkout
    python benchmarks/startup.py --repo OLD_CLONE  # another checkout, same machine

The jobs: train.py on a tiny run (1 epoch of 640 images of relu_avgpool_pad2, then
5,000 validation and 10,000 test images, checkpoint, metrics and plots), evaluate.py
--ckpt on the 10,000 test images, evaluate.py --image on one PNG, and
python -m lenet_jax.export. Cold: an empty compilation cache for each tool (the first
run after install; MNIST already prepared); warm: the next run. Each round runs ours and
PyTorch's turn about. Phases come from $LENET_JAX_PHASES (train.py, evaluate.py and the
exporter write them); "start" is the rest of the wall time: the interpreter and imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lenet_jax import data, models  # noqa: E402

PRESET = "relu_avgpool_pad2"
PHASES = ("start", "imports", "data", "init", "compile", "work", "save")


def jobs(workdir: Path, image: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (our command, PyTorch's arguments to torch_startup.py)."""
    best = str(workdir / "best")
    arrays = str(data.array_cache_path("mnist", data.default_data_dir()))
    return {
        "train.py (tiny run)": (
            ["train.py", "--epochs", "1", "--preset", PRESET, "--limit-train", "640",
             "--workdir", str(workdir), "--no-progress", "--overwrite"], ["train", arrays]),
        "evaluate.py --ckpt": (["evaluate.py", "--ckpt", best], ["evaluate", arrays]),
        "evaluate.py --image": (["evaluate.py", "--ckpt", best, "--image", str(image)],
                                ["image", str(image)]),
        "python -m lenet_jax.export": (
            ["-m", "lenet_jax.export", "--ckpt", best, "--out", str(workdir / "model")],
            ["export", "-"]),
    }


def timed(command: list[str], cwd: Path, env: dict) -> dict:
    """Wall seconds and phases of one process; the command must succeed."""
    with tempfile.NamedTemporaryFile(suffix=".json") as phases_file:
        env = env | {"LENET_JAX_PHASES": phases_file.name}
        start = time.perf_counter()
        result = subprocess.run([sys.executable, *command], cwd=cwd, env=env,
                                capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        text = Path(phases_file.name).read_text()
    phases = json.loads(text) if text else {}
    return {"wall": wall, "phases": phases | {"start": wall - sum(phases.values())}}


def run_rounds(repo: Path, workdir: Path, image: Path, torch: bool) -> dict:
    preset = json.dumps(dataclasses.asdict(models.get_preset(PRESET)))
    results: dict = {}
    caches = {name: tempfile.mkdtemp(prefix="xla-") for name in jobs(workdir, image)}
    for round_name in ("cold", "warm"):
        for name, (ours, theirs) in jobs(workdir, image).items():
            env = dict(os.environ, LENET_JAX_COMPILATION_CACHE=caches[name])
            row = results.setdefault(name, {})
            row[f"ours {round_name}"] = timed(ours, repo, env)
            if torch:
                command = [str(ROOT / "benchmarks" / "torch_startup.py"), theirs[0], preset,
                           theirs[1], str(workdir)]
                row[f"torch {round_name}"] = timed(command, repo, env)
    return results


def table(results: dict) -> str:
    lines = [f"{'job':28s} {'run':11s} {'wall s':>7s}  " +
             " ".join(f"{p:>7s}" for p in PHASES)]
    for name, row in results.items():
        for run, r in row.items():
            phases = " ".join(f"{r['phases'][p]:7.2f}" if p in r["phases"] else f"{'':7s}"
                              for p in PHASES)
            lines.append(f"{name:28s} {run:11s} {r['wall']:7.2f}  {phases}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout to time")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    data.load("mnist")  # prepared, and its array cache (PyTorch's npz) written
    torch = not args.skip_torch
    if torch:
        try:
            import torch as _  # noqa: F401
        except ImportError:
            print("torch is not installed: PyTorch's column skipped", file=sys.stderr)
            torch = False
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "one.png"
        _digit_picture(image)
        results = run_rounds(args.repo.resolve(), Path(tmp) / "runs", image, torch)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _digit_picture(path: Path) -> None:
    """A dark '1' on a white photo-sized canvas, as a user's picture might be."""
    import numpy as np
    from PIL import Image

    canvas = np.full((60, 90), 250, np.uint8)
    canvas[10:50, 60:68] = 10
    Image.fromarray(canvas).save(path)


if __name__ == "__main__":
    sys.exit(main())

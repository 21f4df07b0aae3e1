"""Hostile cases against the command-line tools, as real processes: how many end in a
Python traceback, and whether any changes a saved checkpoint (#24).

    python benchmarks/hostile.py                 # every case, a table and the counts
    python benchmarks/hostile.py --groups 2 6    # some groups only

One tiny run is trained first (relu_maxpool, 2,048 images, 1 epoch) into a scratch
workdir; every case then runs in its own scratch folder against copies or the shared run,
whose checkpoint files are hashed before and after each case. Exit 1 if any case printed a
traceback or changed the checkpoint. The server's cases (groups 1, 8, 9) are in
tests/test_serve.py, where they hold real sockets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--variant", "relu_maxpool", "--limit-train", "2048", "--val-size", "512",
        "--no-progress", "--epochs", "1"]


@dataclass
class Case:
    group: int
    name: str
    argv: list[str]  # {W}: the shared workdir, {D}: this case's folder, {C}: the checkpoint
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path, Path], None] | None = None  # (case folder, shared workdir)
    signal_after: tuple[int, float] | None = None  # (signal, seconds)
    timeout: float = 120


def train(*flags: str) -> list[str]:
    return ["train.py", *TINY, *flags]


def evaluate(*flags: str) -> list[str]:
    return ["evaluate.py", *flags]


def _edit_metadata(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    """A copy of the shared run in D/W whose latest step's metadata is edited."""
    def setup(folder: Path, workdir: Path) -> None:
        shutil.copytree(workdir / "relu_maxpool", folder / "W" / "relu_maxpool", symlinks=True)
        meta = folder / "W/relu_maxpool/checkpoints/1/metadata/metadata"
        data = json.loads(meta.read_text())
        edit(data)
        meta.write_text(json.dumps(data))
    return setup


def _rename(key: str) -> Callable[[dict], None]:
    return lambda data: data.__setitem__(key + "_x", data.pop(key))


def _set(key: str, value) -> Callable[[dict], None]:
    return lambda data: data.__setitem__(key, value)


def _pop(key: str) -> Callable[[dict], None]:
    return lambda data: data.pop(key)


def _write(relative: str, content: bytes | str) -> Callable[[Path, Path], None]:
    def setup(folder: Path, workdir: Path) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return setup


def _unreadable_dir(folder: Path, workdir: Path) -> None:
    (folder / "locked").mkdir()
    (folder / "locked/x.png").write_bytes(b"")
    (folder / "locked").chmod(0)


def _truncated_metrics(folder: Path, workdir: Path) -> None:
    shutil.copytree(workdir / "relu_maxpool", folder / "W" / "relu_maxpool", symlinks=True)
    log = folder / "W/relu_maxpool/metrics.jsonl"
    log.write_bytes(log.read_bytes()[:-7])


def _damaged_owner(folder: Path, workdir: Path) -> None:
    (folder / "W").mkdir()
    (folder / "W/.relu_maxpool.owner").write_bytes(b"\xff\xfe\x00garbage")
    (folder / "W/.relu_maxpool.lock").mkdir()


def _loop_link(folder: Path, workdir: Path) -> None:
    (folder / "loop").symlink_to("loop")


def _wide_line(folder: Path, workdir: Path) -> None:
    from PIL import Image
    canvas = Image.new("L", (5000, 3), 255)
    canvas.paste(0, (0, 1, 5000, 2))
    canvas.save(folder / "line.png")


def _png(folder: Path, workdir: Path) -> None:
    from PIL import Image
    canvas = Image.new("L", (28, 28))
    canvas.paste(255, (12, 4, 16, 24))
    canvas.save(folder / ("x" * 240 + ".png"))
    canvas.save(folder / "one.png")
    canvas.save(folder / "bell\x07.png")


CASES = [
    # 2: run names that resolve through links
    Case(2, "--name best --resume", train("--workdir", "{W2}", "--name", "best", "--resume")),
    Case(2, "--name best --overwrite", train("--workdir", "{W2}", "--name", "best",
                                             "--overwrite")),
    # 3: a full disk (a tmpfs of each size) under the run, 3 epochs
    *[Case(3, f"full disk: a {size} tmpfs", train("--workdir", "{D}/disk", "--epochs", "3"),
           setup=lambda f, w, size=size: _tmpfs(f / "disk", size))
      for size in ("400k", "600k", "800k", "1m", "1200k", "1500k", "1800k", "2300k")],
    # 5: a cache (a speed-up) that cannot be written
    Case(5, "LENET_JAX_CACHE is a file", train("--workdir", "{D}/W"),
         env={"LENET_JAX_CACHE": "{D}/file"}, setup=_write("file", "x")),
    Case(5, "evaluate, LENET_JAX_CACHE is a file", evaluate("--ckpt", "{C}", "--out", "{D}/e"),
         env={"LENET_JAX_CACHE": "{D}/file"}, setup=_write("file", "x")),
    # 6: flags that pass the checks and crash later
    Case(6, "--epochs 1 --warmup-epochs 1 (cosine)",
         train("--workdir", "{D}/W", "--warmup-epochs", "1", "--schedule", "cosine")),
    Case(6, "--warmup-epochs nan", train("--workdir", "{D}/W", "--warmup-epochs", "nan")),
    Case(6, "--warmup-epochs inf", train("--workdir", "{D}/W", "--warmup-epochs", "inf")),
    Case(6, "--lr nan", train("--workdir", "{D}/W", "--lr", "nan")),
    Case(6, "--lr inf", train("--workdir", "{D}/W", "--lr", "inf")),
    Case(6, "--weight-decay=-inf", train("--workdir", "{D}/W", "--weight-decay=-inf")),
    Case(6, "--seed 2147483648", train("--workdir", "{D}/W", "--seed", "2147483648")),
    Case(6, "--seed -1", train("--workdir", "{D}/W", "--seed", "-1")),
    Case(6, "--batch-size 55000", train("--workdir", "{D}/W", "--batch-size", "55000",
                                        "--limit-train", "0")),
    Case(6, "--batch-size 10**12", train("--workdir", "{D}/W", "--batch-size", "1000000000000")),
    Case(6, "--epochs 10**9", train("--workdir", "{D}/W", "--epochs", "1000000000")),
    Case(6, "--val-size 60000", train("--workdir", "{D}/W", "--val-size", "60000")),
    Case(6, "--limit-train -5", train("--workdir", "{D}/W", "--limit-train", "-5")),
    Case(6, "evaluate --batch-size 10**9", evaluate("--ckpt", "{C}", "--out", "{D}/e",
                                                    "--batch-size", "1000000000")),
    Case(6, "serve --port 10**20", ["-m", "lenet_jax.serve", "--ckpt", "{C}", "--port",
                                    "100000000000000000000"]),
    # 7: Ctrl-C and SIGTERM
    Case(7, "train, SIGINT at 0.3 s", train("--workdir", "{D}/W"),
         signal_after=(signal.SIGINT, 0.3)),
    Case(7, "train, SIGINT at 1.0 s", train("--workdir", "{D}/W"),
         signal_after=(signal.SIGINT, 1.0)),
    Case(7, "train, SIGINT at 2.5 s", train("--workdir", "{D}/W"),
         signal_after=(signal.SIGINT, 2.5)),
    Case(7, "train, SIGTERM at 3 s", train("--workdir", "{D}/W"),
         signal_after=(signal.SIGTERM, 3.0)),
    Case(7, "evaluate, SIGINT at 0.5 s", evaluate("--ckpt", "{C}", "--out", "{D}/e"),
         signal_after=(signal.SIGINT, 0.5)),
    Case(7, "evaluate, SIGINT at 2 s", evaluate("--ckpt", "{C}", "--out", "{D}/e"),
         signal_after=(signal.SIGINT, 2.0)),
    Case(7, "evaluate, SIGINT at 3.5 s", evaluate("--ckpt", "{C}", "--out", "{D}/e"),
         signal_after=(signal.SIGINT, 3.5)),
    Case(7, "serve, SIGINT at 0.5 s", ["-m", "lenet_jax.serve", "--ckpt", "{C}", "--port", "0"],
         signal_after=(signal.SIGINT, 0.5)),
    Case(7, "serve, SIGINT at 1.5 s", ["-m", "lenet_jax.serve", "--ckpt", "{C}", "--port", "0"],
         signal_after=(signal.SIGINT, 1.5)),
    Case(7, "export, SIGINT at 0.7 s", ["-m", "lenet_jax.export", "--out", "{D}/x"],
         signal_after=(signal.SIGINT, 0.7)),
    # 10: metadata edited by one key
    *[Case(10, f"evaluate, metadata {label}", evaluate("--ckpt", "{D}/W/relu_maxpool",
                                                      "--out", "{D}/e"), setup=_edit_metadata(e))
      for label, e in [("epoch renamed", _rename("epoch")), ("step renamed", _rename("step")),
                       ("class_names renamed", _rename("class_names")),
                       ("3 class names", _set("class_names", ["a", "b", "c"])),
                       ("preset a list", _set("preset", ["relu_maxpool"])),
                       ("selection_accuracy missing", _pop("selection_accuracy")),
                       ("dataset renamed", _rename("dataset")),
                       ("config a string", _set("config", "x"))]],
    *[Case(10, f"evaluate --image, metadata {label}",
           evaluate("--ckpt", "{D}/W/relu_maxpool", "--image", "{D}/one.png"),
           setup=lambda f, w, e=e: (_edit_metadata(e)(f, w), _png(f, w)))
      for label, e in [("epoch renamed", _rename("epoch")),
                       ("class_names renamed", _rename("class_names")),
                       ("3 class names", _set("class_names", ["a", "b", "c"]))]],
    *[Case(10, f"export, metadata {label}",
           ["-m", "lenet_jax.export", "--ckpt", "{D}/W/relu_maxpool", "--out", "{D}/x"],
           setup=_edit_metadata(e))
      for label, e in [("epoch renamed", _rename("epoch")),
                       ("class_names renamed", _rename("class_names"))]],
    *[Case(10, f"--resume, metadata {label}",
           train("--workdir", "{D}/W", "--resume", "--epochs", "2"), setup=_edit_metadata(e))
      for label, e in [("epoch renamed", _rename("epoch")), ("step renamed", _rename("step")),
                       ("selection_accuracy missing", _pop("selection_accuracy")),
                       ("config a string", _set("config", "x")),
                       ("class_names renamed", _rename("class_names"))]],
    Case(10, "--resume, metrics.jsonl's last line cut",
         train("--workdir", "{D}/W", "--resume", "--epochs", "2"), setup=_truncated_metrics),
    # 11: paths
    Case(11, "--ckpt under an unreadable directory", evaluate("--ckpt", "{D}/locked/run"),
         setup=_unreadable_dir),
    Case(11, "--image under an unreadable directory",
         evaluate("--ckpt", "{C}", "--image", "{D}/locked/x.png"), setup=_unreadable_dir),
    Case(11, "--image an unreadable directory", evaluate("--ckpt", "{C}", "--image",
                                                         "{D}/locked"), setup=_unreadable_dir),
    Case(11, "--ckpt longer than the system allows", evaluate("--ckpt", "{D}/" + "a" * 5000)),
    Case(11, "--image name longer than allowed", evaluate("--ckpt", "{C}", "--image",
                                                          "{D}/" + "a" * 300 + ".png")),
    Case(11, "serve --ckpt under an unreadable directory",
         ["-m", "lenet_jax.serve", "--ckpt", "{D}/locked/run", "--port", "0"],
         setup=_unreadable_dir),
    Case(11, "export --ckpt under an unreadable directory",
         ["-m", "lenet_jax.export", "--ckpt", "{D}/locked/run", "--out", "{D}/x"],
         setup=_unreadable_dir),
    Case(11, "train --data-dir a file", train("--workdir", "{D}/W", "--data-dir", "{D}/file"),
         setup=_write("file", "x")),
    Case(11, "evaluate --data-dir a file", evaluate("--ckpt", "{C}", "--out", "{D}/e",
                                                    "--data-dir", "{D}/file"),
         setup=_write("file", "x")),
    Case(11, "--name of 250 characters", train("--workdir", "{D}/W", "--name", "n" * 250)),
    Case(11, "--name .x.lock", train("--workdir", "{D}/W", "--name", ".x.lock")),
    Case(11, "damaged .owner and .lock", train("--workdir", "{D}/W"), setup=_damaged_owner),
    Case(11, "--explain with a 240-character stem",
         evaluate("--ckpt", "{C}", "--image", "{D}/" + "x" * 240 + ".png", "--explain",
                  "--out", "{D}/e"), setup=_png),
    Case(11, "one-dimensional Fashion-MNIST images",
         train("--workdir", "{D}/W", "--dataset", "fashion_mnist"),
         env={"LENET_JAX_FASHION_MNIST_DIR": "{D}/fm", "LENET_JAX_CACHE": "{D}/cache"},
         setup=lambda f, w: _fashion_1d(f)),
    # 12: minor
    Case(12, "export --out a checkpoint step", ["-m", "lenet_jax.export", "--ckpt", "{C}",
                                                "--out", "{C}"]),
    Case(12, "--ckpt a symlink loop", evaluate("--ckpt", "{D}/loop"), setup=_loop_link),
    Case(12, "control characters in a file name", evaluate("--ckpt", "{C}", "--image",
                                                           "{D}/bell\x07.png"), setup=_png),
    Case(12, "--lr inf at the first step", train("--workdir", "{D}/W", "--lr", "1e30")),
    Case(12, "--workdir ''", train("--workdir", "")),
    # 13: reading numbers (#29)
    Case(13, "read --ckpt a single-digit run", ["-m", "lenet_jax", "read", "--ckpt", "{C}",
                                                "{D}/one.png"], setup=_png),
    Case(13, "read a 240-character stem with --figure",
         ["-m", "lenet_jax", "read", "--figure", "{D}/f", "{D}/" + "x" * 240 + ".png"],
         setup=_png),
    Case(13, "read a control character in a file name",
         ["-m", "lenet_jax", "read", "{D}/bell\x07.png"], setup=_png),
    Case(13, "read --figure under a file", ["-m", "lenet_jax", "read", "--figure",
                                            "{D}/file/f", "{D}/one.png"],
         setup=lambda f, w: (_png(f, w), _write("file", "x")(f, w))),
    Case(13, "read a line 5000 px wide", ["-m", "lenet_jax", "read", "{D}/line.png"],
         setup=_wide_line),
    Case(13, "read --ckpt and --pretrained", ["-m", "lenet_jax", "read", "--ckpt", "{C}",
                                              "--pretrained", "original", "{D}/one.png"]),
    Case(13, "read --pretrained lenet7", ["-m", "lenet_jax", "read", "--pretrained", "lenet7",
                                          "{D}/one.png"], setup=_png),
    Case(13, "read, SIGINT at 0.5 s", ["-m", "lenet_jax", "read", "{D}/one.png"],
         setup=_png, signal_after=(signal.SIGINT, 0.5)),
    Case(13, "read, SIGINT at 2 s", ["-m", "lenet_jax", "read", "{D}/one.png"],
         setup=_png, signal_after=(signal.SIGINT, 2.0)),
    Case(13, "--task numbers with a dense C5", ["train.py", "--workdir", "{D}/W", "--task",
                                                "numbers", "--preset", "relu_avgpool_pad2"]),
    Case(13, "--task numbers --strips 10", ["train.py", "--workdir", "{D}/W", "--task",
                                            "numbers", "--strips", "10"]),
    Case(13, "--task numbers --strips -1", ["train.py", "--workdir", "{D}/W", "--task",
                                            "numbers", "--strips", "-1"]),
    Case(13, "--task numbers, SIGINT at 6 s", ["train.py", "--workdir", "{D}/W", "--task",
                                               "numbers", "--strips", "640", "--no-progress"],
         signal_after=(signal.SIGINT, 6.0)),
    Case(13, "--task numbers --resume of a digits run",
         ["train.py", "--workdir", "{W}", "--name", "relu_maxpool", "--variant",
          "relu_maxpool", "--task", "numbers", "--resume", "--no-progress"]),
]


def _tmpfs(target: Path, size: str) -> None:
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                   check=True)


def _unmount_under(folder: Path) -> None:
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1]
        if point.startswith(str(folder)):
            subprocess.run(["umount", "-l", point], capture_output=True)


def _fashion_1d(folder: Path) -> None:
    import gzip

    import numpy as np
    folder = folder / "fm"
    folder.mkdir()
    for split, n in (("train", 60000), ("t10k", 10000)):
        header = np.array([0x00000801, n * 784], ">u4").tobytes()  # 1-D: 'images' of bytes
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(
            header + bytes(n * 784)))
        labels = np.array([0x00000801, n], ">u4").tobytes() + bytes(n)
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))


def _digest(run: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(run.rglob("*")):
        if path.is_file() and not path.is_symlink():
            h.update(str(path.relative_to(run)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def run_case(case: Case, python: str, folder: Path, workdir: Path) -> dict:
    subs = {"{W}": str(workdir), "{D}": str(folder), "{C}": str(workdir / "relu_maxpool/best"),
            "{W2}": str(folder / "W2")}

    def fill(text: str) -> str:
        for key, value in subs.items():
            text = text.replace(key, value)
        return text

    if case.setup:
        case.setup(folder, workdir)
    if "{W2}" in " ".join(case.argv):  # a workdir of its own with one real run in it
        shutil.copytree(workdir, folder / "W2", symlinks=True)
    argv = [python, *([str(ROOT / case.argv[0])] if case.argv[0].endswith(".py")
                      else case.argv[:1]), *map(fill, case.argv[1:])]
    env = os.environ | {k: fill(v) for k, v in case.env.items()}
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors="replace",
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if case.signal_after:
        time.sleep(case.signal_after[1])
        process.send_signal(case.signal_after[0])
    try:
        out, err = process.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    text = out + err
    return {"group": case.group, "case": case.name, "exit": process.returncode,
            "traceback": "Traceback (most recent call last)" in text
                         or "Exception ignored" in text,
            "internal": process.returncode == 70,
            "stderr_lines": len(err.strip().splitlines()),
            "seconds": round(time.monotonic() - started, 1),
            "last": (err.strip().splitlines() or [""])[-1][:150]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=None)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    cases = [c for c in CASES if args.groups is None or c.group in args.groups]
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        scratch = Path(scratch)
        workdir = scratch / "W"
        subprocess.run([args.python, str(ROOT / "train.py"), *TINY, "--workdir", str(workdir)],
                       check=True, capture_output=True)
        before = _digest(workdir / "relu_maxpool")
        rows = []
        for index, case in enumerate(cases):
            folder = scratch / f"case{index}"
            folder.mkdir()
            row = run_case(case, args.python, folder, workdir)
            row["checkpoint_changed"] = _digest(workdir / "relu_maxpool") != before
            rows.append(row)
            print(f"{row['group']:>2}  {row['case'][:48]:48s} exit {row['exit']:>4}  "
                  f"{'TRACEBACK' if row['traceback'] else 'ok':9s} {row['seconds']:5.1f}s  "
                  f"{row['last']}", flush=True)
            _unmount_under(folder)
            subprocess.run(["chmod", "-R", "u+rwx", str(folder)], capture_output=True)
    tracebacks = sum(r["traceback"] for r in rows)
    internal = sum(r["internal"] for r in rows)
    changed = sum(r["checkpoint_changed"] for r in rows)
    print(f"{len(rows)} cases: {tracebacks} tracebacks, {internal} internal errors (exit 70), "
          f"{changed} changed the checkpoint")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if tracebacks or internal or changed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The shipped models as ONNX (issue #28): for each, the float32 graph's parity with JAX
(max abs difference of the logits on the whole test set) and its test accuracy, and the
int8 graph's (onnxruntime's static quantisation, as ``lenet-jax export --format onnx
--quantize int8`` makes it) test accuracy and size beside float32's.

    python benchmarks/onnx_table.py                 # all shipped models, benchmarks/ONNX.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from benchmarks.accuracy_table import cpu_name  # noqa: E402
from lenet_jax import data, export, inference, models, zoo  # noqa: E402


def row(dataset: data.Dataset, preset: str, directory: Path) -> dict:
    params, metadata = zoo.restore(preset, dataset.name)
    float_path = export.export_onnx(params, metadata, directory)
    int8_path = export.quantize_int8(float_path, export.calibration_images(dataset.train.images),
                                     float_path.with_suffix(".int8.onnx"))
    test = dataset.test
    module, _ = models.create_model(preset)
    reference = inference.predict_images(module, params, test.images)[0]

    def run(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": test.images})[0]

    float_logits, int8_logits = run(float_path), run(int8_path)
    accuracy = lambda logits: 100 * float(np.mean(logits.argmax(-1) == test.labels))  # noqa: E731
    return {"name": preset if dataset.name == "mnist" else f"{dataset.name}/{preset}",
            "jax": accuracy(reference), "float32": accuracy(float_logits),
            "difference": float(np.abs(float_logits - reference).max()),
            "int8": accuracy(int8_logits), "float32_bytes": float_path.stat().st_size,
            "int8_bytes": int8_path.stat().st_size,
            "int8_agrees": 100 * float(np.mean(int8_logits.argmax(-1) == float_logits.argmax(-1)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/ONNX.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for name, shipped in zoo.cards().items():
            dataset = data.load(name)
            for preset in shipped:
                rows.append(row(dataset, preset, Path(directory)))
                print(rows[-1], flush=True)
    lines = [
        "# The shipped models as ONNX", "",
        f"Written by `python benchmarks/onnx_table.py`: each shipped model "
        "(`lenet_jax.pretrained`) exported by `lenet_jax.export.export_onnx` and quantised "
        "by `quantize_int8` (onnxruntime's static quantisation: QDQ, int8 weights per "
        f"channel, uint8 activations, min-max ranges on {export.CALIBRATION} training "
        "images), run by onnxruntime "
        f"{ort.__version__} on the CPU over the whole test set. Machine: {cpu_name()}, "
        f"Python {platform.python_version()}.", "",
        "| model | JAX | ONNX float32 | max abs logit difference | ONNX int8 | int8 - float32 "
        "| int8 answers equal to float32's | float32 size | int8 size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['jax']:.2f}% | {r['float32']:.2f}% | "
                     f"{r['difference']:.1e} | {r['int8']:.2f}% | "
                     f"{r['int8'] - r['float32']:+.2f} | {r['int8_agrees']:.2f}% | "
                     f"{r['float32_bytes'] / 1000:.0f} KB | {r['int8_bytes'] / 1000:.0f} KB |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""jax.export artefacts and the SavedModel: they reload without the model code and
predict what the checkpoint predicts; a bad checkpoint is one line."""

import json
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT

from lenet_jax import checkpoint, inference, models

LOAD_WITHOUT_MODEL_CODE = textwrap.dedent("""
    import sys, numpy as np, jax
    exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
    for name in sys.argv[2:]:  # batches of other sizes: the batch dimension is symbolic
        np.save(name + ".out.npy", np.asarray(exported.call(np.load(name))))
    assert "lenet_jax" not in sys.modules
""")


@pytest.mark.slow  # a run through the CLI: kept out of the 2-minute default suite
def test_exported_artefact_reloads_without_model_code_and_matches(trained_original,
                                                                   tiny_dataset, tmp_path):
    result = subprocess.run([sys.executable, "-m", "lenet_jax.export", "--ckpt",
                             str(trained_original / "best"), "--out", str(tmp_path / "model")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    artefact = tmp_path / "model" / "lenet.jax"
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["preset"] == "original" and meta["platforms"] == ["cpu", "cuda"]
    params, _ = checkpoint.restore_for_inference(trained_original / "best")
    module, _ = models.create_model("original")
    inputs = {n: tmp_path / f"in{n}.npy" for n in (3, 17)}
    for n, path in inputs.items():
        np.save(path, tiny_dataset.test.images[:n])
    run = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_MODEL_CODE, str(artefact),
                          *map(str, inputs.values())],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for n, path in inputs.items():
        images = jnp.asarray(tiny_dataset.test.images[:n])
        expected = inference.predict_logits(module, params, images)
        np.testing.assert_allclose(np.load(f"{path}.out.npy"), expected, rtol=1e-5, atol=1e-5)
    # Each convolution chooses per platform: im2col for CPU, XLA's (cuDNN's) for CUDA.
    exported = jax.export.deserialize(artefact.read_bytes())
    assert exported.platforms == ("cpu", "cuda")
    choices = [(cpu, cuda) for cpu, cuda in _case_branches(exported.mlir_module())
               if "stablehlo.dot_general" in cpu and "stablehlo.convolution" in cuda]
    assert len(choices) == 2  # C1 and C3 (C5 covers its whole input: a matrix product)
    assert all("stablehlo.convolution" not in cpu for cpu, _ in choices)


def _case_branches(mlir: str) -> list[list[str]]:
    """The text of each region of each ``stablehlo.case`` (jax.lax.platform_dependent:
    one region per platform, in the export's order)."""
    cases = []
    for match in re.finditer(r"stablehlo\.case", mlir):
        start = mlir.index("({", match.end()) + 1
        regions, depth, begin = [], 0, start
        for i in range(start, len(mlir)):
            depth += {"{": 1, "}": -1}.get(mlir[i], 0)
            if depth == 0 and mlir[i] == "}":
                regions.append(mlir[begin:i + 1])
                if mlir[i + 1:i + 3] != ", ":
                    break
                begin = i + 3
        cases.append(regions)
    return cases


@pytest.mark.slow  # importing TensorFlow alone takes seconds
def test_savedmodel_matches(trained_original, tiny_dataset, tmp_path):
    import tensorflow as tf

    from lenet_jax import export

    params, metadata = checkpoint.restore_for_inference(trained_original / "best")
    path = export.export_savedmodel(params, metadata, tmp_path)
    loaded = tf.saved_model.load(str(path))
    images = tiny_dataset.test.images[:5]
    module, _ = models.create_model("original")
    expected = inference.predict_logits(module, params, jnp.asarray(images))
    np.testing.assert_allclose(loaded.predict(tf.constant(images)).numpy(), expected,
                               rtol=1e-4, atol=1e-4)


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lenet_jax.export", "--ckpt",
                             str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    expected = f"lenet_jax.export: error: checkpoint path {tmp_path / 'nope'} does not exist"
    assert result.stderr.strip() == expected


def test_export_refuses_an_out_inside_the_checkpoint(trained_original, tmp_path, capsys):
    """Exporting into a checkpoint's own directory (as evaluate.py refuses to) would add
    files among Orbax's: one line, exit 2, the checkpoint as it was."""
    import shutil

    from helpers import tree_digest

    from lenet_jax.cli import export as export_cli

    run = shutil.copytree(trained_original / "original", tmp_path / "original", symlinks=True)
    saved = tree_digest(run / "checkpoints")
    for out in (run / "best", run / "checkpoints" / "x"):
        assert export_cli.main(["--ckpt", str(run / "best"), "--out", str(out)]) == 2
        assert capsys.readouterr().err == (f"lenet_jax.export: error: --out {out} is inside "
                                           "the checkpoint; choose another directory\n")
    assert tree_digest(run / "checkpoints") == saved

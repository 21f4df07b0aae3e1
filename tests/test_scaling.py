"""Data parallel over 8 (forced host) devices, and the exported model."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from lenet_jax import checkpoint, models, training

EIGHT_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    from conftest import make_split
    from lenet_jax import training
    from lenet_jax.data import Dataset
    assert jax.device_count() == 8, jax.devices()
    dataset = Dataset("mnist", make_split(1024, 0), make_split(256, 1), tuple("0123456789"))
    out = {}
    for devices in (1, 8):
        config = training.TrainConfig(preset="relu_avgpool_pad2_dropout", epochs=1,
                                      batch_size=64, val_size=128, devices=devices,
                                      learning_rate=1e-3)
        record = training.train_and_evaluate(config, dataset, sys.argv[1] + f"/d{devices}",
                                             progress=False, log=lambda _: None)
        out[devices] = record["test_accuracy"]
    try:
        training.make_mesh(8, batch_size=60)
    except ValueError as err:
        out["error"] = str(err)
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["1"] == out["8"]  # same accuracy
    assert out["error"] == "--batch-size 60 does not divide over 8 devices"
    one, _ = checkpoint.restore_for_inference(tmp_path / "d1" / "checkpoints" / "1")
    eight, _ = checkpoint.restore_for_inference(tmp_path / "d8" / "checkpoints" / "1")
    diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel() for a, b in zip(
        jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(eight), strict=True)])
    # The all-reduce sums in another order: float-rounding differences, which Adam can
    # turn into up to one lr-sized step on a near-zero gradient.
    assert np.median(diffs) < 1e-6 and diffs.max() <= 2e-3, (np.median(diffs), diffs.max())


LOAD_WITHOUT_MODEL_CODE = textwrap.dedent("""
    import sys, numpy as np, jax
    exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
    for name in sys.argv[2:]:  # batches of other sizes: the batch dimension is symbolic
        np.save(name + ".out.npy", np.asarray(exported.call(np.load(name))))
    assert "lenet_jax" not in sys.modules
""")


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
        expected = training.predict_logits(module, params, images)
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

    path = export.export_savedmodel(trained_original / "best", tmp_path)
    loaded = tf.saved_model.load(str(path))
    images = tiny_dataset.test.images[:5]
    params, _ = checkpoint.restore_for_inference(trained_original / "best")
    module, _ = models.create_model("original")
    expected = training.predict_logits(module, params, jnp.asarray(images))
    np.testing.assert_allclose(loaded.predict(tf.constant(images)).numpy(), expected,
                               rtol=1e-4, atol=1e-4)


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lenet_jax.export", "--ckpt",
                             str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    expected = f"lenet_jax.export: error: checkpoint path {tmp_path / 'nope'} does not exist"
    assert result.stderr.strip() == expected

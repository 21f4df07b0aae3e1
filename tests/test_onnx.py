"""ONNX export (lenet_jax.to_onnx, ``lenet-jax export --format onnx``): every preset's
graph, run by onnxruntime, gives the JAX logits on real digits within 1e-4 and the same
answers, at any batch size; it is built from ONNX's own Conv and pooling operators and
keeps C3's connection table (1,500 weights, not a 6x16 kernel)."""

import collections
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from helpers import ROOT, run_cli

import lenet_jax
from lenet_jax import data, export, inference, to_onnx, zoo

PARITY = 1e-4  # the issue's bound on the logits' max abs difference


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def exported(preset: str, dataset: str, directory) -> ort.InferenceSession:
    params, metadata = zoo.restore(preset, dataset)
    return session(export.export_onnx(params, metadata, directory))


def jax_logits(preset: str, dataset: str, images: np.ndarray) -> np.ndarray:
    model, params, _ = lenet_jax.pretrained(preset, dataset)
    return inference.predict_images(model, params, images)[0]


@pytest.mark.parametrize("preset", sorted(lenet_jax.PRESETS))
def test_onnx_logits_match_jax_on_1000_real_digits_at_any_batch(preset, mnist_sample, tmp_path):
    images = mnist_sample.test.images
    runtime = exported(preset, "mnist", tmp_path)
    got = runtime.run(None, {to_onnx.INPUT: images})[0]
    want = jax_logits(preset, "mnist", images)
    assert got.shape == (1000, 10) and got.dtype == np.float32
    assert np.abs(got - want).max() <= PARITY
    assert (got.argmax(-1) == want.argmax(-1)).all()
    for batch in (1, 7):  # the batch size is symbolic
        np.testing.assert_array_equal(runtime.run(None, {to_onnx.INPUT: images[:batch]})[0],
                                      runtime.run(None, {to_onnx.INPUT: images[:8]})[0][:batch])


def test_onnx_graph_uses_onnx_convolutions_and_keeps_the_c3_table(tmp_path):
    import onnx

    params, metadata = zoo.restore("original")
    model = onnx.load(export.export_onnx(params, metadata, tmp_path))
    kinds = collections.Counter(node.op_type for node in model.graph.node)
    assert kinds["Conv"] == 5 and kinds["AveragePool"] == 2  # C1, C3 x 3 groups, C5
    assert "MatMul" not in kinds and "Pad" in kinds  # 28 -> 32 with background, inside
    groups = sorted(attribute.i for node in model.graph.node if node.op_type == "Conv"
                    for attribute in node.attribute if attribute.name == "group")
    assert groups == [1, 6, 9]  # maps seeing 6, 3 and 4 of S2's maps (Table I)
    c3 = [i for i in model.graph.initializer if i.name.startswith("C3.kernel")]
    assert sum(int(np.prod(i.dims)) for i in c3) == 60 * 25  # the paper's 1,500 weights
    inputs = model.graph.input[0].type.tensor_type
    assert inputs.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inputs.shape.dim] == ["batch", 28, 28, 1]


def test_export_command_writes_preset_onnx_and_refuses_an_unknown_format(tmp_path,
                                                                        mnist_sample):
    result = run_cli("-m", "lenet_jax", "export", "--pretrained",
                     "fashion_mnist/relu_avgpool_pad2", "--format", "onnx", "--out",
                     str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {tmp_path / 'relu_avgpool_pad2.onnx'}\n"
    images = mnist_sample.test.images[:64]
    got = session(tmp_path / "relu_avgpool_pad2.onnx").run(None, {"images": images})[0]
    assert np.abs(got - jax_logits("relu_avgpool_pad2", "fashion_mnist", images)).max() <= PARITY
    bad = run_cli("-m", "lenet_jax", "export", "--pretrained", "original", "--format", "tflite",
                  "--out", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--format" in bad.stderr


@pytest.mark.slow
@pytest.mark.mnist
@pytest.mark.parametrize(("dataset", "preset"), [(d, p) for d, shipped in zoo.cards().items()
                                                  for p in shipped])
def test_onnx_model_has_the_cards_test_accuracy(dataset, preset, tmp_path):
    test = data.load(dataset).test
    logits = exported(preset, dataset, tmp_path).run(None, {"images": test.images})[0]
    wrong = int((logits.argmax(-1) != test.labels).sum())
    assert wrong == zoo.card(preset, dataset)["test_errors"]


def test_int8_model_takes_the_same_input_and_reads_like_float32(mnist_sample, tmp_path):
    params, metadata = zoo.restore("original")
    float_path = export.export_onnx(params, metadata, tmp_path)
    calibration = mnist_sample.train.images[:500]
    int8_path = export.quantize_int8(float_path, calibration, tmp_path / "original.int8.onnx")
    assert int8_path.stat().st_size < 0.45 * float_path.stat().st_size
    images, labels = mnist_sample.test.images, mnist_sample.test.labels
    float_answers = session(float_path).run(None, {"images": images})[0].argmax(-1)
    int8_answers = session(int8_path).run(None, {"images": images})[0].argmax(-1)
    assert np.mean(int8_answers == float_answers) >= 0.99
    assert abs(np.mean(int8_answers == labels) - np.mean(float_answers == labels)) <= 0.005


@pytest.mark.slow
@pytest.mark.mnist
@pytest.mark.parametrize("preset", ["original", "relu_avgpool_pad2"])
def test_int8_export_is_within_0_3_points_of_float32_and_writes_reference_activations(
        preset, tmp_path):
    result = run_cli("-m", "lenet_jax", "export", "--pretrained", preset, "--format", "onnx",
                     "--quantize", "int8", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    test = data.load("mnist").test
    accuracy = {}
    for kind in ("onnx", "int8.onnx"):
        logits = session(tmp_path / f"{preset}.{kind}").run(None, {"images": test.images})[0]
        accuracy[kind] = float(np.mean(logits.argmax(-1) == test.labels))
    assert abs(accuracy["int8.onnx"] - accuracy["onnx"]) <= 0.003, accuracy
    with np.load(tmp_path / f"{preset}.reference.npz") as reference:
        np.testing.assert_array_equal(reference["images"], test.images[:8])
        np.testing.assert_allclose(reference["logits"], jax_logits(preset, "mnist",
                                                                   test.images[:8]), atol=1e-5)
        assert reference["C1"].shape[:1] == (8,) and reference["F6"].shape == (8, 84)


def test_onnx_export_without_the_onnx_package_is_one_line(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None; from lenet_jax import cli; "
            "from lenet_jax.cli.export import main; cli.run(lambda: main(['--pretrained', "
            f"'original', '--format', 'onnx', '--out', {str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("lenet_jax.export: error: --format onnx needs onnx (")
    assert "pip install 'lenet-jax[onnx]'" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written

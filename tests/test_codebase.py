"""The code reads like a model codebase: short functions, LeNet-5 in models.py and the
CPU kernels behind ops.py."""

import ast

import pytest
from conftest import ROOT

SOURCES = [*sorted((ROOT / "lenet_jax").glob("*.py")), ROOT / "train.py", ROOT / "evaluate.py"]
LONGEST = 45  # lines, signature and docstring included


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_function_is_longer_than_45_lines(path):
    tree = ast.parse(path.read_text())
    lengths = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert {name: n for name, n in lengths.items() if n > LONGEST} == {}


def test_models_py_shows_the_model_and_leaves_kernels_and_layout_to_ops():
    source = (ROOT / "lenet_jax" / "models.py").read_text()
    for kernel_detail in ("custom_vjp", "defvjp", "im2col", "transpose(", "conv_general_dilated",
                          "Precision."):
        assert kernel_detail not in source, kernel_detail
    ops = (ROOT / "lenet_jax" / "ops.py").read_text()
    assert "jax.custom_vjp" in ops and "def conv2d(" in ops

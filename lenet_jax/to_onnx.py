"""A preset and its parameters as an ONNX graph (``lenet-jax export --format onnx``), built
with ONNX's helper API from ONNX's own operators: Conv, AveragePool/MaxPool, Gemm, Tanh,
Relu, Sigmoid, Resize, Pad. The graph takes what the exported JAX function takes, uint8
MNIST-style images (batch, 28, 28, 1), white on black, with a symbolic batch size, and
returns the logits: the preset's preprocessing is inside it.

C3's connection table stays a table: the maps that see 3, 4 and 6 inputs are three
grouped convolutions over the gathered input maps, 1,500 weights as in the paper, not a
full 6x16 kernel with zeros. It mirrors ``models.LeNet`` layer by layer; the tests hold
it to the JAX logits with onnxruntime.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lenet_jax import models

OPSET = 17
INPUT, OUTPUT = "images", "logits"


class _Graph:
    """Nodes and initialisers, named in order."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    def constant(self, value: Any, name: str) -> str:
        array = np.asarray(value)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def op(self, kind: str, *inputs: str, name: str | None = None, **attributes: Any) -> str:
        self.count += 1
        out = name or f"{kind.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(kind, list(inputs), [out], **attributes))
        return out


def _activation(g: _Graph, kind: str, x: str) -> str:
    if kind == "scaled_tanh":  # 1.7159 tanh(2a/3), as models.scaled_tanh
        inner = g.op("Mul", x, g.constant(2.0 / 3.0, f"two_thirds_{g.count}"))
        return g.op("Mul", g.op("Tanh", inner), g.constant(1.7159, f"amplitude_{g.count}"))
    return g.op({"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}[kind], x)


def _per_map(values: Any) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(1, -1, 1, 1)


def _conv(g: _Graph, x: str, kernel: Any, bias: Any, layer: str, padding: int = 0) -> str:
    """An HWIO kernel as ONNX's OIHW convolution."""
    weight = np.asarray(kernel, np.float32).transpose(3, 2, 0, 1)
    return g.op("Conv", x, g.constant(weight, f"{layer}.kernel"),
                g.constant(np.asarray(bias, np.float32), f"{layer}.bias"),
                pads=[padding] * 4)


def _table_conv(g: _Graph, x: str, weights: Any, bias: Any) -> str:
    """C3: for each size of input set (3, 4, 6), the maps of that size as one grouped
    convolution over their input maps gathered in table order; concatenated in map order."""
    weights, bias = np.asarray(weights, np.float32), np.asarray(bias, np.float32)
    table = models.C3_TABLE
    first = np.cumsum([0, *(len(m) for m in table)])  # each map's first connection
    outputs, start = [], 0
    while start < len(table):
        size = len(table[start])
        end = start
        while end < len(table) and len(table[end]) == size:
            end += 1
        maps = range(start, end)
        inputs = [i for j in maps for i in table[j]]
        gathered = g.op("Gather", x, g.constant(np.array(inputs), f"C3.inputs_{size}"), axis=1)
        kernel = np.stack([weights[:, :, first[j]:first[j] + size].transpose(2, 0, 1)
                           for j in maps])  # (maps, size, 5, 5)
        outputs.append(g.op("Conv", gathered, g.constant(kernel, f"C3.kernel_{size}"),
                            g.constant(bias[start:end], f"C3.bias_{size}"), group=end - start))
        start = end
    return g.op("Concat", *outputs, axis=1)


def _pool(g: _Graph, x: str, kind: str, params: dict | None, layer: str) -> str:
    window = {"kernel_shape": [2, 2], "strides": [2, 2]}
    if kind == "max":
        return g.op("MaxPool", x, **window)
    mean = g.op("AveragePool", x, **window)
    if kind == "avg":
        return mean
    # the paper's unit: the sum of its four inputs (4 x their mean) x coefficient + bias
    scaled = g.op("Mul", mean, g.constant(4 * _per_map(params["coefficient"]),
                                          f"{layer}.coefficient_x4"))
    return g.op("Add", scaled, g.constant(_per_map(params["bias"]), f"{layer}.bias"))


def _dense(g: _Graph, x: str, params: dict, layer: str) -> str:
    return g.op("Gemm", x, g.constant(np.asarray(params["kernel"], np.float32), f"{layer}.kernel"),
                g.constant(np.asarray(params["bias"], np.float32), f"{layer}.bias"))


def model_proto(preset_name: str, params: Any, class_names: tuple[str, ...] = (),
                maps: bool = False) -> Any:
    """The ``onnx.ModelProto`` of preset ``preset_name`` with ``params`` (a Flax params
    dict, as ``lenet_jax.load`` or ``lenet_jax.pretrained`` returns). With ``maps``, also
    what ``explain.panels`` shows: the preprocessed input and C1, S2, C3, S4 (NCHW) and
    F6, as outputs of those names (the static page draws them)."""
    import onnx
    from onnx import TensorProto, helper

    p = models.get_preset(preset_name)
    g = _Graph()
    act = lambda x: _activation(g, p.activation, x)  # noqa: E731
    shown = []

    def keep(x: str, name: str) -> str:
        if maps:
            shown.append(g.op("Identity", x, name=name))
        return x

    # Preprocessing, as models.preprocess: [0, 1], then the preset's fit and normalisation.
    x = g.op("Div", g.op("Cast", INPUT, to=TensorProto.FLOAT), g.constant(255.0, "white"))
    x = g.op("Transpose", x, perm=[0, 3, 1, 2])  # NHWC -> NCHW
    if p.input_size != models.MNIST_SIZE and p.fit == "pad":
        margin = (p.input_size - models.MNIST_SIZE) // 2
        x = g.op("Pad", x, g.constant(np.array([0, 0, margin, margin] * 2), "margins"))
    elif p.input_size != models.MNIST_SIZE:  # bilinear, half-pixel centres, as jax.image
        scale = p.input_size / models.MNIST_SIZE
        x = g.op("Resize", x, "", g.constant(np.array([1, 1, scale, scale]), "scales"),
                 mode="linear", coordinate_transformation_mode="half_pixel")
    x = keep(g.op("Div", g.op("Sub", x, g.constant(p.mean, "mean")),
                  g.constant(p.std, "std")), "input")

    x = keep(act(_conv(g, x, params["C1"]["kernel"], params["C1"]["bias"], "C1",
                       p.c1_padding)), "C1")
    x = _pool(g, x, p.pool, params.get("S2"), "S2")
    x = keep(act(x) if p.pool == "trainable" else x, "S2")
    if p.c3 == "paper_table":
        x = act(_table_conv(g, x, params["C3"]["kernel"], params["C3"]["bias"]))
    else:
        x = act(_conv(g, x, params["C3"]["kernel"], params["C3"]["bias"], "C3"))
    x = keep(x, "C3")
    x = _pool(g, x, p.pool, params.get("S4"), "S4")
    x = keep(act(x) if p.pool == "trainable" else x, "S4")
    if p.c5 == "conv":
        x = g.op("Flatten", _conv(g, x, params["C5"]["kernel"], params["C5"]["bias"], "C5"))
    else:  # flattened in NHWC order, as ops.flatten
        x = _dense(g, g.op("Flatten", g.op("Transpose", x, perm=[0, 2, 3, 1])), params["C5"],
                   "C5")
    x = act(x) if p.c5_activation else x
    x = keep(act(_dense(g, x, params["F6"], "F6")), "F6")
    if p.head == "rbf":  # -scale * squared distance to each fixed code
        codes = g.constant(models.rbf_codes()[None], "rbf_codes")  # (1, 10, 84)
        difference = g.op("Sub", g.op("Unsqueeze", x, g.constant(np.array([1]), "axis_1")),
                          codes)
        distance = g.op("ReduceSum", g.op("Mul", difference, difference),
                        g.constant(np.array([2]), "axis_2"), keepdims=0)
        g.op("Mul", distance, g.constant(-p.rbf_logit_scale, "logit_scale"), name=OUTPUT)
    else:
        out = _dense(g, x, params["OUTPUT"], "OUTPUT")
        g.op("Identity", out, name=OUTPUT)

    side = models.MNIST_SIZE
    graph = helper.make_graph(
        g.nodes, f"lenet_{preset_name}",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", side, side, 1])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", models.CLASSES])]
        + [helper.make_tensor_value_info(  # NCHW maps; F6 (batch, 84)
            name, TensorProto.FLOAT, ["batch", 84] if name == "F6"
            else ["batch", f"{name}_maps", f"{name}_height", f"{name}_width"])
           for name in shown],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="lenet-jax")
    model.doc_string = (f"LeNet-5 preset {preset_name}: uint8 images (batch, 28, 28, 1), "
                        "white on black -> logits (batch, 10)")
    if class_names:
        helper.set_model_props(model, {"class_names": ",".join(class_names)})
    onnx.checker.check_model(model, full_check=True)
    return model

"""The LeNet-5 family as one Flax module driven by a table of presets.

Every variant is a row of ``PRESETS``; ``LeNet`` reads the row and builds the
layers C1, S2, C3, S4, C5, F6 and OUTPUT (the paper's names, kept for every
variant so summaries line up). ``original`` follows LeCun, Bottou, Bengio &
Haffner, "Gradient-based learning applied to document recognition" (Proc. IEEE,
1998), Section II-B and Appendix A.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from lenet_jax import ops

MNIST_SIZE = 28  # side of the images every supported data set ships (data.IMAGE_SHAPE)
CLASSES = 10  # every preset's outputs: MNIST's digits, Fashion-MNIST's garments
LAYERS = ("C1", "S2", "C3", "S4", "C5", "F6", "OUTPUT")  # the paper's names, every preset
MAP_LAYERS = LAYERS[:4]  # the layers whose outputs are feature maps
SWEEP_STEP = 4  # swept along a strip, one answer per 4 pixels (two 2x2 subsamplings)

Fit = Literal["none", "pad", "resize"]  # how a 28x28 image becomes the input size
Activation = Literal["scaled_tanh", "tanh", "relu", "sigmoid"]
Pool = Literal["trainable", "avg", "max"]  # "trainable": the paper's subsampling units
C3Wiring = Literal["paper_table", "full"]  # Table I's 60 connections, or all 96
C5Kind = Literal["conv", "dense"]  # 120 maps of 5x5, or flatten then 120 units
Head = Literal["rbf", "dense"]  # the paper's Euclidean RBF units, or a dense layer
Init = Literal["paper", "flax"]  # Appendix A's uniform, or Flax's defaults


@dataclasses.dataclass(frozen=True)
class Preset:
    """One LeNet variant: what the layers are and what input they expect (how each is
    trained: ``config.RECIPES``)."""

    name: str
    description: str
    input_size: int  # side of the square image the network takes
    fit: Fit
    mean: float  # normalised pixel = (pixel / 255 - mean) / std
    std: float
    activation: Activation
    pool: Pool
    c1_padding: int
    c3: C3Wiring
    c5: C5Kind
    c5_activation: bool
    head: Head
    dropout: float = 0.0  # before the last layer, training only
    init: Init = "flax"
    rbf_logit_scale: float = 0.0  # logits = -scale * squared distance (rbf head)

    def __post_init__(self) -> None:
        for field, allowed in _literal_fields(Preset).items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"preset {self.name!r}: {field}={getattr(self, field)!r} is "
                                 f"not one of {', '.join(map(repr, allowed))}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed image, NHWC without the batch axis."""
        return (self.input_size, self.input_size, 1)

    @property
    def penalty_scale(self) -> float:
        """logits = -penalty_scale x the output's penalties (low is close): the RBF units'
        squared distances, or minus a dense head's logits."""
        return self.rbf_logit_scale if self.head == "rbf" else 1.0


@functools.cache
def _literal_fields(cls: type) -> dict[str, tuple]:
    """The fields of dataclass ``cls`` typed ``Literal[...]``, with their allowed values."""
    hints = typing.get_type_hints(cls)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(cls)
            if typing.get_origin(hints[f.name]) is Literal}


def _paper_normalisation(background: float = -0.1, foreground: float = 1.175) -> dict:
    # Paper, Sec. II-A: white background -> -0.1, black ink -> 1.175, "which makes
    # the mean input roughly 0 and the variance roughly 1".
    span = foreground - background
    return {"mean": -background / span, "std": 1.0 / span}


_MNIST_STATS = {"mean": 0.1307, "std": 0.3081}  # the tutorials' torchvision constants

_PRESET_ROWS: tuple[Preset, ...] = (
    Preset(
        name="original",
        description="LeCun et al. 1998: scaled tanh, trainable subsampling, C3 table, RBF output",
        input_size=32, fit="pad", **_paper_normalisation(), activation="scaled_tanh",
        pool="trainable", c1_padding=0, c3="paper_table", c5="conv", c5_activation=True,
        head="rbf", rbf_logit_scale=0.05,
        # Flax init, the paper's bitmap codes and logit scale 0.05 measured best; the sweep
        # behind each choice is in benchmarks/RESULTS.md ("original's recipe").
        # init="paper" keeps Appendix A's.
    ),
    Preset(
        name="tanh_avgpool",
        description="32x32, tanh, average pooling, conv C5, fc 84, fc 10",
        input_size=32, fit="resize", **_MNIST_STATS, activation="tanh", pool="avg",
        c1_padding=0, c3="full", c5="conv", c5_activation=True, head="dense",
    ),
    Preset(
        name="relu_maxpool",
        description="32x32, ReLU, max pooling, conv C5 without activation, fc 84, fc 10",
        input_size=32, fit="resize", **_MNIST_STATS, activation="relu", pool="max",
        c1_padding=0, c3="full", c5="conv", c5_activation=False, head="dense",
    ),
    Preset(
        name="sigmoid_maxpool_28",
        description="28x28, sigmoid, max pooling, 16*4*4 -> 120 -> 84 -> 10",
        input_size=28, fit="none", **_MNIST_STATS, activation="sigmoid", pool="max",
        c1_padding=0, c3="full", c5="dense", c5_activation=True, head="dense",
    ),
    Preset(
        name="relu_avgpool_pad2",
        description="28x28, conv1 padding 2, ReLU, average pooling, 400 -> 120 -> 84 -> 10",
        input_size=28, fit="none", **_MNIST_STATS, activation="relu", pool="avg",
        c1_padding=2, c3="full", c5="dense", c5_activation=True, head="dense",
    ),
    Preset(
        name="relu_avgpool_pad2_dropout",
        description="relu_avgpool_pad2 with dropout 0.5 before the last layer",
        input_size=28, fit="none", **_MNIST_STATS, activation="relu", pool="avg",
        c1_padding=2, c3="full", c5="dense", c5_activation=True, head="dense",
        dropout=0.5,
    ),
)

PRESETS: dict[str, Preset] = {p.name: p for p in _PRESET_ROWS}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``ValueError`` naming the valid ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown LeNet preset {name!r}; valid presets: {', '.join(PRESETS)}"
        ) from None


def scaled_tanh(x: jax.Array) -> jax.Array:
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (Appendix A)."""
    return 1.7159 * jnp.tanh(2.0 / 3.0 * x)


ACTIVATIONS: dict[Activation, Callable[[jax.Array], jax.Array]] = {
    "scaled_tanh": scaled_tanh,
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
}

# Paper, Table I: which S2 maps (rows) each C3 map (column) sees. Maps 0-5 take 3
# adjacent maps, 6-11 take 4 adjacent, 12-14 take 4 non-adjacent, 15 takes all 6.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    *((i, (i + 1) % 6, (i + 2) % 6) for i in range(6)),
    *((i, (i + 1) % 6, (i + 2) % 6, (i + 3) % 6) for i in range(6)),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def c3_connection_mask() -> np.ndarray:
    """Boolean (6, 16) matrix: mask[i, j] says S2 map i feeds C3 map j."""
    mask = np.zeros((6, 16), dtype=bool)
    for out_map, in_maps in enumerate(C3_TABLE):
        mask[list(in_maps), out_map] = True
    return mask


# The OUTPUT layer's fixed parameter vectors. The paper (Sec. II-B, Fig. 3) draws each
# class as a stylised 7x12 bitmap with entries +1/-1 (84 = 7 * 12, hence F6's width) but
# does not publish the bitmaps; these are our own drawing of the ten digits in that style.
_DIGIT_BITMAPS = (
    # 0        1          2          3          4
    ("..###..", "...#...", ".#####.", ".#####.", ".....#."),
    (".#...#.", "..##...", "#.....#", "#.....#", "....##."),
    ("#.....#", ".#.#...", "......#", "......#", "...#.#."),
    ("#.....#", "...#...", "......#", "......#", "..#..#."),
    ("#.....#", "...#...", ".....#.", "......#", ".#...#."),
    ("#.....#", "...#...", "....#..", "..####.", "#....#."),
    ("#.....#", "...#...", "...#...", "......#", "#######"),
    ("#.....#", "...#...", "..#....", "......#", ".....#."),
    ("#.....#", "...#...", ".#.....", "......#", ".....#."),
    ("#.....#", "...#...", "#......", "......#", ".....#."),
    (".#...#.", "...#...", "#......", "#.....#", ".....#."),
    ("..###..", ".#####.", "#######", ".#####.", ".....#."),
    # 5        6          7          8          9
    ("#######", "..####.", "#######", ".#####.", ".#####."),
    ("#......", ".#.....", "......#", "#.....#", "#.....#"),
    ("#......", "#......", ".....#.", "#.....#", "#.....#"),
    ("#......", "#......", ".....#.", "#.....#", "#.....#"),
    ("######.", "#.####.", "....#..", "#.....#", "#.....#"),
    ("......#", "##....#", "....#..", ".#####.", ".######"),
    ("......#", "#.....#", "...#...", "#.....#", "......#"),
    ("......#", "#.....#", "...#...", "#.....#", "......#"),
    ("......#", "#.....#", "..#....", "#.....#", "......#"),
    ("......#", "#.....#", "..#....", "#.....#", "......#"),
    ("#.....#", "#.....#", "..#....", "#.....#", ".....#."),
    (".#####.", ".#####.", "..#....", ".#####.", ".####.."),
)


def rbf_codes() -> np.ndarray:
    """(10, 84) float32 array of +1/-1: row d is digit d's 7x12 bitmap, row-major."""
    rows = [_DIGIT_BITMAPS[:12], _DIGIT_BITMAPS[12:]]
    codes = []
    for digit in range(10):
        half, column = divmod(digit, 5)
        bitmap = "".join(line[column] for line in rows[half])
        codes.append([1.0 if pixel == "#" else -1.0 for pixel in bitmap])
    return np.asarray(codes, dtype=np.float32)


def rbf_ceiling(scale: float) -> np.ndarray:
    """(10,) each digit's probability when F6 is exactly its code: the RBF head's softmax
    of ``-scale`` x squared distance to every code caps digits whose codes are close."""
    codes = rbf_codes()
    squared = ((codes[:, None] - codes[None]) ** 2).sum(-1)
    return 1 / np.exp(-scale * squared).sum(1)


def paper_uniform(fan_in: int | np.ndarray) -> nn.initializers.Initializer:
    """Appendix A's initialisation: uniform in [-2.4 / F_i, 2.4 / F_i], F_i the fan-in.

    ``fan_in`` may be an array broadcasting against the last axes of the parameter,
    for layers whose units have different fan-ins (C3).
    """

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        bound = 2.4 / jnp.asarray(fan_in, dtype)
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * bound

    return init


class Conv(nn.Module):
    """k x k convolution with zero padding ``padding`` (the parameters of ``nn.Conv``)."""

    features: int
    kernel_size: int = 5
    padding: int = 0
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, ops.num_maps(x), self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        return ops.conv2d(ops.pad(x, self.padding), kernel) + ops.per_map(bias)


class Subsample(nn.Module):
    """2x2 stride-2 pooling; ``trainable`` is the paper's S2/S4 unit: it sums its four
    inputs, multiplies by a per-map coefficient and adds a per-map bias."""

    kind: Pool
    paper_init: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "max":
            return ops.pool2x2(x, "max")
        if self.kind == "avg":
            return ops.pool2x2(x, "mean")
        if self.paper_init:  # fan-in of a subsampling unit is its 4 inputs
            coefficient_init = bias_init = paper_uniform(4)
        else:  # start as plain average pooling
            coefficient_init, bias_init = nn.initializers.constant(0.25), nn.initializers.zeros
        coefficient = self.param("coefficient", coefficient_init, (ops.num_maps(x),))
        bias = self.param("bias", bias_init, (ops.num_maps(x),))
        return ops.pool2x2(x, "sum") * ops.per_map(coefficient) + ops.per_map(bias)


class PartialConv(nn.Module):
    """A 5x5 VALID convolution where output map j sees only the inputs ``table[j]``.

    Only the connected kernels are parameters (shape (5, 5, connections)), so the
    trainable count is the paper's: 60 * 25 weights + 16 biases = 1,516 for C3.
    """

    table: tuple[tuple[int, ...], ...]
    in_maps: int
    kernel: int = 5
    paper_init: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_index = np.array([i for maps in self.table for i in maps])
        out_index = np.array([j for j, maps in enumerate(self.table) for _ in maps])
        fan_in = np.array([len(self.table[j]) * self.kernel**2 for j in out_index])
        k = self.kernel
        if self.paper_init:
            weight_init = paper_uniform(fan_in)
            bias_init = paper_uniform(np.array([len(m) * k * k for m in self.table]))
        else:
            weight_init = nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
            bias_init = nn.initializers.zeros
        weights = self.param("kernel", weight_init, (k, k, len(in_index)))
        bias = self.param("bias", bias_init, (len(self.table),))
        full_kernel = jnp.zeros((k, k, self.in_maps, len(self.table)), x.dtype)
        full_kernel = full_kernel.at[:, :, in_index, out_index].set(weights)
        return ops.conv2d(x, full_kernel) + ops.per_map(bias)


class RBFOutput(nn.Module):
    """Euclidean RBF units with fixed codes: y_i = sum_j (x_j - w_ij)^2 (Sec. II-B).

    Returns logits ``-logit_scale * y`` so that softmax cross-entropy trains it
    (the paper's MAP criterion is the same penalty plus a constant "rubbish" class).
    """

    logit_scale: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        codes = jnp.asarray(rbf_codes(), x.dtype)  # a constant, not a parameter
        squared_distance = jnp.sum((x[..., None, :] - codes) ** 2, axis=-1)
        self.sow("intermediates", "squared_distance", squared_distance)
        return -self.logit_scale * squared_distance


class LeNet(nn.Module):
    """A LeNet-5 variant; ``__call__`` maps (N, S, S, 1) preprocessed images to (N, 10) logits.
    One module trains and predicts, and every JAX transformation works on it.

    With ``sweep=True`` (presets whose C5 is a convolution) it is the paper's space
    displacement network (Sec. VII): strips (N, S, S + 4k, 1) give (N, k + 1, 10) logits,
    the same network slid along them 4 pixels at a time; C5 is then a row of k + 1
    columns, and F6 and OUTPUT act on each as 1x1 convolutions, with the same parameters.
    """

    preset: Preset

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, sweep: bool = False) -> jax.Array:
        p = self.preset
        _check_input_shape(images, p, sweep)
        act = ACTIVATIONS[p.activation]
        paper = p.init == "paper"
        # A trainable subsampling unit is a neuron, so it has its own squashing.
        pool_act = act if p.pool == "trainable" else (lambda v: v)

        def init(fan_in: int) -> dict:
            if not paper:
                return {}
            return {"kernel_init": paper_uniform(fan_in), "bias_init": paper_uniform(fan_in)}

        def conv(features: int, fan_in: int, name: str, padding: int = 0) -> Conv:
            return Conv(features, padding=padding, name=name, **init(fan_in))

        def dense(features: int, fan_in: int, name: str) -> nn.Dense:
            return nn.Dense(features, name=name, precision=ops.MATMUL_PRECISION, **init(fan_in))

        x = self.keep_map("C1", act(conv(6, 25, "C1", p.c1_padding)(ops.to_maps(images))))
        x = self.keep_map("S2", pool_act(Subsample(p.pool, paper, name="S2")(x)))
        if p.c3 == "paper_table":
            c3 = PartialConv(C3_TABLE, in_maps=6, paper_init=paper, name="C3")
        else:
            c3 = conv(16, 6 * 25, "C3")
        x = self.keep_map("C3", act(c3(x)))
        x = self.keep_map("S4", pool_act(Subsample(p.pool, paper, name="S4")(x)))
        if p.c5 == "conv":
            x = conv(120, 16 * 25, "C5")(x)
            x = ops.columns(x) if sweep else ops.flatten(x)
        else:
            x = ops.flatten(x)
            x = dense(120, x.shape[1], "C5")(x)
        if p.c5_activation:
            x = act(x)
        x = self.keep_map("F6", act(dense(84, 120, "F6")(x)))
        if p.dropout:
            x = nn.Dropout(p.dropout, deterministic=not train)(x)
        if p.head == "rbf":
            return RBFOutput(p.rbf_logit_scale, name="OUTPUT")(x)
        return dense(CLASSES, 84, "OUTPUT")(x)


    def keep_map(self, layer: str, x: jax.Array) -> jax.Array:
        """``x``, also kept (feature maps as NHWC) in the "maps" collection when the
        caller asks for it with ``mutable=["maps"]``: what ``lenet_jax.explain`` draws."""
        if self.is_mutable_collection("maps"):
            self.sow("maps", "layers", {layer: ops.from_maps(x) if x.ndim == 4 else x},
                     init_fn=dict, reduce_fn=lambda kept, new: kept | new)
        return x


def _check_input_shape(images: jax.Array, preset: Preset, sweep: bool = False) -> None:
    if sweep:
        size = preset.input_size
        if preset.c5 != "conv":
            raise ValueError(f"preset {preset.name!r} has a dense C5, so it cannot sweep a "
                             "strip; the presets whose C5 is a convolution can: "
                             + ", ".join(n for n, q in PRESETS.items() if q.c5 == "conv"))
        if (images.ndim != 4 or images.shape[1] != size or images.shape[3] != 1
                or images.shape[2] < size or (images.shape[2] - size) % SWEEP_STEP):
            raise ValueError(f"preset {preset.name!r} sweeps strips of shape (N, {size}, "
                             f"{size} + {SWEEP_STEP}k, 1), got {tuple(images.shape)}")
        return
    if images.shape[1:] != preset.input_shape:
        shape = ", ".join(map(str, preset.input_shape))
        raise ValueError(
            f"preset {preset.name!r} takes images of shape (N, {shape}),"
            f" got {tuple(images.shape)}; use lenet_jax.preprocess first"
        )


def create_model(name: str) -> tuple[LeNet, tuple[int, int, int]]:
    """The module for preset ``name`` and the shape of one input image (H, W, C).

    ``module.apply({"params": params}, images)`` is a pure function of its arguments.
    """
    preset = get_preset(name)
    return LeNet(preset), preset.input_shape


def init_params(module: LeNet, key: jax.Array) -> dict:
    """Fresh parameters for ``module``, from ``key`` alone (one compiled call)."""
    # Init runs once, so on its own it is compiled without LLVM's optimisation: much
    # quicker to compile, values equal to float rounding (benchmarks/RESULTS.md,
    # "Start-up"). Inside a caller's jit, vmap or eval_shape it is traced as usual.
    init = _init_traced if isinstance(key, jax.core.Tracer) else _init_once
    return init(module, key)


def _init_params(module: LeNet, key: jax.Array) -> dict:
    dummy = jnp.zeros((1, *module.preset.input_shape), jnp.float32)
    return module.init(key, dummy)["params"]


_init_traced = jax.jit(_init_params, static_argnums=0)
_init_once = jax.jit(_init_params, static_argnums=0,
                     compiler_options={"xla_backend_optimization_level": 0})


def count_params(params) -> int:
    """Number of trainable scalars in a parameter tree."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def preprocess(images: jax.Array, preset: Preset) -> jax.Array:
    """uint8 (N, 28, 28, 1) or (N, S, S, 1) images -> the preset's float32 input.

    Pure jnp, so it runs inside jit on whatever device holds ``images``.
    """
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    side, size = x.shape[1], preset.input_size
    if side != size:
        if side != MNIST_SIZE or preset.fit == "none":
            raise ValueError(
                f"preset {preset.name!r} takes {size}x{size} or "
                f"{MNIST_SIZE}x{MNIST_SIZE} images, got {side}x{x.shape[2]}"
            )
        if preset.fit == "pad":  # zero pixels are background, as in the paper
            margin = (size - side) // 2
            x = jnp.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
        else:
            x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear")
    return (x - preset.mean) / preset.std


def layer_shapes(name: str, batch_size: int = 1) -> dict[str, tuple[int, ...]]:
    """Each layer's output shape, feature maps as (N, H, W, C), computed without FLOPs."""
    module, input_shape = create_model(name)
    images = jax.ShapeDtypeStruct((batch_size, *input_shape), jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.key(0), images)
    _, state = jax.eval_shape(
        functools.partial(module.apply, capture_intermediates=True, mutable=["intermediates"]),
        variables, images)
    shapes = {layer: state["intermediates"][layer]["__call__"][0].shape for layer in LAYERS}
    return {layer: ops.maps_shape(shape) if len(shape) == 4 else shape
            for layer, shape in shapes.items()}


def summary(name: str, batch_size: int = 1) -> str:
    """A per-layer table: output shape (N, H, W, C) and trainable parameters."""
    module, input_shape = create_model(name)
    params = jax.eval_shape(lambda key: init_params(module, key), jax.random.key(0))
    rows = [("input", str((batch_size, *input_shape)), "")]
    for layer, shape in layer_shapes(name, batch_size).items():
        count = count_params(params.get(layer, {}))
        rows.append((layer, str(shape), f"{count:,}" if count else ""))
    rows.append(("total", "", f"{count_params(params):,}"))
    width = max(len(r[1]) for r in rows) + 2
    lines = [f"LeNet preset {name!r}: {module.preset.description}",
             f"{'layer':8s}{'output shape':{width}s}{'parameters':>10s}"]
    lines += [f"{layer:8s}{shape:{width}s}{count:>10s}" for layer, shape, count in rows]
    return "\n".join(lines)


_POOLS = {"trainable": "the average of each 2x2 square times a trained coefficient, plus a "
                       "bias, squashed (the paper's)",
          "avg": "the average of each 2x2 square", "max": "the largest of each 2x2 square"}


def layer_lines(name: str) -> dict[str, str]:
    """One line per layer of preset ``name`` on what it is, for people looking at its
    maps (the page): "input" through "OUTPUT"."""
    preset = get_preset(name)
    shapes = layer_shapes(name)
    side = preset.input_size
    fit = {"pad": f"padded to {side}x{side}", "resize": f"resized to {side}x{side}",
           "none": "as it is"}[preset.fit]
    c1 = shapes["C1"]
    wiring = ("each over the 3-6 S2 maps the paper's Table I picks (60 connections)"
              if preset.c3 == "paper_table" else "each over all 6 S2 maps")
    c5 = ("120 maps of 1x1, each a 5x5 filter over all 16 S4 maps" if preset.c5 == "conv"
          else "120 units, each over all 400 values of S4")
    output = "10 units over F6's 84, as probabilities"
    if preset.head == "rbf":
        ceiling = rbf_ceiling(preset.rbf_logit_scale)
        low = ", ".join(f"{k} {100 * ceiling[k]:.0f}%" for k in np.argsort(ceiling)[:3])
        output = ("10 RBF units: how far F6 lies from each digit's fixed 7x12 code (the "
                  "paper's output), as probabilities. Codes that share most pixels cap a "
                  f"clean digit's: with F6 exactly on its code, {low}")
    return {
        "input": f"the picture as MNIST has it, 28x28, {fit}, ink bright",
        "C1": f"{c1[-1]} feature maps of {c1[1]}x{c1[2]}: each one 5x5 filter slid over the "
              "input, answering to one kind of stroke or edge",
        "S2": f"C1's maps at half the size: {_POOLS[preset.pool]}",
        "C3": f"16 maps of {shapes['C3'][1]}x{shapes['C3'][2]}, 5x5 filters {wiring}: "
              "combinations of strokes",
        "S4": f"C3's maps at half the size, 5x5: {_POOLS[preset.pool]}",
        "C5": c5,
        "F6": "84 units" + (", drawn as the paper does, 7x12, beside the output's code it lies "
                            "closest to" if preset.head == "rbf" else ""),
        "OUTPUT": output,
    }

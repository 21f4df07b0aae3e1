"""The LeNet-5 family as one Flax module driven by a table of presets.

Every variant is a row of ``PRESETS``; ``LeNet`` reads the row and builds the
layers C1, S2, C3, S4, C5, F6 and OUTPUT (the paper's names, kept for every
variant so summaries line up). ``original`` follows LeCun, Bottou, Bengio &
Haffner, "Gradient-based learning applied to document recognition" (Proc. IEEE,
1998), Section II-B and Appendix A.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

MNIST_SIZE = 28  # side of the images every supported data set ships


@dataclasses.dataclass(frozen=True)
class Preset:
    """One LeNet variant: what the layers are and what input they expect."""

    name: str
    description: str
    input_size: int  # side of the square image the network takes
    fit: str  # how a 28x28 image becomes input_size: "none" | "pad" | "resize"
    mean: float  # normalised pixel = (pixel / 255 - mean) / std
    std: float
    activation: str  # key of ACTIVATIONS
    pool: str  # "trainable" (paper's subsampling) | "avg" | "max"
    c1_padding: int
    c3: str  # "paper_table" (Table I, 60 connections) | "full"
    c5: str  # "conv" (120 maps of 5x5) | "dense" (flatten, then 120 units)
    c5_activation: bool
    head: str  # "rbf" (paper's Euclidean RBF units) | "dense"
    dropout: float = 0.0  # before the last layer, training only
    init: str = "flax"  # "paper" (Appendix A) | "flax" (Flax defaults)
    rbf_logit_scale: float = 0.0  # logits = -scale * squared distance (rbf head)
    # The training recipe measured best for this row (train.py's --lr/--schedule override).
    learning_rate: float = 1e-3
    schedule: str = "constant"
    augment: bool = False  # random affine distortions of the training images

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed image, NHWC without the batch axis."""
        return (self.input_size, self.input_size, 1)


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
        head="rbf", rbf_logit_scale=0.05, learning_rate=3e-3, schedule="cosine", augment=True,
        # Measured on MNIST, 2 epochs, batch 64, test accuracy after epochs 1/2 (2 cores):
        #   Appendix A init U(+-2.4/Fi), scale 0.1, Adam 1e-3:  96.32 / 97.31
        #   Flax init (lecun_normal), scale 0.1, Adam 1e-3:      97.21 / 98.02
        #   scale 0.02 / 0.05 / 0.3 (Flax init, 1e-3):  96.73/97.78, 97.10/98.10, 96.59/97.63
        #   random +-1 codes instead of the bitmaps (scale 0.1): 97.16 / 97.97
        #   scale 0.05, Adam 2e-3 / 3e-3 with cosine decay:      97.63/98.21, 97.99/98.31
        # Hence Flax init, the paper's bitmap codes, scale 0.05, Adam 3e-3 + cosine.
        # init="paper" keeps Appendix A's initialisation available. Over 10 epochs that
        # gave 98.95% (scale 0.02: 98.90, Adam 2e-3: 98.77); with the paper's distortions
        # (Sec. V-B; --augment) 99.10%, and 98.61% after 2 epochs, so they are on.
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


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
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


def paper_uniform(fan_in: int | np.ndarray) -> nn.initializers.Initializer:
    """Appendix A's initialisation: uniform in [-2.4 / F_i, 2.4 / F_i], F_i the fan-in.

    ``fan_in`` may be an array broadcasting against the last axes of the parameter,
    for layers whose units have different fan-ins (C3).
    """

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        bound = 2.4 / jnp.asarray(fan_in, dtype)
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * bound

    return init


# Inside the network, feature maps are channel-major, (C, H, W, N): the batch is the
# innermost, contiguous axis. On XLA:CPU that makes every activation, pooling window
# and im2col copy a run of whole batch rows that vectorises, and turns each
# convolution into one matrix product. Measured (scanned epoch, batch 64, 2 cores):
# `original` 8,708 img/s in NHWC with XLA's convolutions, 19,438 channel-major with
# im2col; `relu_maxpool` 10,463 -> 22,832 (benchmarks/RESULTS.md, with the steps).
# Parameters keep Flax's shapes (HWIO kernels), so checkpoints do not depend on the layout.
_CHWN = ("CHWN", "HWIO", "CHWN")

# Every product in the network is float32 x float32 -> float32. On CPU that is XLA's
# only choice anyway; on an Ampere/Hopper GPU XLA would otherwise take TF32 (a 10-bit
# mantissa) for float32 matmuls and convolutions, and CPU and GPU runs would differ by
# more than rounding. A LeNet step is bound by kernel launches, not FLOPs, on a GPU.
MATMUL_PRECISION = jax.lax.Precision.HIGHEST


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=MATMUL_PRECISION)


def _windows(x: jax.Array, k: int) -> jax.Array:
    """(k*k, C, H', W', N): the k x k window offsets (i, j) of ``x``, row-major."""
    c, h, w, n = x.shape
    ho, wo = h - k + 1, w - k + 1
    # Two stacks of k slices (along W, then H), not one of k*k: XLA:CPU fuses each into
    # one copy, where a k*k stack became k*k slice copies plus a concatenation (the
    # scanned epoch of `original` ran at 15,470 img/s that way, 17,631 this way).
    columns = jnp.stack([x[:, :, j:j + wo, :] for j in range(k)])
    return jnp.stack([columns[:, :, i:i + ho] for i in range(k)]).reshape(k * k, c, ho, wo, n)


def _overlap_add(dwindows: jax.Array, shape: tuple[int, ...], k: int) -> jax.Array:
    """The transpose of ``_windows``: each offset's gradient added back in place."""
    _, h, w, _ = shape
    ho, wo = h - k + 1, w - k + 1
    # In-place slice updates: XLA:CPU fused a sum of k*k padded copies into its
    # consumers and recomputed it per use (12,062 img/s for `original`, 15,470 like this).
    dx = jnp.zeros(shape, dwindows.dtype)
    for i in range(k):
        for j in range(k):
            dx = dx.at[:, i:i + ho, j:j + wo, :].add(dwindows[i * k + j])
    return dx


def _patches(x: jax.Array, k: int) -> jax.Array:
    """The im2col matrix (k*k*C, H'*W'*N); rows ordered (i, j, c) like an HWIO kernel."""
    return _windows(x, k).reshape(k * k * x.shape[0], -1)


def _conv_and_patches(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    k, _, _, cout = kernel.shape
    _, h, w, n = x.shape
    patches = _patches(x, k)
    y = _matmul(kernel.reshape(-1, cout).T, patches)
    return y.reshape(cout, h - k + 1, w - k + 1, n), patches


@jax.custom_vjp
def _im2col_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _conv_and_patches(x, kernel)[0]


def _im2col_fwd(x, kernel):
    # Keeping the patches for the kernel gradient: 2-3% faster than rebuilding them
    # (19,894 / 20,293 vs 19,455 / 19,681 img/s for `original`, two runs each).
    # x is kept only for its shape, yet deriving the shape from dy instead measured
    # 3-4% slower (19,256 / 18,843 vs 19,995 / 19,509 img/s), so it stays.
    y, patches = _conv_and_patches(x, kernel)
    return y, (x, kernel, patches)


def _im2col_bwd(residuals, dy):
    x, kernel, patches = residuals
    k, _, cin, cout = kernel.shape
    dy_rows = dy.reshape(cout, -1)
    dkernel = _matmul(patches, dy_rows.T).reshape(kernel.shape)
    dwindows = _matmul(kernel.reshape(-1, cout), dy_rows).reshape(k * k, cin, *dy.shape[1:])
    return _overlap_add(dwindows, x.shape, k), dkernel


_im2col_conv.defvjp(_im2col_fwd, _im2col_bwd)


def _lax_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_CHWN,
                                        precision=MATMUL_PRECISION)


def conv2d(x: jax.Array, kernel: jax.Array, backend: str | None = None) -> jax.Array:
    """VALID, stride-1 convolution of channel-major ``x`` (C, H, W, N) with an HWIO
    kernel, giving (O, H', W', N); spelt per shape and backend (same function).

    - A kernel that covers the whole input (C5 on 5x5 maps) is a dense layer: a matmul.
    - On XLA:CPU, im2col and one matrix product, with the gradient written out
      (XLA:CPU's own convolutions ran at a fraction of its matmul speed here).
    - Elsewhere (GPU), XLA's convolution, which picks the cuDNN layout itself.
    """
    k, kw, cin, cout = kernel.shape
    if k != kw:
        raise ValueError(f"conv2d takes square kernels, got {k}x{kw}")
    if x.shape[1:3] == (k, k):
        flat = x.transpose(1, 2, 0, 3).reshape(k * k * cin, x.shape[3])  # rows (i, j, c)
        return _matmul(kernel.reshape(-1, cout).T, flat).reshape(cout, 1, 1, x.shape[3])
    if (backend or jax.default_backend()) == "cpu":
        return _im2col_conv(x, kernel)
    return _lax_conv(x, kernel)


def _per_map(v: jax.Array) -> jax.Array:
    """A per-map vector broadcast over channel-major (C, H, W, N) maps."""
    return v[:, None, None, None]


class Conv(nn.Module):
    """k x k convolution with zero padding ``padding`` on channel-major maps
    (same parameters as ``nn.Conv``)."""

    features: int
    kernel_size: int = 5
    padding: int = 0
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[0], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        if self.padding:
            pad = self.padding
            x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        return conv2d(x, kernel) + _per_map(bias)


class Subsample(nn.Module):
    """2x2 stride-2 pooling of channel-major maps; ``trainable`` is the paper's S2/S4 unit.

    A trainable unit sums its four inputs, multiplies by a per-map coefficient and
    adds a per-map bias (2 parameters per map).
    """

    kind: str
    paper_init: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        maps, height, width, n = x.shape
        windows = x.reshape(maps, height // 2, 2, width // 2, 2, n)  # even sides only
        if self.kind == "max":
            return windows.max(axis=(2, 4))
        if self.kind == "avg":
            return windows.mean(axis=(2, 4))
        if self.paper_init:  # fan-in of a subsampling unit is its 4 inputs
            coefficient_init = bias_init = paper_uniform(4)
        else:  # start as plain average pooling
            coefficient_init, bias_init = nn.initializers.constant(0.25), nn.initializers.zeros
        coefficient = self.param("coefficient", coefficient_init, (maps,))
        bias = self.param("bias", bias_init, (maps,))
        return windows.sum(axis=(2, 4)) * _per_map(coefficient) + _per_map(bias)


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
        return conv2d(x, full_kernel) + _per_map(bias)


class RBFOutput(nn.Module):
    """Euclidean RBF units with fixed codes: y_i = sum_j (x_j - w_ij)^2 (Sec. II-B).

    Returns logits ``-logit_scale * y`` so that softmax cross-entropy trains it
    (the paper's MAP criterion is the same penalty plus a constant "rubbish" class).
    """

    logit_scale: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        codes = jnp.asarray(rbf_codes(), x.dtype)  # a constant, not a parameter
        squared_distance = jnp.sum((x[:, None, :] - codes[None, :, :]) ** 2, axis=-1)
        self.sow("intermediates", "squared_distance", squared_distance)
        return -self.logit_scale * squared_distance


class LeNet(nn.Module):
    """A LeNet-5 variant; ``__call__`` maps (N, S, S, 1) preprocessed images to (N, 10) logits.

    The convolutional part runs on channel-major maps (C, H, W, N), see ``conv2d``;
    F6 and OUTPUT are batch-major as usual.
    """

    preset: Preset

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        p = self.preset
        if images.shape[1:] != p.input_shape:
            shape = ", ".join(map(str, p.input_shape))
            raise ValueError(
                f"preset {p.name!r} takes images of shape (N, {shape}),"
                f" got {tuple(images.shape)}; use lenet_jax.preprocess first"
            )
        act = ACTIVATIONS[p.activation]
        paper = p.init == "paper"
        # A trainable subsampling unit is a neuron, so it has its own squashing.
        pool_act = act if p.pool == "trainable" else (lambda v: v)

        def conv(features: int, fan_in: int, name: str, padding: int = 0) -> Conv:
            extra = {}
            if paper:
                extra = {"kernel_init": paper_uniform(fan_in), "bias_init": paper_uniform(fan_in)}
            return Conv(features, padding=padding, name=name, **extra)

        def dense(features: int, fan_in: int, name: str) -> nn.Dense:
            extra = {}
            if paper:
                extra = {"kernel_init": paper_uniform(fan_in), "bias_init": paper_uniform(fan_in)}
            return nn.Dense(features, name=name, precision=MATMUL_PRECISION, **extra)

        # NHWC <-> channel-major (C, H, W, N) is the same swap of axes 0 and 3.
        to_channel_major = to_batch_major = (3, 1, 2, 0)
        x = act(conv(6, 25, "C1", p.c1_padding)(images.transpose(to_channel_major)))
        x = pool_act(Subsample(p.pool, paper, name="S2")(x))
        if p.c3 == "paper_table":
            x = PartialConv(C3_TABLE, in_maps=6, paper_init=paper, name="C3")(x)
        else:
            x = conv(16, 6 * 25, "C3")(x)
        x = act(x)
        x = pool_act(Subsample(p.pool, paper, name="S4")(x))
        if p.c5 == "conv":
            x = conv(120, 16 * 25, "C5")(x).reshape(120, -1).T
        else:  # flattened in NHWC order (H, W, C), as the tutorials' nets flatten
            x = x.transpose(to_batch_major)
            x = dense(120, math.prod(x.shape[1:]), "C5")(x.reshape(x.shape[0], -1))
        if p.c5_activation:
            x = act(x)
        x = act(dense(84, 120, "F6")(x))
        if p.dropout:
            x = nn.Dropout(p.dropout, deterministic=not train)(x)
        if p.head == "rbf":
            return RBFOutput(p.rbf_logit_scale, name="OUTPUT")(x)
        return dense(10, 84, "OUTPUT")(x)


def create_model(name: str) -> tuple[LeNet, tuple[int, int, int]]:
    """The module for preset ``name`` and the shape of one input image (H, W, C).

    ``module.apply({"params": params}, images)`` is a pure function of its arguments.
    """
    preset = get_preset(name)
    return LeNet(preset), preset.input_shape


def init_params(module: LeNet, key: jax.Array) -> dict:
    """Fresh parameters for ``module``, from ``key`` alone."""
    dummy = jnp.zeros((1, *module.preset.input_shape), jnp.float32)
    return module.init(key, dummy)["params"]


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


def summary(name: str, batch_size: int = 1) -> str:
    """A per-layer table of output shapes and parameter counts (Flax's ``tabulate``).

    C1 to S4 show channel-major shapes (C, H, W, N): the layout they compute in.
    """
    module, input_shape = create_model(name)
    dummy = jnp.zeros((batch_size, *input_shape), jnp.float32)
    return module.tabulate(jax.random.key(0), dummy, depth=1, console_kwargs={"width": 120})

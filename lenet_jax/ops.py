"""The kernels under LeNet's layers: the feature-map layout, convolution, pooling and
numeric precision. ``models.py`` calls only these, so it reads as the paper's layers.

Feature maps are channel-major, (C, H, W, N), batch innermost: on XLA:CPU every
activation, pooling window and im2col copy is then a run of whole batch rows that
vectorises, and each convolution is one matrix product. Parameters keep Flax's shapes
(HWIO kernels), so checkpoints do not depend on the layout. Why, with the measurements
(layout, im2col, and the hand-written gradient tried and dropped): ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

# Every product is float32 x float32 -> float32: without it an Ampere/Hopper GPU would
# take TF32 for float32 matmuls and convolutions, and CPU and GPU runs would differ by
# more than rounding.
MATMUL_PRECISION = jax.lax.Precision.HIGHEST

_CHWN = ("CHWN", "HWIO", "CHWN")  # conv_general_dilated's spelling of the layout


def to_maps(images: jax.Array) -> jax.Array:
    """NHWC images -> feature maps in the kernels' layout."""
    return images.transpose(3, 1, 2, 0)


def from_maps(x: jax.Array) -> jax.Array:
    """Feature maps -> NHWC (the same swap of axes 0 and 3)."""
    return x.transpose(3, 1, 2, 0)


def maps_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The NHWC shape of feature maps of ``shape`` (what a user would call it)."""
    c, h, w, n = shape
    return (n, h, w, c)


def num_maps(x: jax.Array) -> int:
    return x.shape[0]


def per_map(v: jax.Array) -> jax.Array:
    """A per-map vector (bias, coefficient) broadcast over feature maps."""
    return v[:, None, None, None]


def pad(x: jax.Array, margin: int) -> jax.Array:
    """Zero-pad each map by ``margin`` pixels on every side."""
    return jnp.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)))


def pool2x2(x: jax.Array, reduce: Literal["max", "mean", "sum"]) -> jax.Array:
    """Non-overlapping 2x2 windows of each map, reduced (even sides only)."""
    maps, height, width, n = x.shape
    windows = x.reshape(maps, height // 2, 2, width // 2, 2, n)
    return getattr(windows, reduce)(axis=(2, 4))


def flatten(x: jax.Array) -> jax.Array:
    """Feature maps -> (N, H*W*C) rows, in NHWC order as the tutorials' nets flatten."""
    return from_maps(x).reshape(x.shape[3], -1)


def columns(x: jax.Array) -> jax.Array:
    """Maps one pixel high, (C, 1, W, N) -> (N, W, C): a row of W feature vectors."""
    return from_maps(x)[:, 0]


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=MATMUL_PRECISION)


def conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID, stride-1 convolution of maps ``x`` with an HWIO kernel.

    - A kernel that covers the whole input (C5 on 5x5 maps) is a dense layer: a matmul.
    - On XLA:CPU, im2col and one matrix product (XLA:CPU's own convolutions run at a
      fraction of its matmul speed); autodiff's gradient, so every JAX transformation
      (jvp, jacfwd, vmap, grad, linearize) works.
    - Elsewhere (GPU), XLA's convolution, which picks the cuDNN layout itself.

    The choice is made per platform inside the traced function
    (``jax.lax.platform_dependent``), so one ``jax.export`` for ("cpu", "cuda") carries
    im2col for CPU and cuDNN's convolution for CUDA; a program lowered for one platform
    keeps only its branch.
    """
    k, kw, cin, cout = kernel.shape
    if k != kw:
        raise ValueError(f"conv2d takes square kernels, got {k}x{kw}")
    if x.shape[1:3] == (k, k):
        flat = x.transpose(1, 2, 0, 3).reshape(k * k * cin, x.shape[3])  # rows (i, j, c)
        return matmul(kernel.reshape(-1, cout).T, flat).reshape(cout, 1, 1, x.shape[3])
    return jax.lax.platform_dependent(x, kernel, cpu=_im2col_conv, default=xla_conv)


def xla_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's own convolution of maps ``x`` (what ``conv2d`` uses off the CPU)."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_CHWN,
                                        precision=MATMUL_PRECISION)


def _windows(x: jax.Array, k: int) -> jax.Array:
    """(k*k, C, H', W', N): the k x k window offsets (i, j) of ``x``, row-major."""
    c, h, w, n = x.shape
    ho, wo = h - k + 1, w - k + 1
    # Two stacks of k slices (W, then H): XLA:CPU fuses each into one copy, where one
    # stack of k*k slices became k*k copies and a concatenation.
    columns = jnp.stack([x[:, :, j:j + wo, :] for j in range(k)])
    return jnp.stack([columns[:, :, i:i + ho] for i in range(k)]).reshape(k * k, c, ho, wo, n)


def _im2col_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The convolution as one product with the im2col matrix (k*k*C, H'*W'*N), its rows
    ordered like the HWIO kernel's."""
    k, _, cin, cout = kernel.shape
    _, h, w, n = x.shape
    patches = _windows(x, k).reshape(k * k * cin, -1)
    y = matmul(kernel.reshape(-1, cout).T, patches)
    return y.reshape(cout, h - k + 1, w - k + 1, n)

"""The Flax-example reference model: the same preset row written the way Flax's
examples/mnist writes its CNN (``nn.Conv``, ``nn.avg_pool`` / ``nn.max_pool``,
``nn.Dense``, NHWC throughout, XLA's convolutions), for the benchmark's
"Flax example" contender.

As in torch_reference.py, C3's connection table is a fixed 0/1 mask on a full 6->16
kernel: the same function and the arithmetic a dense kernel costs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from lenet_jax.models import ACTIVATIONS, Preset, c3_connection_mask, rbf_codes


class FlaxExampleLeNet(nn.Module):
    preset: Preset

    def _pool(self, x: jax.Array, name: str) -> jax.Array:
        if self.preset.pool == "max":
            return nn.max_pool(x, (2, 2), (2, 2))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        if self.preset.pool == "avg":
            return x
        maps = x.shape[-1]  # the paper's trainable subsampling: 4 * mean * coefficient + bias
        coefficient = self.param(f"{name}_coefficient", nn.initializers.constant(0.25), (maps,))
        return x * 4 * coefficient + self.param(f"{name}_bias", nn.initializers.zeros, (maps,))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        p = self.preset
        act = ACTIVATIONS[p.activation]
        pool_act = act if p.pool == "trainable" else (lambda v: v)
        pad = p.c1_padding
        x = act(nn.Conv(6, (5, 5), padding=((pad, pad), (pad, pad)))(x))
        x = pool_act(self._pool(x, "S2"))
        mask = c3_connection_mask() if p.c3 == "paper_table" else jnp.ones((6, 16), bool)
        kernel = self.param("C3_kernel", nn.initializers.lecun_normal(), (5, 5, 6, 16))
        x = jax.lax.conv_general_dilated(x, kernel * mask, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = act(x + self.param("C3_bias", nn.initializers.zeros, (16,)))
        x = pool_act(self._pool(x, "S4"))
        if p.c5 == "conv":
            x = nn.Conv(120, (5, 5), padding="VALID")(x).reshape(x.shape[0], -1)
        else:
            x = nn.Dense(120)(x.reshape(x.shape[0], -1))
        if p.c5_activation:
            x = act(x)
        x = act(nn.Dense(84)(x))
        if p.dropout:
            x = nn.Dropout(p.dropout, deterministic=not train)(x)
        if p.head == "rbf":
            codes = jnp.asarray(rbf_codes())
            return -p.rbf_logit_scale * jnp.sum((x[:, None, :] - codes[None]) ** 2, axis=-1)
        return nn.Dense(10)(x)

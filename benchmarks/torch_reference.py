"""The PyTorch eager reference: the same preset row built with torch.nn, trained the
way the PyTorch tutorials do (whole data set as float tensors, Adam, eager autograd).

C3's connection table is a fixed 0/1 mask on a full 6->16 convolution: the same
function and the same arithmetic a dense kernel costs, as a tutorial would write it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

if TYPE_CHECKING:
    from lenet_jax.models import Preset

ACTIVATIONS = {
    "scaled_tanh": lambda x: 1.7159 * torch.tanh(2.0 / 3.0 * x),
    "tanh": torch.tanh,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
}


class Subsample(nn.Module):
    def __init__(self, kind: str, maps: int):
        super().__init__()
        self.kind = kind
        if kind == "trainable":
            self.coefficient = nn.Parameter(torch.full((maps,), 0.25))
            self.bias = nn.Parameter(torch.zeros(maps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool2d(x, 2)
        if self.kind == "avg":
            return F.avg_pool2d(x, 2)
        return F.avg_pool2d(x, 2) * 4 * self.coefficient[:, None, None] + self.bias[:, None, None]


class TorchLeNet(nn.Module):
    def __init__(self, preset: Preset):
        super().__init__()
        self.preset = preset
        self.act = ACTIVATIONS[preset.activation]
        self.c1 = nn.Conv2d(1, 6, 5, padding=preset.c1_padding)
        self.s2 = Subsample(preset.pool, 6)
        self.c3 = nn.Conv2d(6, 16, 5)
        mask = torch.ones(16, 6, 1, 1)
        if preset.c3 == "paper_table":
            from lenet_jax.models import c3_connection_mask  # only here: imports JAX

            mask = torch.from_numpy(c3_connection_mask().T.astype(np.float32))[:, :, None, None]
        self.register_buffer("c3_mask", mask)
        self.s4 = Subsample(preset.pool, 16)
        side = (preset.input_size + 2 * preset.c1_padding - 4) // 2
        side = (side - 4) // 2
        if preset.c5 == "conv":
            self.c5 = nn.Conv2d(16, 120, 5)
        else:
            self.c5 = nn.Linear(16 * side * side, 120)
        self.f6 = nn.Linear(120, 84)
        self.dropout = nn.Dropout(preset.dropout)
        if preset.head == "rbf":
            from lenet_jax.models import rbf_codes

            self.register_buffer("codes", torch.from_numpy(rbf_codes()))
        else:
            self.output = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, act = self.preset, self.act
        pool_act = act if p.pool == "trainable" else (lambda v: v)
        x = pool_act(self.s2(act(self.c1(x))))
        x = act(F.conv2d(x, self.c3.weight * self.c3_mask, self.c3.bias))
        x = pool_act(self.s4(x))
        x = self.c5(x).flatten(1) if p.c5 == "conv" else self.c5(x.flatten(1))
        if p.c5_activation:
            x = act(x)
        x = self.dropout(act(self.f6(x)))
        if p.head == "rbf":
            return -p.rbf_logit_scale * ((x[:, None, :] - self.codes[None]) ** 2).sum(-1)
        return self.output(x)


def to_nchw(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(images_nhwc.transpose(0, 3, 1, 2)))  # a writable copy


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                labels: torch.Tensor, order: torch.Tensor, batch_size: int) -> float:
    """One pass over ``order`` in batches; returns the last loss."""
    model.train()
    loss = torch.zeros(())
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images[index]), labels[index])
        loss.backward()
        optimizer.step()
    return loss.item()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size])
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / len(labels)

"""Synapse operations NIR has and ``torch.nn`` lacks, for networks imported from NIR."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = (int(x) for x in v)
    return (a, b)


class SumPool2d(nn.Module):
    """NIR's ``SumPool2d``: the sum over each window (zero padding), exact: ``avg_pool2d``
    with divisor 1 adds the same values in the same order as the average pool's sum."""

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int], padding: int | Sequence[int] = 0):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, divisor_override=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Gain(nn.Module):
    """NIR's ``Scale``: an elementwise, per-neuron factor (a buffer, not trained). An
    imported ``LI`` node whose input gain ``r dt / tau`` is not 1 gets one before it."""

    scale: torch.Tensor  # buffer

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

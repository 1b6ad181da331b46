"""A time-invariant input as a sequence: ``[B, ...]`` seen at every one of ``T`` steps."""

from __future__ import annotations

from typing import Any

import torch


class _OverTime(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, steps: int) -> torch.Tensor:
        return x.unsqueeze(0).expand(steps, *x.shape)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        # Autograd's own expand backward sums into a contiguous tensor whatever the
        # gradient's layout: over a channels-last [T, B, C, H, W] gradient that is a
        # strided reduction (4x slower, measured) and a copy back to channels-last later.
        # The sum written in the gradient's own layout runs in memory order.
        out = torch.empty_like(g[0])
        torch.sum(g, 0, out=out)
        return out, None


def over_time(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x`` repeated over ``steps`` leading time steps as a stride-0 view (no copy); its
    gradient is the sum over time, kept in the gradient's memory layout."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.unsqueeze(0).expand(steps, *x.shape)
    out: torch.Tensor = _OverTime.apply(x, steps)
    return out

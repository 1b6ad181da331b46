"""Spike functions as plain tensor math: Heaviside forward, surrogate derivative backward.

Every surrogate takes ``u = v - vth`` and returns ``(u > 0)`` as a float tensor, so the
forward pass is the tutorial's strict ``v > vth`` (for IEEE floats ``v - vth > 0`` holds
exactly when ``v > vth``). Only the backward pass differs between surrogates.

================  ==============================================  =======================
name              derivative d spike / d u                        width parameter
================  ==============================================  =======================
``rectangle``     ``1/(2w)`` if ``|u| < w`` else 0 (the tutorial)  ``w`` (tutorial: 0.5)
``triangle``      ``max(0, 1 - |u|/w) / w``                       ``w`` half-width
``sigmoid``       ``k * sig(k u) * (1 - sig(k u))``               ``k`` slope
``atan``          ``a / (2 (1 + (pi/2 * a * u)^2))``              ``a`` slope
================  ==============================================  =======================

The neuron layer wraps these in :class:`snn_lab.neurons.Surrogate`; the fused kernels
of this package call them directly by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["SURROGATE_GRADS", "SURROGATE_WIDTHS", "heaviside", "spike", "surrogate_grad"]


def heaviside(u: torch.Tensor) -> torch.Tensor:
    """Strict Heaviside ``u > 0`` in the dtype of ``u`` (no gradient)."""
    return (u > 0).to(u.dtype)


def _rectangle_grad(u: torch.Tensor, w: float) -> torch.Tensor:
    # Same expression as the tutorial: (|u| < lens) / (2 lens).
    return (u.abs() < w).to(u.dtype) / (w * 2)


def _triangle_grad(u: torch.Tensor, w: float) -> torch.Tensor:
    return torch.clamp(1.0 - u.abs() / w, min=0.0) / w


def _sigmoid_grad(u: torch.Tensor, k: float) -> torch.Tensor:
    s = torch.sigmoid(k * u)
    return k * s * (1.0 - s)


def _atan_grad(u: torch.Tensor, a: float) -> torch.Tensor:
    return a / (2.0 * (1.0 + (math.pi / 2.0 * a * u) ** 2))


#: derivative of the spike w.r.t. ``u`` per surrogate name: ``f(u, width)``
SURROGATE_GRADS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "rectangle": _rectangle_grad,
    "triangle": _triangle_grad,
    "sigmoid": _sigmoid_grad,
    "atan": _atan_grad,
}

#: default width/slope per surrogate; ``rectangle`` is the tutorial's lens = 0.5
SURROGATE_WIDTHS: dict[str, float] = {"rectangle": 0.5, "triangle": 1.0, "sigmoid": 4.0, "atan": 2.0}


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, name: str, width: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.name = name
        ctx.width = width
        return heaviside(u)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (u,) = ctx.saved_tensors
        return grad_out * SURROGATE_GRADS[ctx.name](u, ctx.width), None, None


def spike(u: torch.Tensor, name: str, width: float) -> torch.Tensor:
    """``H(u)``; its backward is the named surrogate derivative (plain ``u > 0`` when no
    gradient is needed, so traced deploy graphs never see autograd)."""
    if torch.is_grad_enabled() and u.requires_grad:
        out: torch.Tensor = _SpikeFn.apply(u, name, width)
        return out
    return heaviside(u)


def surrogate_grad(name: str, u: torch.Tensor, width: float, inplace: bool = False) -> torch.Tensor:
    """The surrogate derivative at ``u``, with float-mask arithmetic for the rectangle
    (bool tensors are slow on CPU). ``inplace`` allows overwriting ``u``."""
    if name == "rectangle":
        out = u if inplace else u.clone()
        out.abs_()
        torch.lt(out, width, out=out)
        return out.mul_(1.0 / (width * 2))
    return SURROGATE_GRADS[name](u, width)

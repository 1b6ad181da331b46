"""Spike functions: Heaviside forward, surrogate derivative backward.

Every surrogate takes ``u = v - vth`` and returns ``(u > 0)`` as a float tensor, so
the forward pass is the tutorial's strict ``v > vth`` (for IEEE floats ``v - vth > 0``
holds exactly when ``v > vth``). Only the backward pass differs between surrogates.

================  ==============================================  =======================
name              derivative d spike / d u                        width parameter
================  ==============================================  =======================
``rectangle``     ``1/(2w)`` if ``|u| < w`` else 0 (the tutorial)      ``w`` (seed: 0.5)
``triangle``      ``max(0, 1 - |u|/w) / w``                         ``w`` half-width
``sigmoid``       ``k * sig(k u) * (1 - sig(k u))``                 ``k`` slope
``atan``          ``a / (2 (1 + (pi/2 * a * u)^2))``                ``a`` slope
================  ==============================================  =======================
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["SURROGATES", "Surrogate", "get_surrogate", "heaviside"]


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


_GRADS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "rectangle": _rectangle_grad,
    "triangle": _triangle_grad,
    "sigmoid": _sigmoid_grad,
    "atan": _atan_grad,
}

# Default width/slope per surrogate; ``rectangle`` is the tutorial's lens = 0.5.
SURROGATES: dict[str, float] = {"rectangle": 0.5, "triangle": 1.0, "sigmoid": 4.0, "atan": 2.0}


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: torch.Tensor, name: str, width: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.name = name
        ctx.width = width
        return heaviside(u)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (u,) = ctx.saved_tensors
        return grad_out * _GRADS[ctx.name](u, ctx.width), None, None


class Surrogate:
    """A spike function ``u -> H(u)`` whose backward is a named surrogate derivative.

    Plain callable (not a module) so it pickles into hparams-free neuron modules and
    traces to ``u > 0`` under ``torch.no_grad`` (deploy graphs never see autograd).
    """

    def __init__(self, name: str = "rectangle", width: float | None = None):
        if name not in _GRADS:
            raise ValueError(
                f"surrogate={name!r} is unknown; accepted: {', '.join(sorted(_GRADS))}"
            )
        width = SURROGATES[name] if width is None else float(width)
        if not width > 0 or not math.isfinite(width):
            raise ValueError(f"surrogate width={width!r} must be a finite number > 0")
        self.name = name
        self.width = width

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and u.requires_grad:
            return _SpikeFn.apply(u, self.name, self.width)
        return heaviside(u)

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative at ``u`` (used by fused kernels' backward)."""
        return _GRADS[self.name](u, self.width)

    def __repr__(self) -> str:
        return f"Surrogate({self.name!r}, width={self.width})"


def get_surrogate(name: str = "rectangle", width: float | None = None) -> Surrogate:
    return Surrogate(name, width)

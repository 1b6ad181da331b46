"""The spike function a neuron holds: Heaviside forward, a named surrogate backward.

The math lives in :mod:`snn_lab.engine.surrogate` (plain tensors, shared with the fused
kernels); this module gives neurons a small configurable object around it.
"""

from __future__ import annotations

import math

import torch

from ..engine.surrogate import SURROGATE_GRADS, SURROGATE_WIDTHS, heaviside, spike

__all__ = ["SURROGATES", "Surrogate", "get_surrogate", "heaviside"]

#: accepted surrogate names and their default width/slope
SURROGATES: dict[str, float] = dict(SURROGATE_WIDTHS)


class Surrogate:
    """A spike function ``u -> H(u)`` whose backward is a named surrogate derivative.

    Plain callable (not a module) so it pickles into hparams-free neuron modules and
    traces to ``u > 0`` under ``torch.no_grad`` (deploy graphs never see autograd).
    """

    def __init__(self, name: str = "rectangle", width: float | None = None):
        if name not in SURROGATE_GRADS:
            raise ValueError(f"surrogate={name!r} is unknown; accepted: {', '.join(sorted(SURROGATE_GRADS))}")
        width = SURROGATES[name] if width is None else float(width)
        if not width > 0 or not math.isfinite(width):
            raise ValueError(f"surrogate width={width!r} must be a finite number > 0")
        self.name = name
        self.width = width

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return spike(u, self.name, self.width)

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative at ``u``."""
        return SURROGATE_GRADS[self.name](u, self.width)

    def __repr__(self) -> str:
        return f"Surrogate({self.name!r}, width={self.width})"


def get_surrogate(name: str = "rectangle", width: float | None = None) -> Surrogate:
    return Surrogate(name, width)

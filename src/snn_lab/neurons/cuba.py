"""Current-based LIF (NIR's ``CubaLIF``), discretised like the built-in LIF::

    i_t     = alpha * i_{t-1} + x_t                        # synaptic current
    o_{t-1} = H(V_{t-1} - vth)                             # previous step's spike
    V_t     = V_{t-1} * (1 - o_{t-1}) * beta + i_t         # the LIF's delayed reset
    o_t     = H(V_t - vth)

``alpha`` is the synaptic decay, ``beta`` the membrane decay (the LIF's ``decay``). The
input is filtered twice, so a spike's effect on the membrane is spread over several
steps (the usual model for event data). As in the LIF the stored membrane is the
pre-reset ``V_t``; ``reset="subtract"`` replaces ``(1 - o)`` by ``- vth * o`` and
``detach_reset=True`` stops the gradient through the reset. ``alpha = 0`` is the LIF.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import Neuron, check_positive, check_unit
from .lif import RESETS
from .surrogate import Surrogate


class CubaLIFState(NamedTuple):
    v: torch.Tensor
    i: torch.Tensor


class CubaLIF(Neuron):
    """Current-based LIF; ``multi_step`` is the base class's loop over :meth:`step`."""

    State = CubaLIFState
    # buffers, or nn.Parameters when learnable (set by _scalar)
    vth: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor

    def __init__(
        self,
        vth: float = 0.4,
        alpha: float = 0.5,
        beta: float = 0.8,
        surrogate: Surrogate | None = None,
        reset: str = "hard",
        detach_reset: bool = False,
        learn_vth: bool = False,
        learn_alpha: bool = False,
        learn_beta: bool = False,
    ):
        super().__init__(surrogate)
        check_positive("vth", vth)
        check_unit("alpha", alpha)
        check_unit("beta", beta)
        if reset not in RESETS:
            raise ValueError(f"reset={reset!r} is unknown; accepted: {', '.join(RESETS)}")
        self.reset = reset
        self.detach_reset = bool(detach_reset)
        self._scalar("vth", vth, learn_vth)
        self._scalar("alpha", alpha, learn_alpha)
        self._scalar("beta", beta, learn_beta)

    def init_state(self, shape, device=None, dtype=torch.float32) -> CubaLIFState:
        z = torch.zeros(tuple(shape), device=device, dtype=dtype)
        return CubaLIFState(z, z.clone())

    def step(self, x: torch.Tensor, state: CubaLIFState) -> tuple[torch.Tensor, CubaLIFState]:
        v, i = state
        last = self.spike(v - self.vth)
        if self.detach_reset:
            last = last.detach()
        i = self.alpha * i + x
        if self.reset == "hard":  # noqa: SIM108 - one branch per reset rule, as in the docstring
            v = v * (1 - last) * self.beta + i
        else:
            v = (v - self.vth * last) * self.beta + i
        return self.spike(v - self.vth), CubaLIFState(v, i)

    def extra_repr(self) -> str:
        return (
            f"vth={float(self.vth):g}, alpha={float(self.alpha):g}, beta={float(self.beta):g}, "
            f"reset={self.reset}, surrogate={self.spike}"
        )

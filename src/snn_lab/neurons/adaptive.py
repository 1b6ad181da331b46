"""Adaptive-threshold LIF (ALIF, Bellec et al. 2018), with the tutorial's delayed reset.

::

    theta_{t-1} = vth + beta * a_{t-1}
    o_{t-1}     = H(V_{t-1} - theta_{t-1})
    a_t         = rho * a_{t-1} + o_{t-1}            # spike-triggered adaptation
    V_t         = V_{t-1} * (1 - o_{t-1}) * decay + x_t
    o_t         = H(V_t - (vth + beta * a_t))

Each spike raises the threshold by ``beta``, relaxing with factor ``rho`` per step, so
under constant drive the inter-spike interval grows (spike-frequency adaptation).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import Neuron, check_positive, check_unit
from .surrogate import Surrogate


class ALIFState(NamedTuple):
    v: torch.Tensor
    a: torch.Tensor


class ALIF(Neuron):
    State = ALIFState
    # buffers (vth, decay: nn.Parameters when learnable), set by _scalar
    vth: torch.Tensor
    decay: torch.Tensor
    beta: torch.Tensor
    rho: torch.Tensor

    def __init__(
        self,
        vth: float = 0.4,
        decay: float = 0.8,
        beta: float = 0.2,
        rho: float = 0.95,
        surrogate: Surrogate | None = None,
        learn_vth: bool = False,
        learn_decay: bool = False,
    ):
        super().__init__(surrogate)
        check_positive("vth", vth)
        check_unit("decay", decay)
        check_unit("rho", rho)
        if float(beta) < 0:
            raise ValueError(f"beta={beta!r} is invalid: must be >= 0")
        self._scalar("vth", vth, learn_vth)
        self._scalar("decay", decay, learn_decay)
        self._scalar("beta", beta, False)
        self._scalar("rho", rho, False)

    def init_state(self, shape, device=None, dtype=torch.float32) -> ALIFState:
        z = torch.zeros(tuple(shape), device=device, dtype=dtype)
        return ALIFState(z, z.clone())

    def step(self, x: torch.Tensor, state: ALIFState) -> tuple[torch.Tensor, ALIFState]:
        v, a = state
        last = self.spike(v - (self.vth + self.beta * a))
        a = self.rho * a + last
        v = v * (1 - last) * self.decay + x
        return self.spike(v - (self.vth + self.beta * a)), ALIFState(v, a)

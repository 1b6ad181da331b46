"""A current-based LIF neuron, written against snn_lab's neuron contract.

i_t = alpha * i_{t-1} + x_t                      synaptic current
v_t = beta * v_{t-1} * (1 - s_{t-1}) + i_t        membrane, reset after a spike
s_t = H(v_t - vth)                                spike (surrogate gradient)
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from snn_lab.neurons import Neuron, Surrogate


class CubaState(NamedTuple):
    v: torch.Tensor
    i: torch.Tensor


class CubaLIF(Neuron):
    State = CubaState

    def __init__(self, vth: float = 1.0, alpha: float = 0.5, beta: float = 0.8, surrogate: Surrogate | None = None):
        super().__init__(surrogate)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name}={value!r} must lie in [0, 1]")
        if not float(vth) > 0:
            raise ValueError(f"vth={vth!r} must be > 0")
        self.register_buffer("vth", torch.tensor(float(vth)))
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("beta", torch.tensor(float(beta)))

    def init_state(self, shape, device=None, dtype=torch.float32) -> CubaState:
        zeros = torch.zeros(tuple(shape), device=device, dtype=dtype)
        return CubaState(zeros, zeros.clone())

    def step(self, x: torch.Tensor, state: CubaState) -> tuple[torch.Tensor, CubaState]:
        last = self.spike(state.v - self.vth)
        i = self.alpha * state.i + x
        v = self.beta * state.v * (1 - last) + i
        return self.spike(v - self.vth), CubaState(v, i)

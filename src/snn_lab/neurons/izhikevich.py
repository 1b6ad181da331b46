"""Izhikevich (2003) neuron, Euler-integrated with ``substeps`` per time step::

    v' = 0.04 v^2 + 5 v + 140 - u + gain * x
    u' = a (b v - u)
    if v >= 30 mV:  v <- c,  u <- u + d        (immediate reset)

Defaults are the regular-spiking cortical cell (a=0.02, b=0.2, c=-65, d=8), 1 ms per
step. The surrogate sees ``(v - 30) / 30`` so its width is in units of the peak.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import Neuron, check_positive
from .surrogate import Surrogate

V_PEAK = 30.0


class IzhikevichState(NamedTuple):
    v: torch.Tensor
    u: torch.Tensor


class Izhikevich(Neuron):
    State = IzhikevichState
    # buffers, set by _scalar
    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    d: torch.Tensor
    dt: torch.Tensor
    gain: torch.Tensor

    def __init__(
        self,
        a: float = 0.02,
        b: float = 0.2,
        c: float = -65.0,
        d: float = 8.0,
        dt: float = 1.0,
        substeps: int = 2,
        gain: float = 20.0,
        surrogate: Surrogate | None = None,
    ):
        super().__init__(surrogate)
        check_positive("dt", dt)
        if int(substeps) < 1:
            raise ValueError(f"substeps={substeps!r} is invalid: must be an integer >= 1")
        self.substeps = int(substeps)
        for name, value in dict(a=a, b=b, c=c, d=d, dt=dt, gain=gain).items():
            self._scalar(name, value, False)

    def init_state(self, shape, device=None, dtype=torch.float32) -> IzhikevichState:
        v = torch.full(tuple(shape), float(self.c), device=device, dtype=dtype)
        return IzhikevichState(v, v * float(self.b))

    def step(self, x: torch.Tensor, state: IzhikevichState):
        v, u = state
        h = self.dt / self.substeps
        drive = self.gain * x
        for _ in range(self.substeps):
            v = v + h * (0.04 * v * v + 5.0 * v + 140.0 - u + drive)
        s = self.spike((v - V_PEAK) / V_PEAK)
        # Cap the Euler overshoot at the peak before it drives u, so the recovery jump
        # per spike does not depend on how far past 30 mV one step happened to land.
        v = torch.clamp(v, max=V_PEAK)
        u = u + self.dt * self.a * (self.b * v - u)
        v = s * self.c + (1 - s) * v
        u = u + self.d * s
        return s, IzhikevichState(v, u)

"""The neuron contract: explicit state, pure steps.

A neuron is an ``nn.Module`` holding only *parameters* (buffers, or ``nn.Parameter``
when learnable). Its membrane lives in a state tuple the caller owns::

    state = neuron.init_state(shape, device=x.device)
    spikes, state = neuron.step(x_t, state)          # one time step
    spikes_seq, state = neuron.multi_step(x_seq, state)  # [T, ...] at once

Nothing outlives a call, so training, tracing and deploy all share the same math.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .surrogate import Surrogate


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} is invalid: must be a finite number > 0")
    return value


def check_unit(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name}={value!r} is invalid: must lie in [0, 1]")
    return value


class Neuron(nn.Module):
    """Base class. Subclasses define ``State`` (a NamedTuple), ``init_state`` and ``step``."""

    #: the state's NamedTuple class: ``State(*tensors)`` rebuilds a state from its fields
    State: type[tuple[Any, ...]]
    #: True for neurons whose output is binary spikes (False for the LI readout layer).
    spiking: bool = True

    def __init__(self, surrogate: Surrogate | None = None):
        super().__init__()
        self.spike = surrogate if surrogate is not None else Surrogate()

    def _scalar(self, name: str, value: float, learnable: bool) -> None:
        t = torch.tensor(float(value), dtype=torch.float32)
        if learnable:
            setattr(self, name, nn.Parameter(t))
        else:
            self.register_buffer(name, t)

    def init_state(self, shape, device=None, dtype=torch.float32) -> Any:
        raise NotImplementedError

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def multi_step(self, x_seq: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Run ``step`` over the leading time axis. Fused engines override this with
        kernels that must give the same spikes and (within float tolerance) gradients."""
        if state is None:
            state = self.init_state(x_seq.shape[1:], device=x_seq.device, dtype=x_seq.dtype)
        out = []
        for x in x_seq.unbind(0):
            s, state = self.step(x, state)
            out.append(s)
        return torch.stack(out), state

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        if state is None:
            state = self.init_state(x.shape, device=x.device, dtype=x.dtype)
        return self.step(x, state)

    def membrane(self, state: Any) -> torch.Tensor:
        """The membrane potential held in ``state`` (for traces and readouts). A layer
        state that holds the neuron's state first (the recurrent layer's ``(neuron
        state, last spikes)``) gives that state's membrane."""
        m = state[0]
        while isinstance(m, tuple):
            m = m[0]
        return m

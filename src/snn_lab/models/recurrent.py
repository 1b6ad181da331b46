"""Recurrent spiking layers and the recurrent SNN (``model=rsnn``).

A :class:`RecurrentSpikingLayer` feeds its own last spikes back::

    I_t = W_in x_t + W_rec s_{t-1}
    s_t, n_t = neuron.step(I_t, n_{t-1})

Its state is ``(neuron state, last spikes)`` (:class:`RecurrentState`). The fused
engine does not cover the recurrence (each step needs the previous step's spikes), so
:meth:`RecurrentSpikingLayer.multi_step` loops :meth:`~RecurrentSpikingLayer.step` over
time: ``mode=layer`` and ``mode=step`` give the same outputs and gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

import torch
from torch import nn

from ..encoders import Encoder
from ..neurons import LI, Neuron
from .base import SNNModel, SpikingLayer

__all__ = ["RecurrentSNN", "RecurrentSpikingLayer", "RecurrentState"]

log = logging.getLogger("snn_lab.models")


class RecurrentState(NamedTuple):
    neuron: Any  # the neuron's own state NamedTuple
    spikes: torch.Tensor  # s_{t-1}, the input of the recurrent synapse


class RecurrentSpikingLayer(SpikingLayer):
    """``synapse`` (input weights, no state) plus ``recurrent`` (``Linear(size, size)``,
    no bias) on the layer's last spikes, into ``neuron``."""

    #: deploy lowerings check this: the single-step graphs have no recurrent path
    recurrent = True

    def __init__(self, synapse: nn.Module, neuron: Neuron, size: int):
        super().__init__(synapse, neuron)
        self.recurrent_synapse = nn.Linear(int(size), int(size), bias=False)

    def init_state(self, shape, device=None, dtype=torch.float32) -> RecurrentState:
        return RecurrentState(
            self.neuron.init_state(shape, device=device, dtype=dtype),
            torch.zeros(tuple(shape), device=device, dtype=dtype),
        )

    def step(self, x: torch.Tensor, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState]:
        cur = self.synapse(x) + self.recurrent_synapse(state.spikes)
        s, n = self.neuron.step(cur, state.neuron)
        return s, RecurrentState(n, s)

    def multi_step(
        self, x_seq: torch.Tensor, state: RecurrentState | None, binary: bool | None = None, want_state: bool = True
    ) -> tuple[torch.Tensor, RecurrentState]:
        """The step loop over ``[T, B, ...]`` (``binary`` and ``want_state`` are unused: no
        fused path)."""
        if state is None:
            state = self.init_state(self.synapse(x_seq[0]).shape, device=x_seq.device, dtype=x_seq.dtype)
        out = []
        for x in x_seq.unbind(0):
            s, state = self.step(x, state)
            out.append(s)
        return torch.stack(out), state

    def membrane(self, state: RecurrentState) -> torch.Tensor:
        return self.neuron.membrane(state.neuron)


class RecurrentSNN(SNNModel):
    """``[Flatten] Linear`` + recurrent ``Linear`` into the neuron per hidden layer, then
    a ``Linear`` into the output neuron (spiking for ``readout="rate"``, a non-spiking
    ``LI`` for ``readout="membrane"``; not recurrent)."""

    def __init__(
        self,
        make_neuron: Callable[[], Neuron],
        input_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        time_steps: int = 20,
        encoder: Encoder | None = None,
        readout: str = "rate",
        bias: bool = True,
        out_decay: float = 0.8,
        mode: str = "layer",
    ):
        hidden = [int(h) for h in hidden]
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden={hidden!r} is invalid: one or more recurrent layer sizes >= 1")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes={num_classes!r} is invalid: must be >= 2")
        in_features = 1
        for d in input_shape:
            in_features *= int(d)
        layers: list[SpikingLayer] = []
        for i, (n_in, n_out) in enumerate(pairwise([in_features, *hidden])):
            ops: list[nn.Module] = [nn.Flatten()] if i == 0 else []
            ops.append(nn.Linear(n_in, n_out, bias=bias))
            layers.append(RecurrentSpikingLayer(nn.Sequential(*ops), make_neuron(), n_out))
        out_neuron = LI(decay=out_decay) if readout == "membrane" else make_neuron()
        layers.append(SpikingLayer(nn.Sequential(nn.Linear(hidden[-1], int(num_classes), bias=bias)), out_neuron))
        super().__init__(layers, tuple(input_shape), time_steps, encoder, readout, mode)
        self._told_step_loop = False

    def forward_spikes(self, spike_train: torch.Tensor, return_record: bool = False, mode: str | None = None):
        """As :meth:`SNNModel.forward_spikes`; the first run in ``mode="layer"`` logs once
        that the recurrent layers run in the step loop (not at construction: a training
        run also builds a trial network to validate the config)."""
        if (self.mode if mode is None else mode) == "layer" and not self._told_step_loop:
            self._told_step_loop = True
            log.info("model rsnn: the recurrent layers run in the step loop (the fused engine covers no recurrence)")
        return super().forward_spikes(spike_train, return_record, mode)

"""A network of one's own: input -> hidden spiking layer -> readout layer.

It follows the constructor contract snn_lab's model builder calls:
``cls(make_neuron, input_shape=, time_steps=, encoder=, readout=, out_decay=, **its keys)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from snn_lab.encoders import Encoder
from snn_lab.models import SNNModel, SpikingLayer
from snn_lab.neurons import LI, Neuron


class BarsNet(SNNModel):
    def __init__(
        self,
        make_neuron: Callable[[], Neuron],
        input_shape: Sequence[int] = (1, 8, 8),
        time_steps: int = 8,
        encoder: Encoder | None = None,
        readout: str = "membrane",
        out_decay: float = 0.8,
        hidden: int = 32,
        num_classes: int = 4,
        mode: str = "step",
    ):
        n_in = 1
        for d in input_shape:
            n_in *= int(d)
        layers = [
            SpikingLayer(nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden)), make_neuron()),
            SpikingLayer(nn.Linear(hidden, num_classes), LI(out_decay) if readout == "membrane" else make_neuron()),
        ]
        super().__init__(layers, tuple(input_shape), time_steps, encoder, readout, mode)

"""Fully connected SNN: the tutorial's 784-512-512-10 by default."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

from torch import nn

from ..encoders import Encoder
from ..neurons import LI, LIF, Neuron, Surrogate
from .base import SNNModel, SpikingLayer


class SpikingMLP(SNNModel):
    """``[Flatten] Linear -> (BN) -> neuron -> (Dropout)`` per hidden layer, then a
    ``Linear`` into the output neuron (spiking for ``readout="rate"``, a non-spiking
    ``LI`` for ``readout="membrane"``). With defaults this is the tutorial network."""

    def __init__(
        self,
        make_neuron: Callable[[], Neuron],
        input_shape: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (512, 512),
        num_classes: int = 10,
        time_steps: int = 20,
        encoder: Encoder | None = None,
        readout: str = "rate",
        batch_norm: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        out_decay: float = 0.8,
        mode: str = "layer",
    ):
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden) or int(num_classes) < 2:
            raise ValueError(f"hidden={hidden} and num_classes={num_classes}: sizes must be >= 1 (classes >= 2)")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout!r} is invalid: must lie in [0, 1)")
        in_features = 1
        for d in input_shape:
            in_features *= int(d)
        layers = []
        sizes = [in_features, *hidden]
        for i, (n_in, n_out) in enumerate(pairwise(sizes)):
            ops: list[nn.Module] = [nn.Flatten()] if i == 0 else []
            if i > 0 and dropout > 0:
                ops.append(nn.Dropout(dropout))
            ops.append(nn.Linear(n_in, n_out, bias=bias and not batch_norm))
            if batch_norm:
                ops.append(nn.BatchNorm1d(n_out))
            layers.append(SpikingLayer(_seq(ops), make_neuron()))
        head: list[nn.Module] = [nn.Flatten()] if not hidden else []
        if hidden and dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(sizes[-1], int(num_classes), bias=bias))
        out_neuron = LI(decay=out_decay) if readout == "membrane" else make_neuron()
        layers.append(SpikingLayer(_seq(head), out_neuron))
        super().__init__(layers, tuple(input_shape), time_steps, encoder, readout, mode)


def _seq(ops: list[nn.Module]) -> nn.Module:
    # A lone Linear keeps the state_dict keys short ("layers.0.synapse.1.weight").
    return nn.Sequential(*ops)


def tutorial_network(
    vth: float = 0.4, decay: float = 0.8, time_steps: int = 20, encoder: Encoder | None = None, mode: str = "step"
) -> SpikingMLP:
    """The tutorial's 784-512-512-10 LIF network with the rectangle surrogate (lens 0.5)."""
    return SpikingMLP(
        lambda: LIF(vth=vth, decay=decay, surrogate=Surrogate("rectangle", 0.5)),
        time_steps=time_steps,
        encoder=encoder,
        mode=mode,
    )


# The tutorial's ``Spiking_Network_1step`` parameter names -> ours.
TUTORIAL_KEYS = {
    "linear_1.weight": "layers.0.synapse.1.weight",
    "linear_1.bias": "layers.0.synapse.1.bias",
    "linear_2.weight": "layers.1.synapse.0.weight",
    "linear_2.bias": "layers.1.synapse.0.bias",
    "linear_3.weight": "layers.2.synapse.0.weight",
    "linear_3.bias": "layers.2.synapse.0.bias",
}


def load_tutorial_state_dict(model: SpikingMLP, tutorial_state: dict) -> None:
    """Load weights saved by the tutorial's code (``linear_1.weight`` ...; its ``vth`` and
    ``decay`` entries set every LIF layer's parameters)."""
    missing = [k for k in TUTORIAL_KEYS if k not in tutorial_state]
    if missing:
        raise ValueError(f"not a tutorial state dict: missing {missing}; expected keys {list(TUTORIAL_KEYS)}")
    ours = {TUTORIAL_KEYS[k]: v for k, v in tutorial_state.items() if k in TUTORIAL_KEYS}
    model.load_state_dict(ours, strict=False)
    for layer in model.layers:
        for name in ("vth", "decay"):
            if name in tutorial_state and hasattr(layer.neuron, name):
                getattr(layer.neuron, name).data.copy_(tutorial_state[name].reshape(()))

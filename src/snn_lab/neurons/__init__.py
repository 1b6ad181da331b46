"""Spiking neurons with explicit state, and the name registry the configs use."""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .adaptive import ALIF, ALIFState
from .base import Neuron
from .cuba import CubaLIF, CubaLIFState
from .izhikevich import Izhikevich, IzhikevichState
from .lif import IF, LI, LIF, PLIF, LIFState, LIState
from .surrogate import SURROGATES, Surrogate, get_surrogate, heaviside

#: built-in neurons by config name; ``NEURONS.register("mine", MyNeuron)`` adds one
NEURONS: Registry[type[Neuron]] = Registry(
    "neuron", {"if": IF, "lif": LIF, "plif": PLIF, "alif": ALIF, "izhikevich": Izhikevich, "cuba": CubaLIF}
)


def build_neuron(name: str, surrogate: Surrogate | None = None, **params: Any) -> Neuron:
    """Build a neuron by registry name; unknown names list the accepted ones."""
    return NEURONS.get(name)(surrogate=surrogate, **params)


__all__ = [
    "ALIF",
    "IF",
    "LI",
    "LIF",
    "NEURONS",
    "PLIF",
    "SURROGATES",
    "ALIFState",
    "CubaLIF",
    "CubaLIFState",
    "Izhikevich",
    "IzhikevichState",
    "LIFState",
    "LIState",
    "Neuron",
    "Surrogate",
    "build_neuron",
    "get_surrogate",
    "heaviside",
]

"""Spiking neurons with explicit state, and the name registry the configs use."""

from __future__ import annotations

from .adaptive import ALIF, ALIFState
from .base import Neuron
from .izhikevich import Izhikevich, IzhikevichState
from .lif import IF, LI, LIF, PLIF, LIFState, LIState
from .surrogate import SURROGATES, Surrogate, get_surrogate, heaviside

NEURONS: dict[str, type[Neuron]] = {
    "if": IF,
    "lif": LIF,
    "plif": PLIF,
    "alif": ALIF,
    "izhikevich": Izhikevich,
}


def build_neuron(name: str, surrogate: Surrogate | None = None, **params) -> Neuron:
    """Build a neuron by registry name; unknown names list the accepted ones."""
    try:
        cls = NEURONS[name]
    except KeyError:
        raise ValueError(f"neuron={name!r} is unknown; accepted: {', '.join(NEURONS)}") from None
    return cls(surrogate=surrogate, **params)


__all__ = [
    "NEURONS", "SURROGATES", "ALIF", "ALIFState", "IF", "LI", "LIF", "PLIF", "Izhikevich",
    "IzhikevichState", "LIFState", "LIState", "Neuron", "Surrogate", "build_neuron",
    "get_surrogate", "heaviside",
]

"""Readouts: the output layer's activity over T -> class scores ``[B, classes]``.

``rate``      mean of the output spikes over T (the tutorial's prediction)
``membrane``  mean membrane of a non-spiking leaky-integrator output layer (``LI``)
"""

from __future__ import annotations

import torch

READOUTS = ("rate", "membrane")


def check_readout(name: str) -> str:
    if name not in READOUTS:
        raise ValueError(f"readout={name!r} is unknown; accepted: {', '.join(READOUTS)}")
    return name


def reduce_outputs(outputs: torch.Tensor) -> torch.Tensor:
    """Mean over the time axis. For spikes the sum of 0/1 values is exact, so this
    equals the tutorial's running ``sum / T`` bit for bit."""
    return outputs.sum(0) / outputs.shape[0]

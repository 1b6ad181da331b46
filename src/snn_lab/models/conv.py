"""Convolutional SNN: ``conv -> BN -> neuron -> pool`` blocks, then an FC head."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..encoders import Encoder
from ..neurons import LI, Neuron
from .base import SNNModel, SpikingLayer

POOLS = ("current", "spikes")
#: the 2x2 pooling operation: max (the default), or average, which NIR can express
POOL_KINDS = ("max", "avg")


class SpikingConvNet(SNNModel):
    """Each block is ``Conv3x3 -> BN -> neuron`` with a 2x2 max-pool either on the
    synaptic current before the neuron (``pool="current"``: 4x fewer neurons to
    integrate, the cheaper choice) or on the spikes after it (``pool="spikes"``:
    max-pooling binary spikes yields spikes). The head is ``Flatten -> Dropout ->
    Linear(fc) -> neuron -> Dropout -> Linear(classes) -> output neuron``.
    ``pool_kind="avg"`` averages instead of taking the maximum: NIR has no max-pool
    node, so only such a network exports to NIR (as ``SumPool2d``, docs/INTEROP.md)."""

    def __init__(
        self,
        make_neuron: Callable[[], Neuron],
        input_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (32, 64),
        fc: int = 256,
        num_classes: int = 10,
        time_steps: int = 8,
        encoder: Encoder | None = None,
        readout: str = "rate",
        dropout: float = 0.2,
        out_decay: float = 0.8,
        mode: str = "layer",
        pool: str = "current",
        pool_kind: str = "max",
    ):
        if len(input_shape) != 3:
            raise ValueError(f"input_shape={tuple(input_shape)} is invalid for a conv model: expected (C, H, W)")
        if not channels or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels={list(channels)} is invalid: need at least one block, sizes >= 1")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout!r} is invalid: must lie in [0, 1)")
        if pool not in POOLS:
            raise ValueError(f"pool={pool!r} is unknown; accepted: {', '.join(POOLS)}")
        if pool_kind not in POOL_KINDS:
            raise ValueError(f"pool_kind={pool_kind!r} is unknown; accepted: {', '.join(POOL_KINDS)}")
        self.pool = pool
        self.pool_kind = pool_kind
        make_pool = nn.MaxPool2d if pool_kind == "max" else nn.AvgPool2d
        c_in, h, w = (int(d) for d in input_shape)
        if min(h, w) >> len(channels) < 1:
            raise ValueError(
                f"input_shape={tuple(input_shape)} is too small for {len(channels)} pooled blocks: each halves H and W"
            )
        layers = []
        for i, c_out in enumerate(int(c) for c in channels):
            ops: list[nn.Module] = [make_pool(2)] if i > 0 and pool == "spikes" else []
            ops += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            if pool == "current":
                ops.append(make_pool(2))
            layers.append(SpikingLayer(nn.Sequential(*ops), make_neuron()))
            c_in, h, w = c_out, h // 2, w // 2
        head: list[nn.Module] = [make_pool(2)] if pool == "spikes" else []
        head.append(nn.Flatten())
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(c_in * h * w, int(fc)))
        layers.append(SpikingLayer(nn.Sequential(*head), make_neuron()))
        out: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        out.append(nn.Linear(int(fc), int(num_classes)))
        out_neuron = LI(decay=out_decay) if readout == "membrane" else make_neuron()
        layers.append(SpikingLayer(nn.Sequential(*out), out_neuron))
        super().__init__(layers, tuple(int(d) for d in input_shape), time_steps, encoder, readout, mode)

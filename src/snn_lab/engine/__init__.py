"""The fast multi-step engine: whole sequences per layer instead of one step at a time.

``SNNModel(mode="layer")`` runs each layer over all ``T`` steps before the next layer:

1. the synapse once over ``T*B`` rows -- for a ``Linear`` on spikes, :func:`spike_linear`
   (dense BLAS, or gather-accumulate over the spikes, chosen per layer and batch by
   the spike density; :mod:`.linear`);
2. the neuron's ``multi_step`` -- for the LIF family, the fused scan :func:`lif_scan`
   (custom autograd that keeps one float per neuron-step; :mod:`.scan`).

On CPU both use small C kernels compiled on first use (:mod:`.native`) when a C compiler
is present, else pure PyTorch; on GPU the PyTorch path runs as is. Every path gives the
spikes of the per-step path (bit-identical for the dense matmul) and its gradients
within float tolerance.

Options (process-wide; ``configure(...)`` or the ``using(...)`` context manager):

``enabled``             False sends everything to the plain per-layer loops (ablation)
``matmul``              auto | dense | sparse | bf16x3 (see :mod:`.linear`)
``sparse_max_density``  ``auto`` uses the sparse kernels up to this input density
``native``              False ignores the compiled kernels (same as ``SNN_LAB_NATIVE=0``)
"""

from __future__ import annotations

import torch
from torch import nn

from . import native
from .linear import is_binary, spike_linear
from .options import STRATEGIES, EngineOptions, configure, options, using
from .scan import lif_scan, lif_scan_reference

__all__ = ["EngineOptions", "configure", "options", "using", "lif_scan", "lif_scan_reference",
           "spike_linear", "is_binary", "lif_multi_step", "layer_multi_step", "describe",
           "STRATEGIES", "native"]


def describe() -> dict:
    """The engine's configuration and backend, for logs and ``bench.json``."""
    import dataclasses

    opts = options()
    return {**dataclasses.asdict(opts), "native_status": native.status() if opts.native else None}


# -- neuron hook ---------------------------------------------------------------------
def lif_multi_step(neuron, x_seq: torch.Tensor, state=None):
    """The fused scan for an LIF-family neuron, or ``None`` when it does not apply
    (engine disabled, tracing, non-scalar parameters, non-float input)."""
    from ..neurons.surrogate import Surrogate

    if not options().enabled or torch.jit.is_tracing() or torch.jit.is_scripting():
        return None
    if not torch.is_floating_point(x_seq) or x_seq.dim() < 2 or not isinstance(neuron.spike, Surrogate):
        return None
    vth, decay = neuron.vth, neuron.leak()
    if vth.numel() != 1 or decay.numel() != 1:
        return None
    v0 = None if state is None else state.v
    if v0 is not None and v0.shape != x_seq.shape[1:]:
        return None
    spikes, v = lif_scan(x_seq, v0, vth, decay, neuron.spike, neuron.reset, neuron.detach_reset)
    return spikes, type(neuron).State(v)


# -- layer hook ----------------------------------------------------------------------
def _linear_of(synapse: nn.Module) -> nn.Linear | None:
    """The ``Linear`` when ``synapse`` is one (optionally after ``Flatten`` and
    inactive dropout), else None."""
    if isinstance(synapse, nn.Linear):
        return synapse
    if not isinstance(synapse, nn.Sequential):
        return None
    linear = None
    for m in synapse:
        if isinstance(m, nn.Flatten) and linear is None:
            continue
        if isinstance(m, nn.Dropout) and (not m.training or m.p == 0) and linear is None:
            continue
        if isinstance(m, nn.Linear) and linear is None:
            linear = m
            continue
        return None
    return linear


def _per_sample(synapse: nn.Module) -> bool:
    """No module that draws per call (active dropout): then equal inputs give equal
    outputs, so a time-invariant input may go through the synapse once."""
    return not any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
                   for m in synapse.modules())


def layer_multi_step(layer, x_seq: torch.Tensor, state, binary: bool | None = None):
    """``layer.multi_step`` with the spike-aware ``Linear`` when the synapse is a plain
    ``Linear`` (``binary``: what the caller knows about ``x_seq``).

    An input that is the same at every step (stride 0 over time, as the direct encoder
    gives) goes through the synapse once, on ``B`` rows like each step of the per-step
    path, and the current is broadcast over time."""
    if (options().enabled and x_seq.dim() >= 2 and x_seq.shape[0] > 1 and x_seq.stride(0) == 0
            and _per_sample(layer.synapse)):
        cur = layer.synapse(x_seq[0])
        return layer.neuron.multi_step(cur.unsqueeze(0).expand(x_seq.shape[0], *cur.shape), state)
    linear = _linear_of(layer.synapse) if options().enabled else None
    if linear is None or binary is False or torch.jit.is_tracing():
        return layer.multi_step(x_seq, state)
    T, B = x_seq.shape[:2]
    x2 = x_seq.reshape(T * B, -1)
    if x2.shape[1] != linear.in_features:
        return layer.multi_step(x_seq, state)
    opts = options()
    cur = spike_linear(x2, linear.weight, linear.bias, opts.matmul, binary, opts.sparse_max_density,
                       time_steps=T)
    return layer.neuron.multi_step(cur.reshape(T, B, -1), state)

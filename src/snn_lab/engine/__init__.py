"""The fast multi-step engine: whole sequences per layer instead of one step at a time.

``SNNModel(mode="layer")`` runs each layer over all ``T`` steps before the next layer:

1. the synapse once over ``T*B`` rows -- for a ``Linear`` on spikes, :func:`spike_linear`
   (dense BLAS, or gather-accumulate over the spikes, chosen per layer and batch by
   the spike density; :mod:`.linear`); for a ``Conv2d``, :func:`spike_conv2d`
   (channels-last, gather-accumulate over the spikes; :mod:`.conv`);
2. the neuron's ``multi_step`` -- for the LIF family, the fused scan :func:`lif_scan`
   (custom autograd that keeps one float per neuron-step; :mod:`.scan`).

An input that is the same at every step (direct encoding) goes through the synapse once;
:func:`over_time` repeats its current over ``T`` as a view.

Bernoulli input draws its uniforms with :func:`rand` and dropout its masks with
:func:`dropout`: torch's own numbers from the same generator, continued by a native
kernel (:mod:`.random`).

On CPU both use small C kernels compiled on first use (:mod:`.native`) when a C compiler
is present, else pure PyTorch; on GPU the scan runs ``torch.compile``d (one fused kernel
for the whole time loop) and the synapses as cuBLAS/cuDNN calls. Every path gives the
spikes of the per-step path (bit-identical for the dense matmul) and its gradients
within float tolerance.

Options (process-wide; ``configure(...)`` or the ``using(...)`` context manager):

``enabled``             False sends everything to the plain per-layer loops (ablation)
``matmul``              auto | dense | sparse | bf16x3 (see :mod:`.linear`)
``sparse_max_density``  ``auto`` uses the sparse kernels up to this input density
``native``              False ignores the compiled kernels (same as ``SNN_LAB_NATIVE=0``)
``conv``                auto | dense | channels_last | sparse (see :mod:`.conv`)
``conv_max_density``    ``conv=auto`` gathers over the spikes up to this input density
``bernoulli``           torch | kernel: where a first Linear layer's Bernoulli draws come
                        from (see :func:`bernoulli_linear`)
``scan``                auto | compile | eager: the LIF scan by the native kernels on CPU
                        and ``torch.compile`` on CUDA (auto), ``torch.compile`` everywhere,
                        or the plain PyTorch loop
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The options are plain dataclasses: the config schema imports them, and a command line's
# overrides are type-checked against that schema before torch loads (a wrong override
# fails in about a second). Everything else loads on first use (PEP 562).
from .options import CONV_STRATEGIES, STRATEGIES, EngineOptions, configure, options, using

if TYPE_CHECKING:
    from . import native
    from .conv import batch_norm_max_pool2d, conv_bn_max_pool2d, spike_conv2d
    from .linear import LIFSpec, bernoulli_linear, is_binary, spike_linear, spike_linear_lif
    from .random import dropout, rand
    from .scan import lif_scan, lif_scan_reference
    from .steps import over_time
    from .surrogate import SURROGATE_GRADS, SURROGATE_WIDTHS, heaviside, spike, surrogate_grad

_LAZY = {
    "native": None,  # the submodule itself
    **dict.fromkeys(("batch_norm_max_pool2d", "conv_bn_max_pool2d", "spike_conv2d"), "conv"),
    **dict.fromkeys(("LIFSpec", "bernoulli_linear", "is_binary", "spike_linear", "spike_linear_lif"), "linear"),
    **dict.fromkeys(("lif_scan", "lif_scan_reference"), "scan"),
    "over_time": "steps",
    **dict.fromkeys(("dropout", "rand"), "random"),
    **dict.fromkeys(("SURROGATE_GRADS", "SURROGATE_WIDTHS", "heaviside", "spike", "surrogate_grad"), "surrogate"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name] or name}")
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


__all__ = [
    "CONV_STRATEGIES",
    "STRATEGIES",
    "SURROGATE_GRADS",
    "SURROGATE_WIDTHS",
    "EngineOptions",
    "LIFSpec",
    "batch_norm_max_pool2d",
    "bernoulli_linear",
    "configure",
    "conv_bn_max_pool2d",
    "describe",
    "dropout",
    "heaviside",
    "is_binary",
    "lif_scan",
    "lif_scan_reference",
    "native",
    "options",
    "over_time",
    "rand",
    "spike",
    "spike_conv2d",
    "spike_linear",
    "spike_linear_lif",
    "surrogate_grad",
    "using",
]


def describe() -> dict:
    """The engine's configuration and backend, for logs and ``bench.json``."""
    import dataclasses

    opts = options()
    status = native.status() if opts.native else {"kernels": "pytorch", "error": "engine option native=False"}
    return {**dataclasses.asdict(opts), "native_status": status}

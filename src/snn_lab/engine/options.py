"""Process-wide engine options (see :mod:`snn_lab.engine`)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

STRATEGIES = ("auto", "dense", "sparse", "bf16x3")
CONV_STRATEGIES = ("auto", "dense", "channels_last", "sparse")
BERNOULLI_RNGS = ("torch", "kernel")
SCANS = ("auto", "compile", "eager")


@dataclasses.dataclass
class EngineOptions:
    enabled: bool = True
    matmul: str = "auto"
    # ``auto`` uses the sparse kernels up to this fraction of ones in a layer's input
    # (on the 2-core AVX2 CPU of docs/BENCHMARKS.md they beat BLAS well past 0.3).
    sparse_max_density: float = 0.5
    native: bool = True
    conv: str = "auto"
    # ``conv=auto`` gathers over the spikes up to this input density (the dense input
    # gradient is needed either way, so the crossover is lower than for Linear layers)
    conv_max_density: float = 0.3
    # Bernoulli-encoded input into a first Linear layer: "torch" draws like the encoder
    # (the per-step path's spikes), "kernel" hashes a key in the native kernel (other draws)
    bernoulli: str = "torch"
    # the LIF scan: auto (native kernels on CPU, torch.compile on CUDA), compile, eager
    scan: str = "auto"

    def __post_init__(self):
        if self.matmul not in STRATEGIES:
            raise ValueError(f"engine.matmul={self.matmul!r} is unknown; accepted: {', '.join(STRATEGIES)}")
        if self.scan not in SCANS:
            raise ValueError(f"engine.scan={self.scan!r} is unknown; accepted: {', '.join(SCANS)}")
        if self.bernoulli not in BERNOULLI_RNGS:
            raise ValueError(f"engine.bernoulli={self.bernoulli!r} is unknown; accepted: {', '.join(BERNOULLI_RNGS)}")
        if self.conv not in CONV_STRATEGIES:
            raise ValueError(f"engine.conv={self.conv!r} is unknown; accepted: {', '.join(CONV_STRATEGIES)}")
        for name in ("sparse_max_density", "conv_max_density"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"engine.{name}={getattr(self, name)!r} must lie in [0, 1]")


_options = EngineOptions()


def options() -> EngineOptions:
    return _options


def native_enabled() -> bool:
    """True when the compiled CPU kernels may be used (option on and kernels loaded)."""
    from . import native  # torch: loaded on first use, not with the options

    return _options.native and native.available()


def native_runs(*tensors: Any) -> bool:
    """True when the native kernels can take ``tensors``: all float32 on the CPU, outside
    ``torch.compile``'s tracing (the kernels are opaque to it), the option on and the
    kernels loaded."""
    import torch  # (the options themselves import no torch)

    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not torch.compiler.is_compiling()
        and native_enabled()
    )


def configure(**kw: Any) -> EngineOptions:
    """Set engine options for the process (unknown names raise)."""
    global _options
    fields = {f.name for f in dataclasses.fields(EngineOptions)}
    unknown = set(kw) - fields
    if unknown:
        raise ValueError(f"unknown engine option(s) {sorted(unknown)}; accepted: {sorted(fields)}")
    _options = dataclasses.replace(_options, **kw)
    return _options


@contextlib.contextmanager
def using(**kw: Any) -> Iterator[EngineOptions]:
    """Temporarily change engine options: ``with engine.using(matmul="dense"): ...``."""
    global _options
    old = _options
    try:
        yield configure(**kw)
    finally:
        _options = old

"""The engine's uniform draws: :func:`rand` gives ``torch.rand``'s numbers (and leaves the
generator where ``torch.rand`` leaves it), drawn by the native kernel when it can.

PyTorch draws CPU uniforms one at a time under the generator's lock (about 8 ns each on
the machines of docs/BENCHMARKS.md): for the seed network's Bernoulli input (T=20, batch
200, 784 pixels: 3.1 M numbers a step) that was a fifth of an engine training step. The
kernel continues the same MT19937 stream in vector loops, so the spikes stay those of
the per-step path, which draws with ``torch.rand`` one step at a time.
"""

from __future__ import annotations

import torch

from .options import native_enabled


def rand(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """``torch.rand(shape, generator=generator)`` as float32 on the CPU: the same numbers
    and the same generator state afterwards, drawn natively when the kernels are enabled."""
    if native_enabled():
        from . import native

        return native.torch_rand(shape, generator)
    return torch.rand(shape, generator=generator)

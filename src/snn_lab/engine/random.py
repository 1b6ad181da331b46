"""The engine's random draws, torch's own numbers made natively: :func:`rand` gives
``torch.rand``'s numbers (and leaves the generator where ``torch.rand`` leaves it);
:func:`dropout` gives ``F.dropout``'s masks (``bernoulli_(1 - p)``'s draws).

PyTorch draws CPU uniforms one at a time under the generator's lock (about 8 ns each on
the machines of docs/BENCHMARKS.md): for the seed network's Bernoulli input (T=20, batch
200, 784 pixels: 3.1 M numbers a step) that was a fifth of an engine training step. The
kernel continues the same MT19937 stream in vector loops, so the spikes stay those of
the per-step path, which draws with ``torch.rand`` one step at a time.

The kernel reads the generator's state, draws, and writes the state back: unlike torch's
own draw this is not one atomic step, so another thread drawing from the same generator
at that moment would repeat numbers (training draws from one thread; data loader workers
are processes with generators of their own).
"""

from __future__ import annotations

import torch

from .options import native_enabled, native_runs


def rand(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """``torch.rand(shape, generator=generator)`` as float32 on the CPU: the same numbers
    and the same generator state afterwards, drawn natively when the kernels are enabled."""
    if native_enabled() and not torch.compiler.is_compiling():  # the kernel rewrites the generator's state
        from . import native

        return native.torch_rand(shape, generator)
    return torch.rand(shape, generator=generator)


_draws_like_torch: bool | None = None  # does this torch build's bernoulli_(p) draw as the kernel does?


def _bernoulli_draws_like_torch() -> bool:
    """PyTorch's default CPU ``bernoulli_(p)`` draws one 53-bit double per element from the
    generator; a build may draw with MKL instead. Checked once per process on a private
    generator: the kernel's mask and the generator state after it against torch's."""
    global _draws_like_torch
    if _draws_like_torch is None:
        from . import native

        g_torch, g_kernel = torch.Generator().manual_seed(20231026), torch.Generator().manual_seed(20231026)
        want = torch.empty(4099).bernoulli_(0.37, generator=g_torch)
        got = native.torch_bernoulli((4099,), 0.37, g_kernel)
        _draws_like_torch = (
            got is not None and torch.equal(got, want) and torch.equal(g_kernel.get_state(), g_torch.get_state())
        )
    return _draws_like_torch


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``: on a contiguous float32 CPU tensor in training, the
    same mask (torch's own ``bernoulli_(1 - p)`` draws from the default generator), the
    same values and gradient, with the draws made natively (PyTorch makes them one at a
    time under the generator's lock: ~10 ms a step for the conv network's dropout)."""
    if training and 0.0 < p < 1.0 and x.is_contiguous() and native_runs(x) and _bernoulli_draws_like_torch():
        from . import native

        keep = 1.0 - p
        noise = native.torch_bernoulli(tuple(x.shape), keep)
        if noise is not None:  # as F.dropout on CPU: noise = bernoulli_(1 - p) / (1 - p); x * noise
            noise.div_(keep)
            return x * noise
    return torch.nn.functional.dropout(x, p, training)

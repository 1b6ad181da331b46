"""Spike encoders: images in [0, 1] -> one spike tensor per time step.

Every encoder offers ``step(images, t, time_steps, generator)`` (what the model calls
inside its time loop, on the model's device) and ``forward(images, time_steps,
generator)`` returning the whole ``[T, B, ...]`` train. Randomness comes only from
the ``torch.Generator`` passed in (``None`` falls back to torch's global RNG).

==============  =============================================================
``bernoulli``   the seed: a fresh Bernoulli(p = pixel) draw every step
``latency``     time-to-first-spike: one spike at ``round((1 - x) (T - 1))``,
                brighter is earlier; pixels ``<= threshold`` never fire
``phase``       Kim et al. 2018: the pixel quantised to ``bits`` bits, bit
                ``t mod bits`` (most significant first) emitted at step ``t``
``population``  ``size`` Gaussian receptive fields per pixel over [0, 1], each
                Bernoulli-sampled; multiplies the channel/feature count
``direct``      the analog image itself at every step (first layer encodes)
``passthrough`` frames the data already made (event data, ``[B, T, ...]``)
                become the train ``[T, B, ...]``; ``binary`` clips counts to 0/1
==============  =============================================================
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import engine
from .errors import ConfigError
from .registry import Registry


def _check_images(images: torch.Tensor) -> None:
    if not torch.is_floating_point(images):
        raise ValueError(f"encoder input must be a float tensor in [0, 1], got dtype {images.dtype}")


def _check_steps(time_steps: int) -> None:
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise ValueError(f"time_steps={time_steps!r} is invalid: must be an integer >= 1")


class Encoder(nn.Module):
    #: how many input channels (features) each image channel (feature) becomes
    channel_multiplier: int = 1
    #: True when the encoder's output is binary spikes
    binary: bool = True

    def step(
        self, images: torch.Tensor, t: int, time_steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, time_steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_images(images)
        _check_steps(time_steps)
        return torch.stack([self.step(images, t, time_steps, generator) for t in range(time_steps)])


def _uniform(images: torch.Tensor, generator, shape=None) -> torch.Tensor:
    shape = images.shape if shape is None else shape
    return torch.rand(shape, generator=generator, device=images.device, dtype=images.dtype)


def _uniform_train(images: torch.Tensor, generator, time_steps: int) -> torch.Tensor:
    """``_uniform`` for all ``T`` steps at once: the same numbers as ``T`` per-step draws;
    on the CPU the engine draws them (:func:`snn_lab.engine.rand`, ``torch.rand``'s stream)."""
    shape = (time_steps, *images.shape)
    if images.device.type == "cpu" and images.dtype == torch.float32:
        return engine.rand(shape, generator)
    return _uniform(images, generator, shape)


class BernoulliEncoder(Encoder):
    """Rate coding: ``spike = (u < p)`` with ``u ~ U[0, 1)`` fresh each step, the same
    comparison the tutorial's on-chip random op makes."""

    def step(self, images, t, time_steps, generator=None):
        return (_uniform(images, generator) < images).to(images.dtype)

    def forward(self, images, time_steps, generator=None):
        _check_images(images)
        _check_steps(time_steps)
        u = _uniform_train(images, generator, time_steps)
        return (u < images).to(images.dtype)


class LatencyEncoder(Encoder):
    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = float(threshold)

    def spike_times(self, images: torch.Tensor, time_steps: int) -> torch.Tensor:
        t = torch.round((1.0 - images.clamp(0, 1)) * (time_steps - 1))
        return torch.where(images > self.threshold, t, torch.full_like(t, -1.0))

    def step(self, images, t, time_steps, generator=None):
        return (self.spike_times(images, time_steps) == t).to(images.dtype)


class PhaseEncoder(Encoder):
    def __init__(self, bits: int = 8):
        super().__init__()
        if int(bits) < 1:
            raise ValueError(f"bits={bits!r} is invalid: must be an integer >= 1")
        self.bits = int(bits)

    def step(self, images, t, time_steps, generator=None):
        levels = torch.round(images.clamp(0, 1) * (2**self.bits - 1)).to(torch.int64)
        bit = self.bits - 1 - (t % self.bits)
        return ((levels >> bit) & 1).to(images.dtype)


class PopulationEncoder(Encoder):
    centers: torch.Tensor  # buffer (non-persistent)

    def __init__(self, size: int = 4, sigma: float | None = None):
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"size={size!r} is invalid: must be an integer >= 1")
        self.size = self.channel_multiplier = int(size)
        centers = torch.linspace(0.0, 1.0, self.size) if self.size > 1 else torch.tensor([0.5])
        self.register_buffer("centers", centers, persistent=False)
        self.sigma = float(sigma) if sigma is not None else 1.0 / (2.0 * max(self.size - 1, 1))

    def rates(self, images: torch.Tensor) -> torch.Tensor:
        c = self.centers.to(images.device, images.dtype)
        x = images.unsqueeze(2)  # [B, C, 1, ...]
        c = c.view(1, 1, -1, *([1] * (images.dim() - 2)))
        r = torch.exp(-((x - c) ** 2) / (2 * self.sigma**2))
        return r.flatten(1, 2)  # [B, C * size, ...]

    def step(self, images, t, time_steps, generator=None):
        p = self.rates(images)
        return (_uniform(p, generator) < p).to(images.dtype)


class DirectEncoder(Encoder):
    binary = False

    def step(self, images, t, time_steps, generator=None):
        return images

    def forward(self, images, time_steps, generator=None):
        _check_images(images)
        _check_steps(time_steps)
        return images.unsqueeze(0).expand(time_steps, *images.shape)


class PassthroughEncoder(Encoder):
    """Event data arrives as frames of event counts, ``[B, T, ...]`` with ``T`` frames
    (docs/DATASETS.md); they become the input train ``[T, B, ...]`` as they are, or, with
    ``binary``, clipped to spikes (a count > 0 -> 1). :attr:`binary` says which: counts
    are not spikes, and a deploy backend that needs 0/1 inputs refuses them."""

    def __init__(self, binary: bool = False):
        super().__init__()
        self.binary = bool(binary)

    def _check(self, frames: torch.Tensor, time_steps: int) -> None:
        _check_steps(time_steps)
        if not torch.is_floating_point(frames) or frames.dim() < 2:
            raise ValueError(
                f"encoder=passthrough takes float frames [B, T, ...], got {frames.dtype} {tuple(frames.shape)}"
            )
        if frames.shape[1] != time_steps:
            raise ConfigError(
                f"encoder=passthrough: the data gives {frames.shape[1]} frames per sample but the network runs "
                f"time_steps={time_steps}; set data.frames={time_steps} (its default is time_steps)"
            )

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype) if self.binary else x

    def step(self, images, t, time_steps, generator=None):
        self._check(images, time_steps)
        return self._out(images[:, t])

    def forward(self, images, time_steps, generator=None):
        self._check(images, time_steps)
        return self._out(images.transpose(0, 1).contiguous())


#: built-in encoders by config name; ``ENCODERS.register("mine", MyEncoder)`` adds one
ENCODERS: Registry[type[Encoder]] = Registry(
    "encoder",
    {
        "bernoulli": BernoulliEncoder,
        "latency": LatencyEncoder,
        "phase": PhaseEncoder,
        "population": PopulationEncoder,
        "direct": DirectEncoder,
        "passthrough": PassthroughEncoder,
    },
)


def build_encoder(name: str, **params: Any) -> Encoder:
    return ENCODERS.get(name)(**params)

"""Bernoulli encoding with draws that every backend can reproduce bit for bit.

The tutorial encodes on the chip: a random op draws ``u ~ U[0, 1)`` per pixel and time step
and the graph compares ``u < p`` (``p`` = pixel intensity). To check a deployment
*exactly* against eager PyTorch, both must see the same draws, wherever they are made
(host thread, ONNX input, C kernel). So the draws here are a counter-based hash, a pure
function of ``(seed, sample index n, step t, input index j)``::

    mix32(x):  x ^= x >> 16; x *= 0x21F0AAAD; x ^= x >> 15; x *= 0x735A2D97; x ^= x >> 15
    a    = mix32(seed ^ 0x5BD1E995)                        (all arithmetic mod 2^32)
    k_n  = mix32(a + n * 0x9E3779B9)                       one per sample
    c_nt = mix32(k_n ^ (t * 0x85EBCA6B + 0xC2B2AE35))      one per sample and step
    u    = (mix32(c_nt + j * 0x27D4EB2F) >> 8) * 2^-24     float32, exactly representable
    spike[t, n, j] = u < p[n, j]                          (BernoulliEncoder's rule)

Keyed by the sample's index in the dataset (not its batch), the draws do not depend on
the batch size, so batch-1 and batch-28 runs see the same spikes. Pixels with ``p = 0``
never spike whatever ``u`` is, so only non-zero pixels are drawn (about a fifth of
MNIST); ``uniform`` puts ``1.0`` elsewhere. The ``sparse`` backend evaluates the same
formula inside its kernel (device-side encoding, like the chip's random op); the other
backends get ``u`` or the spikes from :class:`CounterDraws` on the host.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

M1, M2 = 0x21F0AAAD, 0x735A2D97
SEED_SALT, K_SAMPLE, K_STEP, C_STEP, K_INDEX = 0x5BD1E995, 0x9E3779B9, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F
INV24 = np.float32(1.0 / (1 << 24))


def batch_seed(seed: int, first_sample: int) -> int:
    """A 63-bit ``torch.Generator`` seed for host-side encoders other than Bernoulli
    (keyed by the batch's first sample, so it depends on the batch partition)."""
    x = int(seed) * 0x9E3779B97F4A7C15 + int(first_sample) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB
    x &= (1 << 64) - 1
    x ^= x >> 31
    return x & ((1 << 63) - 1)


def mix32(x: npt.ArrayLike) -> np.ndarray:
    """The 32-bit integer hash (bijective); ``x`` uint32 (array or int), wraps mod 2^32."""
    x = np.array(x, dtype=np.uint32, ndmin=1)  # arrays wrap silently; numpy scalars would warn
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(M1)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(M2)
    return x ^ (x >> np.uint32(15))


def run_key(seed: int) -> np.ndarray:
    """``a`` as a 1-element uint32 array."""
    return mix32((int(seed) & 0xFFFFFFFF) ^ SEED_SALT)


def sample_keys(seed: int, sample_ids) -> np.ndarray:
    ids = np.asarray(sample_ids, dtype=np.int64) & 0xFFFFFFFF
    return mix32(run_key(seed) + ids.astype(np.uint32) * np.uint32(K_SAMPLE))


def step_keys(keys: np.ndarray, time_steps: int) -> np.ndarray:
    """``c_nt`` for t = 0..T-1: shape ``[T, B]``."""
    t = np.arange(time_steps, dtype=np.uint32) * np.uint32(K_STEP) + np.uint32(C_STEP)
    return mix32(keys[None, :] ^ t[:, None])


class CounterDraws:
    """Host-side evaluation of the draws for whole sample batches."""

    def __init__(self, seed: int, time_steps: int):
        self.seed = int(seed)
        self.time_steps = int(time_steps)

    def _selected(self, images: np.ndarray, sample_ids):
        flat = images.reshape(images.shape[0], -1)
        b_idx, j_idx = np.nonzero(flat > 0)
        c = step_keys(sample_keys(self.seed, sample_ids), self.time_steps)  # [T, B]
        h = mix32(c[:, b_idx] + j_idx.astype(np.uint32) * np.uint32(K_INDEX))
        u = (h >> np.uint32(8)).astype(np.float32) * INV24
        return flat, b_idx, j_idx, u

    def uniform(self, images, sample_ids) -> np.ndarray:
        """``u`` of shape ``[T, *images.shape]`` (1.0 where the pixel is 0)."""
        images = _np32(images)
        flat, b_idx, j_idx, u = self._selected(images, sample_ids)
        out = np.ones((self.time_steps, *flat.shape), dtype=np.float32)
        out[:, b_idx, j_idx] = u
        return out.reshape(self.time_steps, *images.shape)

    def spikes(self, images, sample_ids, dtype=np.float32) -> np.ndarray:
        """Spikes ``[T, *images.shape]`` in ``dtype`` (exact 0/1 in any dtype)."""
        images = _np32(images)
        flat, b_idx, j_idx, u = self._selected(images, sample_ids)
        out = np.zeros((self.time_steps, *flat.shape), dtype=dtype)
        out[:, b_idx, j_idx] = u < flat[b_idx, j_idx][None, :]
        return out.reshape(self.time_steps, *images.shape)

    def spike_train(self, images, sample_ids) -> torch.Tensor:
        """Float32 spikes as a tensor, ready for ``model.forward_spikes``."""
        return torch.from_numpy(self.spikes(images, sample_ids, np.float32))


def _np32(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)

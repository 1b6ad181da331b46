#!/usr/bin/env python
"""Where an engine training step of the seed MLP spends its time.

    python experiments/profile_mlp_step.py [--kernel-draws] [--warmup 60] [--steps 6] [--threads 2] [--reference]
    SNN_LAB_KEEP_MEMORY=0 python experiments/profile_mlp_step.py   # glibc's allocator defaults

The bench's MLP race settings (784-512-512-10, T=20, batch 200, SGD lr 0.02 momentum 0.9)
on the bundled MNIST training digits: ``--warmup`` training steps first (the firing rates
of a network that learns, not of its initialisation), then ``--steps`` steps under
``torch.profiler`` and, separately, with each native kernel call timed. Prints the
profiler's table (self CPU time per operator) and the native kernels' milliseconds per
step; before both, the page faults and kernel (system) time of plain steps. Like the command lines,
it keeps freed memory in the process before torch starts (``snn_lab.cli.keep_freed_memory``; off with
``SNN_LAB_KEEP_MEMORY=0``). Shares, not a benchmark: the profiler adds its own overhead.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import resource
import time
from pathlib import Path

from snn_lab.cli import keep_freed_memory

KEPT = keep_freed_memory()  # before torch allocates anything, as the command lines do

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from snn_lab import engine  # noqa: E402
from snn_lab.bench.contestants import Engine, Reference  # noqa: E402
from snn_lab.engine import native  # noqa: E402

MNIST = Path(__file__).resolve().parents[1] / "src" / "snn_lab" / "data" / "mnist"
KERNELS = (
    "tm_fwd",
    "tm_fwd_lif",
    "tm_wgrad",
    "tmask",
    "bernoulli_tmask",
    "thin_mm",
    "lif_fwd",
    "lif_bwd",
    "spmm_fwd",
    "csr",
)


def digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(MNIST / "train-images-idx3-ubyte.gz") as f:
        raw = f.read()
    with gzip.open(MNIST / "train-labels-idx1-ubyte.gz") as f:
        lab = f.read()
    x = torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16)[: n * 784].copy()).float().view(n, 1, 28, 28) / 255
    y = torch.from_numpy(np.frombuffer(lab, np.uint8, offset=8)[:n].copy()).long()
    return x, y


def time_kernels(step, steps: int, names) -> tuple[float, dict[str, float]]:
    """``steps`` calls of ``step`` with each native kernel in ``names`` timed: the wall
    time per step and the seconds spent in each kernel (summed over the steps)."""
    spent: dict[str, float] = collections.defaultdict(float)
    originals = {name: getattr(native, name) for name in names if hasattr(native, name)}

    def timed(name, fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t0

        return call

    for name, fn in originals.items():
        setattr(native, name, timed(name, fn))
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) / steps, spent
    finally:
        for name, fn in originals.items():
            setattr(native, name, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel-draws", action="store_true", help="engine.bernoulli=kernel")
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference", action="store_true", help="the per-step path instead of the engine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    T, B = 20, 200
    gen = torch.Generator().manual_seed(0)
    images, labels = digits(2000)
    net = (Reference if args.reference else Engine)(T, torch.device("cpu"))
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    net.train(True)

    def step() -> None:
        idx = torch.randint(0, images.shape[0], (B,), generator=gen)
        opt.zero_grad(set_to_none=True)
        with engine.using(bernoulli="kernel" if args.kernel_draws else "torch"):
            loss = F.cross_entropy(net.scores(images[idx], gen), labels[idx])
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    # page faults and kernel time of plain steps (the profiler's own allocations come later)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    plain = (time.perf_counter() - t0) / args.steps
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    faults = (r1.ru_minflt - r0.ru_minflt) / args.steps
    system = (r1.ru_stime - r0.ru_stime) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    wall, spent = time_kernels(step, args.steps, KERNELS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(
        f"plain steps: {plain * 1e3:.1f} ms, {faults:.0f} page faults and {system * 1e3:.1f} ms of system time"
        f" a step (freed memory kept: {KEPT}); peak RSS {peak:.0f} MB"
    )
    print(f"step with the kernels timed: {wall * 1e3:.1f} ms; native kernels per step:")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:16s} {s / args.steps * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Where an engine training step of the bench's conv network spends its time.

    python experiments/profile_conv_step.py [--network conv|conv_bernoulli] [--warmup 30] [--steps 4]
                                            [--threads 2] [--reference]

The bench's conv race settings (``snn_lab.bench.convnets``: the ``conv_mnist`` network,
batch 100, AdamW lr 1e-3) on the bundled MNIST training digits: ``--warmup`` training
steps first (the firing rates of a network that learns), then ``--steps`` steps under
``torch.profiler`` and, separately, with each native kernel call timed. Prints the
profiler's table (self CPU time per operator) and the native kernels' milliseconds per
step. Keeps freed memory in the process like the command lines. Shares, not a benchmark:
the profiler adds its own overhead.
"""

from __future__ import annotations

import argparse
import time

from snn_lab.cli import keep_freed_memory

KEPT = keep_freed_memory()  # before torch allocates anything, as the command lines do

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from profile_mlp_step import digits, time_kernels  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from snn_lab.bench.convnets import NETWORKS, ConvEngine, ConvReference  # noqa: E402
from snn_lab.engine import native  # noqa: E402

KERNELS = tuple(
    name
    for name in dir(native)
    if not name.startswith("_") and callable(getattr(native, name)) and name not in ("available", "status")
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", choices=sorted(NETWORKS), default="conv")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference", action="store_true", help="the per-step path instead of the engine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    T, B = NETWORKS[args.network][0], 100
    gen = torch.Generator().manual_seed(0)
    images, labels = digits(2000)
    net = (ConvReference if args.reference else ConvEngine)(T, torch.device("cpu"), args.network)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train(True)

    def step() -> None:
        idx = torch.randint(0, images.shape[0], (B,), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net.scores(images[idx], gen), labels[idx])
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    plain = (time.perf_counter() - t0) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))

    wall, spent = time_kernels(step, args.steps, KERNELS)
    print(f"plain steps: {plain * 1e3:.1f} ms (freed memory kept: {KEPT})")
    print(f"step with the kernels timed: {wall * 1e3:.1f} ms; native kernels per step:")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:16s} {s / args.steps * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()

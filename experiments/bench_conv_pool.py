#!/usr/bin/env python
"""Training speed of the conv SNN with max-pooling before vs after the neuron.

    python experiments/bench_conv_pool.py [--rounds 5] [--batch 100] [--threads 2] \
        [overrides for experiment=conv_mnist, e.g. model.channels=[32,64]]

Builds ``experiment=conv_mnist`` twice, ``model.pool=current`` (pool the synaptic
current, then the neuron) and ``model.pool=spikes`` (neuron, then pool its spikes),
and times full training steps (forward, cross-entropy, backward, AdamW step) on one
MNIST-shaped batch in interleaved rounds, so both see the same machine load. Prints
the per-round and median samples/s and the ratio current/spikes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from snn_lab.cli import CONFIG_DIR
from snn_lab.config import register_configs
from snn_lab.config.build import net_config
from snn_lab.models import build_network


def build(pool: str, overrides: list[str]):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=conv_mnist", f"model.pool={pool}", *overrides])
    torch.manual_seed(0)
    net = build_network(net_config(cfg)).train()
    return net, torch.optim.AdamW(net.parameters(), lr=1e-3)


def train_steps(net, opt, x, y, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * x.shape[0] / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per network and round")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    register_configs()
    nets = {pool: build(pool, args.overrides) for pool in ("current", "spikes")}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    for net, opt in nets.values():  # warm-up: allocator, kernels
        train_steps(net, opt, x, y, 1)
    rates = {pool: [] for pool in nets}
    for r in range(args.rounds):
        for pool, (net, opt) in nets.items():
            rates[pool].append(train_steps(net, opt, x, y, args.steps))
        print(
            f"round {r}: "
            + "  ".join(f"pool={p} {rates[p][-1]:.0f} samples/s" for p in nets)
            + f"  ratio {rates['current'][-1] / rates['spikes'][-1]:.2f}x"
        )
    med = {p: statistics.median(v) for p, v in rates.items()}
    ratios = [c / s for c, s in zip(rates["current"], rates["spikes"])]
    print(
        f"median: pool=current {med['current']:.0f} samples/s, pool=spikes {med['spikes']:.0f} samples/s; "
        f"current/spikes {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x), "
        f"batch {args.batch}, {args.threads} threads"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

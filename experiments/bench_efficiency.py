#!/usr/bin/env python
"""What counting NeuroBench's efficiency metrics costs a validation epoch.

    python experiments/bench_efficiency.py [--rounds 5] [--samples 5000] [--threads 2] \
        [overrides, e.g. experiment=conv_mnist]

Builds the configured network (default: the tutorial's 784-512-512-10, T=20) as the
LightningModule twice, ``efficiency.enabled=true`` and ``false``, with the same
weights, and times ``Trainer.validate`` over the first ``--samples`` bundled MNIST test
images (batches of ``data.eval_batch_size``) in interleaved rounds, so both see the
same machine load. Prints the per-round wall-clock and process CPU seconds, their medians
and the overhead ratios (on a machine other processes load, CPU seconds are the steadier
measure: wall time also counts the waits for a core).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, TensorDataset

from snn_lab.cli import CONFIG_DIR
from snn_lab.config import register_configs
from snn_lab.config.build import net_config, to_dict
from snn_lab.data.mnist import load_mnist_arrays
from snn_lab.lit.module import SNNLitModule


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    register_configs()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
    images, labels = load_mnist_arrays("test", None)
    x = images[: args.samples].float().div(255).reshape(-1, 1, 28, 28)
    loader = DataLoader(TensorDataset(x, labels[: args.samples].long()), batch_size=cfg.data.eval_batch_size)
    torch.manual_seed(0)
    modules = {}
    for enabled in (True, False):
        m = SNNLitModule(net_config(cfg), seed=cfg.seed, efficiency={**to_dict(cfg.efficiency), "enabled": enabled})
        modules[enabled] = m
    modules[False].load_state_dict(modules[True].state_dict())
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(args.rounds + 1):  # round 0 warms up (kernels, allocator), not counted
            for enabled in (True, False) if r % 2 else (False, True):
                trainer = pl.Trainer(
                    logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1
                )
                t0, c0 = time.perf_counter(), time.process_time()
                trainer.validate(modules[enabled], loader, verbose=False)
                if r:
                    times[enabled].append(time.perf_counter() - t0)
                    cpu[enabled].append(time.process_time() - c0)
    eff = modules[True].efficiency or {}
    print(f"network: {cfg.model.get('name', '?')} T={cfg.time_steps}, {args.samples} samples, threads={args.threads}")
    for label, data in (("wall", times), ("CPU", cpu)):
        on, off = statistics.median(data[True]), statistics.median(data[False])
        print(f"validate {label} seconds, efficiency on :", " ".join(f"{t:.2f}" for t in data[True]))
        print(f"validate {label} seconds, efficiency off:", " ".join(f"{t:.2f}" for t in data[False]))
        print(f"median {label} on {on:.2f} s, off {off:.2f} s: overhead {100 * (on / off - 1):+.1f}%")
    print(f"synops/sample {eff.get('synops', float('nan')):.4g}, activation sparsity {eff.get('activation_sparsity')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

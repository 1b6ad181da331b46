#!/usr/bin/env python
"""The engine's draws against torch's own, at the bench networks' sizes.

    python experiments/bench_draws.py [--rounds 7] [--threads 2]

Per round, back to back (the order alternating between rounds): the seed MLP's Bernoulli
input uniforms (``torch.rand`` of ``[20, 200, 784]`` against ``snn_lab.engine.rand``) and
the conv network's two dropout layers in training (``F.dropout`` of ``[400, 1152]`` and
``[400, 256]`` at p=0.2 against ``snn_lab.engine.dropout``). Prints milliseconds per call
of each, the per-round ratios (torch / engine) and their medians, and checks that both
give the same numbers and leave the generator in the same state.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from snn_lab import engine
from snn_lab.engine.options import native_enabled

RAND_SHAPE = (20, 200, 784)  # T, batch, pixels of the MLP race
DROPOUT_SHAPES = ((400, 1152), (400, 256))  # T*B rows of the conv race's two dropouts
P = 0.2


def _ms(fn: Callable[[], object], repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1e3


def _same(torch_fn: Callable[[], torch.Tensor], engine_fn: Callable[[], torch.Tensor]) -> bool:
    torch.manual_seed(5)
    want, after = torch_fn(), torch.get_rng_state()
    torch.manual_seed(5)
    got = engine_fn()
    return torch.equal(got, want) and torch.equal(torch.get_rng_state(), after)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=5, help="calls per timing")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    inputs = [(torch.rand(s) < 0.3).float() for s in DROPOUT_SHAPES]
    pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "uniforms [20, 200, 784]": (lambda: torch.rand(RAND_SHAPE), lambda: engine.rand(RAND_SHAPE)),
        "dropout masks (conv head)": (
            lambda: [F.dropout(x, P, True) for x in inputs],
            lambda: [engine.dropout(x, P, True) for x in inputs],
        ),
    }
    same = {
        "uniforms [20, 200, 784]": _same(lambda: torch.rand(RAND_SHAPE), lambda: engine.rand(RAND_SHAPE)),
        "dropout masks (conv head)": _same(
            lambda: torch.cat([F.dropout(x, P, True).flatten() for x in inputs]),
            lambda: torch.cat([engine.dropout(x, P, True).flatten() for x in inputs]),
        ),
    }
    for torch_fn, engine_fn in pairs.values():  # warm-up: the kernels build and load
        torch_fn()
        engine_fn()
    print(f"threads={args.threads} rounds={args.rounds} native={native_enabled()}")
    for name, (torch_fn, engine_fn) in pairs.items():
        ratios, t_ms, e_ms = [], [], []
        for r in range(args.rounds):
            if r % 2:
                e, t = _ms(engine_fn, args.repeat), _ms(torch_fn, args.repeat)
            else:
                t, e = _ms(torch_fn, args.repeat), _ms(engine_fn, args.repeat)
            t_ms.append(t)
            e_ms.append(e)
            ratios.append(t / e)
        print(
            f"{name}: torch {statistics.median(t_ms):.2f} ms, engine {statistics.median(e_ms):.2f} ms; "
            f"ratios {' '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}x); "
            f"same numbers and generator state: {same[name]}"
        )
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

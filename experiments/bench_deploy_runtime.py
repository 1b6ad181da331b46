#!/usr/bin/env python
"""Deploy runtime: feeder/worker/reader threads vs the calling thread, on one compiled step.

    python experiments/bench_deploy_runtime.py <checkpoint> [--backend sparse] \
        [--batch 28] [--rounds 5] [--samples N]

Compiles the checkpoint's network once and runs the test split through
:class:`snn_lab.deploy.runtime.Runtime` both ways (``runs_on_all_cores`` off, then on),
alternated in rounds so both see the same machine load. Prints the samples/s of each
round, the per-round ratios (calling thread / threads) and whether the predictions agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

import numpy as np

from snn_lab.deploy import api
from snn_lab.deploy.api import compile_step, load_model
from snn_lab.deploy.runtime import InputSource, Runtime
from snn_lab.errors import SnnLabError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--backend", default="sparse")
    ap.add_argument("--batch", type=int, default=28)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=None, help="first N test images (default: all)")
    args = ap.parse_args(argv)
    try:
        model, _ = load_model(args.checkpoint)
        images, _ = api.load_images(model, "test", None, args.samples)
        with tempfile.TemporaryDirectory() as tmp:
            _, compiled, _ = compile_step(model, args.backend, args.batch, tmp)
            runtime = Runtime(compiled, InputSource(model, 0, model.time_steps))
            rates: dict[bool, list[float]] = {False: [], True: []}
            preds = {}
            for _ in range(args.rounds):
                for in_caller in (False, True):
                    compiled.runs_on_all_cores = in_caller
                    res = runtime.run(images)
                    rates[in_caller].append(res.throughput)
                    preds[in_caller] = res.predictions
            compiled.close()
    except SnnLabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ratios = [b / a for a, b in zip(rates[False], rates[True])]
    print(f"threads        samples/s: {[round(x) for x in rates[False]]}")
    print(f"calling thread samples/s: {[round(x) for x in rates[True]]}")
    print(
        f"ratio calling thread / threads per round: {[round(r, 3) for r in ratios]}, "
        f"median {statistics.median(ratios):.3f}"
    )
    print(f"same predictions: {bool(np.array_equal(preds[False], preds[True]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The sparse deploy kernel of this checkout against the one of an earlier git revision.

    python experiments/bench_sparse_kernel.py <checkpoint> --against <revision> \
        [--threads 2] [--batch 28] [--samples 5600] [--passes 3]

Builds ``sparse_deploy.c`` (with its headers) of ``<revision>`` into a temporary directory
with the flags snn_lab builds the current one with, compiles the checkpoint's network for
both, and runs the test images through both batch by batch: each batch goes through one
kernel and then the other (the order alternating), so a machine whose speed wanders
slows both alike. Prints each kernel's samples/s per pass (kernel calls only, encoding in
the kernel included), the per-pass ratio, and whether the two gave the same scores.
Both must speak the current ABI version (the revision's kernel is loaded by the current
backend). Both kernels' thread pools live at once, so the idle one's worker spins for a
moment while the other runs: the absolute rates come out below a deploy's (and kernel
calls only, no runtime around them); the ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from snn_lab._native import build
from snn_lab.deploy import api
from snn_lab.deploy.api import compile_step, load_model
from snn_lab.deploy.backends import sparse
from snn_lab.errors import SnnLabError

CSRC = "src/snn_lab/_native/csrc"


def build_at(revision: str, out: Path) -> Path:
    """``sparse_deploy.c`` and the headers of ``revision`` -> ``out/libsparse-<rev>.so``."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True, capture_output=True, text=True)
    root = Path(top.stdout.strip())
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", revision, f"{CSRC}/"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.split()
    src = out / revision
    src.mkdir(parents=True)
    for name in names:
        if name.endswith((".c", ".h")):
            show = subprocess.run(["git", "show", f"{revision}:{name}"], cwd=root, check=True, capture_output=True)
            (src / Path(name).name).write_bytes(show.stdout)
    cc = build.find_compiler()
    if cc is None:
        raise SystemExit("error: no C compiler found (install gcc or set CC)")
    lib = out / f"libsparse-{revision}.so"
    flags = build.LIBRARIES[sparse.LIBRARY].attempts[0]
    subprocess.run([cc, *flags, str(src / "sparse_deploy.c"), "-o", str(lib)], check=True)
    return lib


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--against", required=True, help="git revision whose kernel to compare with")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=28)
    ap.add_argument("--samples", type=int, default=5600)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        model, _ = load_model(args.checkpoint)
        images, _ = api.load_images(model, "test", None, args.samples)
        B, T = args.batch, model.time_steps
        with tempfile.TemporaryDirectory() as tmp:
            libs = {"this checkout": None, args.against: build_at(args.against, Path(tmp))}
            steps = {}
            for name, path in libs.items():
                if path is not None:  # the backend builds and loads the checkout's own kernel otherwise
                    sparse.build_kernel = lambda cc=None, march_native=True, p=path: sparse._bind(ctypes.CDLL(str(p)))
                _, steps[name], _ = compile_step(model, "sparse", B, Path(tmp) / "c", "auto", {"threads": args.threads})
            names = list(steps)
            rates: dict[str, list[float]] = {n: [] for n in names}
            scores: dict[str, list[np.ndarray]] = {n: [] for n in names}
            n_batches = len(images) // B
            for p in range(args.passes):
                spent = dict.fromkeys(names, 0.0)
                for i in range(n_batches):
                    img = images[i * B : (i + 1) * B]
                    keys = np.arange(i * B, (i + 1) * B, dtype=np.uint32)
                    for name in names if i % 2 == 0 else names[::-1]:
                        t0 = time.perf_counter()
                        out = steps[name].run_batch(img, keys=keys, time_steps=T)
                        spent[name] += time.perf_counter() - t0
                        if p == 0:
                            scores[name].append(out.copy())
                for name in names:
                    rates[name].append(n_batches * B / spent[name])
            for c in steps.values():
                c.close()
    except (SnnLabError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    new, old = names
    ratios = [a / b for a, b in zip(rates[new], rates[old])]
    for name in names:
        print(f"{name:>16} samples/s per pass: {[round(x) for x in rates[name]]}")
    per_pass = [round(r, 3) for r in ratios]
    print(f"ratio this checkout / {old} per pass: {per_pass}, median {statistics.median(ratios):.3f}")
    same = all(np.array_equal(a, b) for a, b in zip(scores[new], scores[old]))
    print(f"same scores: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

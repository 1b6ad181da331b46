#!/usr/bin/env python
"""The sparse deploy kernel of this checkout against the one of an earlier git revision.

    python experiments/bench_sparse_kernel.py <checkpoint> --against <revision> \
        [--rounds 4] [--threads 2] [--batch 28] [--samples 5600] [--passes 3]

Builds ``sparse_deploy.c`` (with its headers) of ``<revision>`` into a temporary directory
with the flags snn_lab builds the current one with, then runs ``--rounds`` rounds; in each
round every kernel runs in a fresh process of its own (the order alternating between
rounds): the checkpoint's network compiled for it, the test images through it batch by
batch, ``--passes`` passes, the median samples/s of the kernel calls (encoding in the
kernel included, no runtime around them). Fresh processes, because where a process's
allocations land in memory changed this kernel's speed by up to a fifth from one process
to the next, as much as the differences being measured: two kernels in one process would
each get one draw of it. Prints each kernel's samples/s per round, the per-round ratio,
and whether the two gave the same scores. Both kernels must speak the current ABI version
(the revision's kernel is loaded by the current backend).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CSRC = "src/snn_lab/_native/csrc"


def build_at(revision: str, out: Path) -> Path:
    """``sparse_deploy.c`` and the headers of ``revision`` -> ``out/libsparse-<rev>.so``."""
    from snn_lab._native import build
    from snn_lab.deploy.backends import sparse

    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True, capture_output=True, text=True)
    root = Path(top.stdout.strip())
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", revision, f"{CSRC}/"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.split()
    src = out / "src"
    src.mkdir(parents=True)
    for name in names:
        if name.endswith((".c", ".h")):
            show = subprocess.run(["git", "show", f"{revision}:{name}"], cwd=root, check=True, capture_output=True)
            (src / Path(name).name).write_bytes(show.stdout)
    cc = build.find_compiler()
    if cc is None:
        raise SystemExit("error: no C compiler found (install gcc or set CC)")
    lib = out / "libsparse-revision.so"
    flags = build.LIBRARIES[sparse.LIBRARY].attempts[0]
    subprocess.run([cc, *flags, str(src / "sparse_deploy.c"), "-o", str(lib)], check=True)
    return lib


def measure(checkpoint: str, lib: str, threads: int, batch: int, samples: int, passes: int) -> None:
    """One kernel in this process: prints ``<median samples/s> <sha256 of the scores>``."""
    from snn_lab.deploy import api
    from snn_lab.deploy.api import compile_step, load_model
    from snn_lab.deploy.backends import sparse

    if lib:  # else the backend builds and loads the checkout's own kernel
        sparse.build_kernel = lambda cc=None, march_native=True: sparse._bind(ctypes.CDLL(lib))
    model, _ = load_model(checkpoint)
    images, _ = api.load_images(model, "test", None, samples)
    with tempfile.TemporaryDirectory() as tmp:
        _, step, _ = compile_step(model, "sparse", batch, tmp, "auto", {"threads": threads})
        n_batches = len(images) // batch
        rates, digest = [], hashlib.sha256()
        for p in range(passes):
            spent = 0.0
            for i in range(n_batches):
                keys = np.arange(i * batch, (i + 1) * batch, dtype=np.uint32)
                t0 = time.perf_counter()
                out = step.run_batch(images[i * batch : (i + 1) * batch], keys=keys, time_steps=model.time_steps)
                spent += time.perf_counter() - t0
                if p == 0:
                    digest.update(out.tobytes())
            rates.append(n_batches * batch / spent)
        step.close()
    print(f"{statistics.median(rates):.1f} {digest.hexdigest()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--against", required=True, help="git revision whose kernel to compare with")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=28)
    ap.add_argument("--samples", type=int, default=5600)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--measure-lib", default=None, help=argparse.SUPPRESS)  # worker mode (one kernel)
    args = ap.parse_args(argv)
    if args.measure_lib is not None:
        measure(args.checkpoint, args.measure_lib, args.threads, args.batch, args.samples, args.passes)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        try:
            libs = {"this checkout": "", args.against: str(build_at(args.against, Path(tmp)))}
        except subprocess.CalledProcessError as e:
            print(f"error: cannot build the kernel of {args.against!r}: {e}", file=sys.stderr)
            return 2
        names = list(libs)
        rates: dict[str, list[float]] = {n: [] for n in names}
        digests: dict[str, set[str]] = {n: set() for n in names}
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                cmd = [sys.executable, __file__, args.checkpoint, "--against", args.against]
                cmd += ["--measure-lib", libs[name], "--threads", str(args.threads), "--batch", str(args.batch)]
                cmd += ["--samples", str(args.samples), "--passes", str(args.passes)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    lines = (proc.stderr or proc.stdout).strip().splitlines()
                    why = lines[-1] if lines else f"exit {proc.returncode}"
                    print(f"error: the {name} kernel failed: {why}", file=sys.stderr)
                    return 2
                rate, digest = proc.stdout.strip().splitlines()[-1].split()
                rates[name].append(float(rate))
                digests[name].add(digest)
    new, old = names
    ratios = [a / b for a, b in zip(rates[new], rates[old])]
    for name in names:
        print(f"{name:>16} samples/s per round: {[round(x) for x in rates[name]]}")
    per_round = [round(r, 3) for r in ratios]
    print(f"ratio this checkout / {old} per round: {per_round}, median {statistics.median(ratios):.3f}")
    print(f"same scores: {len(digests[new] | digests[old]) == 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

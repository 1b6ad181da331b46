"""Command-line entry points: ``snn-train``/``python -m snn_lab.train``, ``snn-eval``,
``snn-deploy``/``python -m snn_lab.deploy``, ``snn-bench``/``python -m snn_lab.bench``.

This is the top layer: the only code that reads ``sys.argv``, sets process-wide
defaults (environment variables) and turns errors into exit codes. Each entry function
sets the environment first and imports torch only after that (OpenMP reads
``OMP_WAIT_POLICY`` when it loads).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path


def _config_dir() -> str:
    """Hydra's primary config directory: ``snn_lab/conf`` inside an installed package
    (a wheel ships the repository's top-level ``conf/`` there), else ``conf/`` at the top
    of a source checkout (an editable install)."""
    package = Path(__file__).resolve().parents[1]
    shipped = package / "conf"
    return str(shipped if shipped.is_dir() else package.parents[1] / "conf")


CONFIG_DIR = _config_dir()

__all__ = ["CONFIG_DIR", "bench", "deploy", "evaluate", "keep_freed_memory", "prepare_process", "train"]

# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks below this come from the heap, not fresh mappings: 1 GB covers the full-resolution
# tensors of a conv network at T=20 (100 MB for [2000, 64, 14, 14] floats); glibc's older
# versions refuse more than 32 MB, which is then used instead.
KEEP_MMAP_THRESHOLDS = (1 << 30, 32 << 20)
KEEP_TRIM_THRESHOLD = 1 << 30  # free heap top kept by the process, up to this


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep freed memory for reuse instead of handing it back to the
    kernel (``SNN_LAB_KEEP_MEMORY=0`` leaves the allocator alone). Returns True when set.

    Training allocates and frees tensors of several MB every step (8 MB for a hidden layer
    of the tutorial network over T=20 at batch 200). With glibc's defaults, some of them go
    back to the kernel when freed and come back as fresh zeroed pages: up to ~2,000 page
    faults a training step of that network on the engine, ~4,000 on the per-step path;
    kept, none (docs/BENCHMARKS.md). Process-wide and irreversible (glibc then stops
    adapting its thresholds), so it is set by the command lines only, never on import."""
    if os.environ.get("SNN_LAB_KEEP_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = any(mallopt(_M_MMAP_THRESHOLD, threshold) for threshold in KEEP_MMAP_THRESHOLDS)
    return bool(mapped and mallopt(_M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD))


def prepare_process() -> None:
    """Process-wide defaults for a command-line run (an explicit setting wins).

    Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with other
    processes, spinning threads slowed a 2-epoch run from ~80 s to ~10 min
    (docs/BENCHMARKS.md). Hydra prints one-line errors, not its own traceback. Freed
    memory stays with the process (:func:`keep_freed_memory`).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    keep_freed_memory()


def train() -> None:
    prepare_process()
    from .train_entry import check_output_dir, main

    check_output_dir(sys.argv[1:])
    main()


def evaluate() -> None:
    """``snn-eval ckpt_path=...``: the train CLI with the ``eval`` config (train=false)."""
    prepare_process()
    from .train_entry import check_output_dir, main

    check_output_dir(sys.argv[1:])
    if not any(a.startswith(("--config-name", "-cn")) for a in sys.argv[1:]):
        sys.argv[1:1] = ["--config-name", "eval"]
    main()


def deploy() -> None:
    prepare_process()
    from .deploy_app import main
    from .train_entry import check_output_dir

    check_output_dir(sys.argv[1:])
    main()


def bench() -> None:
    prepare_process()
    from .bench_app import main

    main()

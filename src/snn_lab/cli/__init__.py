"""Command-line entry points: ``snn-train``/``python -m snn_lab.train``, ``snn-eval``,
``snn-deploy``/``python -m snn_lab.deploy``, ``snn-bench``/``python -m snn_lab.bench``.

This is the top layer: the only code that reads ``sys.argv``, sets process-wide
defaults (environment variables) and turns errors into exit codes. Each entry function
sets the environment first and imports torch only after that (OpenMP reads
``OMP_WAIT_POLICY`` when it loads).
"""

from __future__ import annotations

import os
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

__all__ = ["CONFIG_DIR", "bench", "deploy", "evaluate", "prepare_process", "train"]


def prepare_process() -> None:
    """Process-wide defaults for a command-line run (an explicit setting wins).

    Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with other
    processes, spinning threads slowed a 2-epoch run from ~80 s to ~10 min
    (docs/BENCHMARKS.md). Hydra prints one-line errors, not its own traceback.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")


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

"""Shared helpers for tests that run the CLIs as a user would (in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

QUIET = ["callbacks.progress_bar=none", "trainer.enable_model_summary=false"]
TINY_RUN = [
    "data.train_subset=400",
    "data.eval_subset=200",
    "data.val_split=200",
    "trainer.max_epochs=1",
    "time_steps=4",
    "model.hidden=[64]",
    *QUIET,
]


def run_cli(module: str, args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def train(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_cli("snn_lab.train", args, cwd, timeout)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


TINY = TINY_RUN  # the CLI overrides of a tiny run (1 epoch, 400 images, T=4, one 64-neuron layer)

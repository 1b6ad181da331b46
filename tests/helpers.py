"""Plain helpers: run the CLIs and scripts as a user would (in a subprocess), read a run's
metrics, loop a neuron's ``step``. Fixtures (networks, configs, a trained run) are in
conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from cli_runner import run_module

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["callbacks.progress_bar=none", "trainer.enable_model_summary=false"]
# the CLI overrides of a tiny training run: 1 epoch on 400 images, T=4, one 64-neuron layer
TINY_RUN = [
    "data.train_subset=400",
    "data.eval_subset=200",
    "data.val_split=200",
    "trainer.max_epochs=1",
    "time_steps=4",
    "model.hidden=[64]",
    *QUIET,
]


def _env() -> dict:
    return dict(os.environ, PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")


def run_cli(
    module: str, args: list[str], cwd: Path, timeout: int = 300, fresh: bool = False
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``cwd``: its own process, forked from a zygote that
    has the CLI imported already (tests/cli_runner.py), or a fresh interpreter when
    ``fresh`` (or ``SNN_LAB_TEST_FORK=0``): joblib's process pool (loky) hangs in a child
    forked from the zygote."""
    return run_module(module, args, cwd, _env(), timeout, fresh)


def train(args: list[str], cwd: Path, timeout: int = 300, fresh: bool = False) -> subprocess.CompletedProcess:
    return run_cli("snn_lab.train", args, cwd, timeout, fresh)


def deploy(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_cli("snn_lab.deploy", args, cwd, timeout)


def bench(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_cli("snn_lab.bench", args, cwd, timeout)


def run_script(script: str, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``python <ROOT>/<script> <args>`` (e.g. ``experiments/plot_sweep.py``)."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], env=_env(), capture_output=True, text=True, timeout=timeout
    )


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def step_loop(neuron, x: torch.Tensor, steps: int | None = None):
    """Drive ``neuron`` through ``step`` one time step at a time: over ``x[T, ...]``, or
    the constant ``x`` repeated ``steps`` times. Returns spikes ``[T, ...]``, membranes
    ``[T, ...]`` and the last state."""
    if steps is not None:
        x = x.expand(steps, *x.shape)
    state = neuron.init_state(x.shape[1:])
    spikes, mems = [], []
    for xt in x.unbind(0):
        s, state = neuron.step(xt, state)
        spikes.append(s)
        mems.append(neuron.membrane(state))
    return torch.stack(spikes), torch.stack(mems), state

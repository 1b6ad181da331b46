"""Shared fixtures: generators, composed configs, tiny networks and a trained tiny run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import TINY_RUN, train

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny training run (train CLI, 1 epoch on 400 images): its run dir.
    Read it, never write into it (copy it first)."""
    root = tmp_path_factory.mktemp("tiny_run")
    r = train([*TINY_RUN, "hydra.run.dir=run"], root)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "run"


@pytest.fixture(scope="session")
def trained_tiny_ckpt(tiny_run) -> Path:
    return tiny_run / "checkpoints" / "best.ckpt"

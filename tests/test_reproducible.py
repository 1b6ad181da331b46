"""Same command, same result: the same tiny training command run twice on this machine,
with the native kernels and 2 threads, gives the same metrics.json (timings and paths
aside) and the same trained weights."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from helpers import TINY_RUN, metrics, train
from snn_lab.engine import native

TIMINGS = {"wall_seconds", "fit_seconds", "train_samples_per_second"}
PATHS = {"run_dir", "checkpoints"}
MACHINE = {"host"}  # the load average differs between any two runs
# kernels: whether this process compiled the library, and where it lies, may differ
KERNEL_RUN_FACTS = {"compiled", "library"}


def _comparable(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in m.items() if k not in TIMINGS | PATHS | MACHINE}
    out["kernels"] = {
        part: {k: v for k, v in info.items() if k not in KERNEL_RUN_FACTS} for part, info in m["kernels"].items()
    }
    return out


@pytest.mark.slow  # two 2-epoch trainings (about a minute): run with -m slow
@pytest.mark.skipif(not native.available(), reason="the native kernels cannot be built here")
def test_same_command_twice_gives_the_same_metrics_and_weights(tmp_path):
    args = [
        *TINY_RUN,
        "data.train_subset=800",
        "trainer.max_epochs=2",
        "target.threads=2",
    ]
    runs = []
    for name in ("a", "b"):
        r = train([*args, f"hydra.run.dir={name}"], tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(tmp_path / name)
    ma, mb = (metrics(run) for run in runs)
    assert ma["kernels"]["engine"]["kernels"] == "native", ma["kernels"]
    assert ma["global_step"] >= 4 and len(ma["history"]) == 2
    assert _comparable(ma) == _comparable(mb)
    wa, wb = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in runs)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k

"""SIGKILL a training run mid-epoch, resume with ckpt_path=last, and get exactly the
metrics and weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import QUIET, metrics, train

ARGS = [
    "data.train_subset=1600",
    "data.eval_subset=300",
    "data.val_split=300",
    "data.batch_size=100",
    "trainer.max_epochs=2",
    "time_steps=6",
    "model.hidden=[256]",
    "trainer.deterministic=true",
    "callbacks.every_n_train_steps=3",
    "model.dropout=0.1",
    *QUIET,
]
STEPS_PER_EPOCH = 16
# The long recipes' parts (experiment=elastic_conv, on a small conv net): the weight
# average, one-cycle schedule, BatchNorm and the augmentations' draws must all resume.
CONV_EMA_ELASTIC = [
    *ARGS[:4],
    "trainer.max_epochs=2",
    "time_steps=3",
    "trainer.deterministic=true",
    "callbacks.every_n_train_steps=3",
    "model=conv",
    "model.channels=[8,16]",
    "model.fc=32",
    "model.dropout=0.1",
    "neuron=plif",
    "encoder=direct",
    "optimizer=adamw",
    "lr_schedule=onecycle",
    "callbacks.ema_decay=0.99",
    "data.augment=elastic",
    *QUIET,
]


def _ckpt_step(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["global_step"]
    except Exception:
        return None


def _weights(run):
    sd = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in sd.items() if k.startswith("net.")}


@pytest.mark.parametrize(
    "args", [ARGS, pytest.param(CONV_EMA_ELASTIC, marks=pytest.mark.slow)], ids=["mlp_dropout", "conv_ema_elastic"]
)
def test_kill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, args):
    ref = train([*args, "hydra.run.dir=ref"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snn_lab.train", *args, "hydra.run.dir=killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    killed_at = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        step = _ckpt_step(last) if last.exists() else None
        # the second epoch, mid-way: its first periodic checkpoint
        if step is not None and STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH - 3:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = step
            break
        time.sleep(0.02)
    assert killed_at is not None, "the run finished (or stalled) before it could be killed mid-epoch"
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = train([*args, "ckpt_path=last", "hydra.run.dir=killed"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = metrics(tmp_path / "ref"), metrics(tmp_path / "killed")
    for key in ("best_val_acc", "final_val_acc", "test_acc", "epochs", "global_step"):
        assert a[key] == b[key], (key, a[key], b[key], killed_at)
    wa, wb = _weights(tmp_path / "ref"), _weights(tmp_path / "killed")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k

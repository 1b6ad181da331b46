"""Exact mid-epoch resume under DDP: the sampler's shards after a resume equal the rest of
the uninterrupted shards (for any kill step), and a 2-process gloo run killed mid-epoch
(SIGKILL to the launcher's process group) and resumed with ``ckpt_path=last`` ends with the
weights, metrics and per-rank RNG states of an uninterrupted run."""

import math
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import TINY_RUN, metrics, train
from snn_lab.lit.callbacks import RankSeed
from snn_lab.lit.datamodule import ResumableShuffleSampler, steps_into_epoch


def _trainer(global_step=0, epoch=0, acc=1, batches=math.inf, world=1, rank=0):
    return SimpleNamespace(
        global_step=global_step,
        current_epoch=epoch,
        accumulate_grad_batches=acc,
        num_training_batches=batches,
        world_size=world,
        global_rank=rank,
    )


def _epoch(n, bs, world, rank, epoch, trainer=None):
    s = ResumableShuffleSampler(n, bs, seed=3, trainer=trainer, num_replicas=world, rank=rank)
    s.set_epoch(epoch)
    return list(s)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    bs=st.integers(1, 9),
    world=st.integers(1, 3),
    acc=st.integers(1, 3),
    epoch=st.integers(0, 3),
    data=st.data(),
)
def test_resumed_shards_are_the_rest_of_the_uninterrupted_ones(n, bs, world, acc, epoch, data):
    num_samples = math.ceil(n / world)
    batches = math.ceil(num_samples / bs)
    per_epoch = math.ceil(batches / acc)  # optimizer steps per epoch
    done = data.draw(st.integers(0, per_epoch), label="steps of this epoch done at the kill")
    full = [_epoch(n, bs, world, r, epoch) for r in range(world)]
    # DistributedSampler's contract: equal shard sizes, every index covered
    assert all(len(shard) == num_samples for shard in full)
    assert set().union(*map(set, full)) == set(range(n))
    if world == 1:
        assert full[0] == torch.randperm(n, generator=torch.Generator().manual_seed(3 * 100003 + epoch)).tolist()
    step = epoch * per_epoch + done
    for r in range(world):
        t = _trainer(step, epoch, acc, batches, world, r)
        resumed = _epoch(n, bs, world, r, epoch, t)
        skipped = done * acc * bs if done < per_epoch else 0  # at the epoch's end: a fresh epoch
        assert resumed == full[r][skipped:], (r, done)
        s = ResumableShuffleSampler(n, bs, seed=3, trainer=t, num_replicas=world, rank=r)
        s.set_epoch(epoch)
        list(s)
        s.set_epoch(epoch + 1)
        assert list(s) == _epoch(n, bs, world, r, epoch + 1)  # only the first pass skips


def test_epochs_differ_and_lightning_does_not_wrap_the_sampler():
    from torch.utils.data import DistributedSampler

    assert _epoch(40, 5, 2, 0, 0) != _epoch(40, 5, 2, 0, 1)
    assert not set(_epoch(40, 5, 2, 0, 1)) & set(_epoch(40, 5, 2, 1, 1))
    # Lightning leaves a DistributedSampler in place (and calls its set_epoch)
    assert isinstance(ResumableShuffleSampler(40, 5, num_replicas=2, rank=1), DistributedSampler)
    with pytest.raises(ValueError):
        ResumableShuffleSampler(40, 5, num_replicas=2, rank=2)


def test_steps_into_epoch_uses_limit_train_batches_and_ceil_for_accumulation():
    assert steps_into_epoch(None, 10) == 0
    assert steps_into_epoch(_trainer(0), 10) == 0
    assert steps_into_epoch(_trainer(13, epoch=1, batches=10), 10) == 3
    assert steps_into_epoch(_trainer(20, epoch=2, batches=10), 10) == 0
    assert steps_into_epoch(_trainer(7, epoch=1, batches=4), 10) == 3  # limit_train_batches=4
    assert steps_into_epoch(_trainer(5, epoch=1, acc=3, batches=10), 10) == 1  # 4 steps per epoch
    assert steps_into_epoch(_trainer(5, epoch=0, batches=math.inf), math.inf) == 0


def test_rank_seed_keeps_the_restored_stream_only_when_resumed_mid_epoch():
    module = SimpleNamespace(hparams={"seed": 5})

    def draw(trainer):
        torch.manual_seed(123)
        RankSeed().on_train_epoch_start(trainer, module)
        return torch.rand(4)

    torch.manual_seed(123)
    restored = torch.rand(4)
    assert torch.equal(draw(_trainer(13, epoch=1, batches=10, world=2, rank=1)), restored)
    at_boundary = draw(_trainer(10, epoch=1, batches=10, world=2, rank=1))
    assert not torch.equal(at_boundary, restored)
    assert torch.equal(at_boundary, draw(_trainer(0, epoch=1, batches=10, world=2, rank=1)))


# -- end to end: 2 gloo processes, killed mid-epoch, resumed -----------------------------
# 400 images / 2 ranks / batch 25 = 8 steps per epoch, 2 epochs; bernoulli encoder and
# dropout, so both per-rank random streams matter; a checkpoint after every step.
# Three 2-process runs: about 60 s on 2 shared cores.
ARGS = [
    *TINY_RUN,
    "trainer=ddp",
    "target.threads=1",
    "data.batch_size=25",
    "trainer.max_epochs=2",
    "model.dropout=0.1",
    "trainer.deterministic=true",
    "callbacks.every_n_train_steps=1",
]
STEPS_PER_EPOCH = 8


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _ckpt_step(path):
    try:
        return _load(path)["global_step"]
    except Exception:
        return None


@pytest.mark.slow  # two 2-process trainings and a kill (about a minute): run with -m slow
def test_ddp_kill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    ref = train([*ARGS, "hydra.run.dir=ref"], tmp_path, timeout=400)
    assert ref.returncode == 0, (ref.stdout + ref.stderr)[-3000:]

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snn_lab.train", *ARGS, "hydra.run.dir=killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: rank 0 (the launcher) and rank 1
    )
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    killed_at = None
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            step = _ckpt_step(last) if last.exists() else None
            # the second epoch, mid-way
            if step is not None and STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH - 2:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_at is not None, "the run finished (or stalled) before it could be killed mid-epoch"
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = train([*ARGS, "ckpt_path=last", "hydra.run.dir=killed"], tmp_path, timeout=400)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    a, b = metrics(tmp_path / "ref"), metrics(tmp_path / "killed")
    assert a["world_size"] == b["world_size"] == 2
    for key in ("best_val_acc", "final_val_acc", "test_acc", "epochs", "global_step"):
        assert a[key] == b[key], (key, a[key], b[key], killed_at)
    ca, cb = _load(tmp_path / "ref" / "checkpoints" / "last.ckpt"), _load(last)
    assert ca["global_step"] == cb["global_step"] == 2 * STEPS_PER_EPOCH
    wa = {k: v for k, v in ca["state_dict"].items() if k.startswith("net.")}
    wb = {k: v for k, v in cb["state_dict"].items() if k.startswith("net.")}
    assert wa.keys() == wb.keys()
    for k, w in wa.items():
        assert torch.equal(w, wb[k]), (k, killed_at)
    # every rank's random streams ended where the uninterrupted run's did
    assert len(ca["rank_rng_states"]) == len(cb["rank_rng_states"]) == 2
    for ra, rb in zip(ca["rank_rng_states"], cb["rank_rng_states"]):
        for k in ("encoder_rng_state", "torch_rng_state"):
            assert torch.equal(ra[k], rb[k]), (k, killed_at)
    assert not torch.equal(*(s["encoder_rng_state"] for s in ca["rank_rng_states"]))  # per-rank streams

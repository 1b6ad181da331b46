"""``trainer=ddp``: 2 CPU processes (gloo) through the CLI, under Hydra, on a tiny subset."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from helpers import TINY_RUN, metrics, train
from snn_lab.lit import MNISTDataModule
from snn_lab.lit.callbacks import RankSeed
from snn_lab.models import load_network

# encoder=direct: no encoder randomness, so the synced accuracies can be recomputed here
DDP = [*TINY_RUN, "trainer=ddp", "encoder=direct", "target.threads=1"]


def _tb_scalar(run, tag) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return acc.Scalars(tag)[-1].value


def _as_the_ranks_did(ckpt, dataset, world_size=2) -> tuple[float, float]:
    """Accuracy over the whole set and layer 0's firing rate averaged over the ranks,
    evaluated like the ranks did: rank r gets samples r, r + world_size, ...
    (DistributedSampler without shuffling) in one batch, 1 thread."""
    net = load_network(ckpt)
    images, labels = dataset.tensors
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    correct, rates = 0, []
    try:
        with torch.no_grad():
            for r in range(world_size):
                scores, rec = net(images[r::world_size].float().div(255), return_record=True)
                correct += int((scores.argmax(1) == labels[r::world_size]).sum())
                rates.append(rec.firing_rates()[0])
    finally:
        torch.set_num_threads(threads)
    return correct / len(labels), sum(rates) / world_size


def test_ddp_two_cpu_processes_shard_data_sync_metrics_and_write_once(tmp_path):
    r = train(DDP, tmp_path, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "distributed_backend=gloo" in out and "Starting with 2 processes" in out
    # one run dir (the child ran in rank 0's timestamped dir, not a new one), one summary line
    runs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert r.stdout.count("snn_lab: test/acc=") == 1
    assert (run / "train_ddp_process_1.log").exists()  # rank 1's Hydra log, same dir
    assert "job:\n    name: train\n" in (run / ".hydra" / "hydra.yaml").read_text()  # rank 0's
    m = metrics(run)
    assert m["world_size"] == 2
    # DistributedSampler: 400 training images / 2 ranks / batch 200 = 1 step per epoch
    assert m["global_step"] == 1 and m["epochs"] == 1
    # torchmetrics sync: the logged accuracies are over all 200 images, both ranks' halves
    dm = MNISTDataModule(train_subset=400, eval_subset=200, val_split=200)
    dm.setup()
    val_acc, val_rate = _as_the_ranks_did(run / "checkpoints" / "last.ckpt", dm.val_set)
    test_acc, _ = _as_the_ranks_did(run / "checkpoints" / "best.ckpt", dm.test_set)
    assert m["final_val_acc"] == pytest.approx(val_acc, abs=1e-6)
    assert m["test_acc"] == pytest.approx(test_acc, abs=1e-6)
    # firing rates are averaged over the ranks too, not rank 0's half alone
    assert _tb_scalar(run, "rates/layer0") == pytest.approx(val_rate, abs=1e-6)


def test_rank_seed_gives_each_rank_its_own_stream_only_under_ddp():
    module = SimpleNamespace(hparams={"seed": 5})

    def draw(rank, world, epoch=0):
        torch.manual_seed(123)
        RankSeed().on_train_epoch_start(
            SimpleNamespace(world_size=world, global_rank=rank, current_epoch=epoch), module
        )
        return torch.rand(4)

    torch.manual_seed(123)
    untouched = torch.rand(4)
    assert torch.equal(draw(0, 1), untouched)  # single process: the seed_everything stream as is
    assert not torch.equal(draw(0, 2), draw(1, 2))
    assert torch.equal(draw(1, 2), draw(1, 2))  # reproducible
    assert not torch.equal(draw(1, 2, epoch=0), draw(1, 2, epoch=1))


def test_child_command_is_the_job_not_the_sweep(tmp_path, monkeypatch, compose_cfg):
    """A DDP child re-runs the job it belongs to: that job's task overrides (not the sweep
    lists of sys.argv), in that job's output dir, as a single run."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from snn_lab.lit.ddp import hydra_child_command

    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "neuron.vth=0.3,0.5", "time_steps=4"])
    cfg = compose_cfg(["neuron.vth=0.5", "time_steps=4"], return_hydra_config=True)
    job_dir = tmp_path / "it's a sweep" / "1"
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(job_dir)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.name = "train"
    HydraConfig.instance().set_config(cfg)
    try:
        cmd, cwd = hydra_child_command(1)
    finally:
        HydraConfig.instance().cfg = None
    assert cmd[:3] == [sys.executable, "-m", "snn_lab.train"] and cwd == str(tmp_path)
    assert cmd[3:5] == ["--config-name", "train"]
    assert cmd[5:7] == ["neuron.vth=0.5", "time_steps=4"] and "-m" not in cmd[3:]
    assert "hydra.mode=RUN" in cmd and "hydra.job.name=train_ddp_process_1" in cmd
    # the dir is quoted for Hydra's parser, quote included, and parses back unchanged
    from hydra.core.override_parser.overrides_parser import OverridesParser

    run_dir = next(c for c in cmd if c.startswith("hydra.run.dir="))
    assert OverridesParser.create().parse_override(run_dir).value() == str(job_dir)


@pytest.mark.slow
def test_ddp_inside_a_multirun_relaunches_for_every_job(tmp_path):
    r = train(["-m", "neuron.vth=0.3,0.5", *DDP, "hydra.sweep.dir=sweep"], tmp_path, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    for job in ("0", "1"):
        assert metrics(tmp_path / "sweep" / job)["world_size"] == 2
        assert (tmp_path / "sweep" / job / "train_ddp_process_1.log").exists()
    assert len((tmp_path / "sweep" / "summary.csv").read_text().splitlines()) == 3
    assert not (tmp_path / "outputs").exists()  # no stray run dirs from the children


@pytest.mark.slow
def test_ranks_started_by_slurm_launch_nothing_and_rank0_writes(tmp_path):
    """What srun does under hydra/launcher=slurm_ddp: start every rank with SLURM_* set."""
    procs = []
    for rank in (0, 1):
        env = dict(
            os.environ,
            PYTHONWARNINGS="ignore",
            SLURM_NTASKS="2",
            SLURM_NTASKS_PER_NODE="2",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NODEID="0",
            SLURM_JOB_ID="4242",
            SLURM_JOB_NAME="train",
            SLURM_NODELIST="localhost",
            SLURM_JOB_NUM_NODES="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "snn_lab.train", *DDP, "hydra.run.dir=run"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "snn_lab: test/acc=" in outs[0] and "snn_lab: test/acc=" not in outs[1]
    assert "DDP: starting local rank" not in outs[0] + outs[1]
    m = metrics(tmp_path / "run")
    assert m["world_size"] == 2 and m["global_step"] == 1

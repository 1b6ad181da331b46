"""``ckpt_path=auto`` on a multirun: a rerun of the same sweep command in the same sweep
dir completes the unfinished jobs (from their ``last.ckpt`` when they have one) and
leaves the finished ones untouched; the summary covers every job."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY_RUN, metrics, train

SWEEP = ["-m", "neuron.vth=0.3,0.5", *TINY_RUN, "trainer.deterministic=true", "print_config=false"]
# 200 training images (TINY_RUN's 400 less the 200 of the validation split) in batches of 10
KILL = [*SWEEP, "data.batch_size=10", "callbacks.every_n_train_steps=1"]
STEPS = 20
SAME = ("best_val_acc", "final_val_acc", "test_acc", "epochs", "global_step", "history")


def _files(job):
    """Every file of a job dir (but its log, which each attempt appends to) and its bytes."""
    return {p.relative_to(job): p.read_bytes() for p in sorted(job.rglob("*")) if p.is_file() and p.suffix != ".log"}


def _summary_jobs(sweep):
    return [line.split(",")[:2] for line in (sweep / "summary.csv").read_text().strip().splitlines()[1:]]


def test_auto_on_a_sweep_completes_unfinished_jobs_and_skips_finished_ones(tmp_path):
    # auto starts a job without last.ckpt afresh: allowed on a sweep (ckpt_path=last is not)
    first = train([*SWEEP, "ckpt_path=auto", "hydra.sweep.dir=sweep"], tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    sweep = tmp_path / "sweep"
    done = metrics(sweep / "1")
    finished = _files(sweep / "0")
    # job 1 "never ran": the rerun trains it; job 0 is reported, not retrained
    for p in sorted((sweep / "1").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    rerun = train([*SWEEP, "ckpt_path=auto", "hydra.sweep.dir=sweep"], tmp_path)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert out.count("already finished, skipped (ckpt_path=auto)") == 1
    assert _files(sweep / "0") == finished
    again = metrics(sweep / "1")
    for key in SAME:
        assert again[key] == done[key], key
    assert _summary_jobs(sweep) == [["0", "ok"], ["1", "ok"]]

    # without auto, the finished jobs are refused (and recorded), not retrained
    plain = train([*SWEEP, "hydra.sweep.dir=sweep"], tmp_path)
    assert plain.returncode == 1 and "2 of 2 job(s) failed" in plain.stderr, plain.stderr[-2000:]
    assert _files(sweep / "0").keys() - finished.keys() == {Path("failed.json")}


def _ckpt_step(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["global_step"]
    except Exception:
        return None


@pytest.mark.slow
def test_sweep_killed_mid_epoch_then_rerun_with_auto_equals_uninterrupted(tmp_path):
    ref = train([*KILL, "hydra.sweep.dir=ref"], tmp_path)
    assert ref.returncode == 0, (ref.stdout + ref.stderr)[-3000:]

    env = dict(os.environ, PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snn_lab.train", *KILL, "hydra.sweep.dir=killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = tmp_path / "killed" / "1" / "checkpoints" / "last.ckpt"
    killed_at = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        step = _ckpt_step(last) if last.exists() else None
        if step is not None and 2 <= step <= STEPS - 5:  # job 1, mid-epoch
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = step
            break
        time.sleep(0.01)
    assert killed_at is not None, "the sweep finished (or stalled) before job 1 could be killed mid-epoch"
    killed = tmp_path / "killed"
    assert (killed / "0" / "metrics.json").exists() and not (killed / "1" / "metrics.json").exists()
    finished = _files(killed / "0")

    rerun = train([*KILL, "ckpt_path=auto", "hydra.sweep.dir=killed"], tmp_path)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert "ckpt_path=auto: resuming from" in out and "already finished, skipped" in out
    assert _files(killed / "0") == finished
    for job in ("0", "1"):
        a, b = metrics(tmp_path / "ref" / job), metrics(killed / job)
        for key in SAME:
            assert a[key] == b[key], (job, key, a[key], b[key], killed_at)
    assert _summary_jobs(killed) == [["0", "ok"], ["1", "ok"]]

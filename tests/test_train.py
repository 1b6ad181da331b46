"""The train CLI end to end, in subprocesses as a user runs it."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import QUIET, TINY_RUN, metrics, run_script, train
from snn_lab.lit import SNNLitModule
from snn_lab.models import load_network

# Bad overrides (wrong type, range, unknown option) are covered by test_bad_inputs.py.


def test_fast_dev_run(tmp_path):
    r = train(["trainer.fast_dev_run=true", "time_steps=3", *QUIET, "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "snn_lab: test/acc=" in r.stdout and "run_dir=" in r.stdout


def test_short_real_training_reaches_sanity_accuracy_and_writes_outputs(tmp_path):
    r = train(
        [
            "data.train_subset=3000",
            "data.eval_subset=1000",
            "data.val_split=1000",
            "trainer.max_epochs=2",
            "time_steps=8",
            "model.hidden=[128]",
            *QUIET,
            "hydra.run.dir=run",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    m = metrics(run)
    assert m["test_acc"] > 0.7 and m["best_val_acc"] > 0.7, m  # chance is 0.1
    assert m["epochs"] == 2 and len(m["history"]) == 2 and m["train_samples_per_second"] > 0
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "checkpoints" / "best.ckpt").exists()
    assert (run / ".hydra" / "config.yaml").exists()
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for ev in events:
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/loss_epoch", "train/acc", "val/acc", "val/loss", "test/acc", "rates/layer0", "lr-SGD"} <= tags, tags
    # the checkpoint rebuilds the whole network by itself, loaded weights-only
    lit = SNNLitModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True)
    net = load_network(run / "checkpoints" / "best.ckpt")
    x = torch.rand(5, 8, 784).round()
    assert torch.equal(lit.net.eval().forward_spikes(x), net.forward_spikes(x))


def test_multirun_two_jobs_and_summary(tmp_path):
    r = train(["-m", "neuron.vth=0.3,0.5", *TINY_RUN, "hydra.sweep.dir=sweep"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert metrics(sweep / "0")["best_val_acc"] is not None and metrics(sweep / "1")["test_acc"] is not None
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "neuron.vth=0.3" in summary[1] + summary[2]
    assert "neuron.vth=0.5" in (sweep / "summary.md").read_text()


def test_resume_from_last_checkpoint(tiny_run_copy, tmp_path):
    run = tiny_run_copy  # a finished TINY_RUN at tmp_path / "run"
    first = metrics(run)
    # a finished run is not overwritten by accident
    again = train([*TINY_RUN, "hydra.run.dir=run"], tmp_path)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    assert metrics(run) == first
    r = train([*TINY_RUN, "trainer.max_epochs=2", "ckpt_path=last", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = metrics(run)
    assert m["epochs"] == 2 and m["global_step"] == 2 * first["global_step"]
    assert [h["epoch"] for h in m["history"]] == [1]  # only the resumed epoch ran


def test_last_checkpoint_is_the_last_epoch_even_when_it_did_not_improve(tmp_path):
    """last.ckpt holds the final epoch (what a resume continues and a final-epoch recipe
    tests and deploys), not the best one. Lightning alone rewrites it only along with an
    improved best.ckpt; here the weights barely move, so validation never improves after
    epoch 0."""
    args = ["trainer.max_epochs=3", "optimizer.lr=1e-12", "encoder=direct"]  # direct: the same val scores
    r = train([*TINY_RUN, *args, "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = metrics(tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    best = torch.load(ckpts / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0 and m["best_val_acc"] == m["final_val_acc"]  # no later epoch improved
    assert (last["epoch"], last["global_step"]) == (2, m["global_step"])


def test_resume_with_other_architecture_is_refused(tiny_run_copy, tmp_path):
    r = train([*TINY_RUN, "model.hidden=[32]", "trainer.max_epochs=2", "ckpt_path=last", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 2 and "another network" in r.stderr and "model" in r.stderr
    assert metrics(tiny_run_copy)["epochs"] == 1


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("sparse", marks=pytest.mark.slow)])
def test_train_then_deploy_in_one_command(backend, tmp_path):
    """train ... deploy=<backend>: one command trains, deploys and verifies."""
    r = train([*TINY_RUN, f"deploy={backend}", "deploy_batch_size=28", "hydra.run.dir=run"], tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = metrics(tmp_path / "run")
    report = json.loads((tmp_path / "run" / "deploy" / "deploy_report.json").read_text())
    assert report["backend"] == m["deploy"]["backend"] == backend and report["batch_size"] == 28
    assert m["deploy"]["agreement"] == report["agreement"] >= 0.999
    assert Path(m["deploy"]["report_path"]).is_file()
    assert abs(report["eager_accuracy"] - m["test_acc"]) < 0.05  # same network, other spikes


def test_a_run_validated_on_the_test_set_reports_its_final_epoch(tmp_path):
    """data.val_split=0 (the reference tutorial's protocol): no checkpoint is selected on
    the test set; test_acc is the final epoch's weights, metrics.json says so. The direct
    encoder is deterministic, so the test pass equals the last validation pass."""
    args = [*TINY_RUN, "data.val_split=0", "trainer.max_epochs=2", "encoder=direct", "hydra.run.dir=run"]
    r = train(args, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = metrics(tmp_path / "run")
    assert m["selection"]["weights"] == "final" and m["selection"]["validated_on"] == "test set"
    assert m["checkpoints"]["selected"] == m["checkpoints"]["last"]
    assert m["test_acc"] == pytest.approx(m["history"][-1]["val_acc"], abs=1e-6)
    assert "(final epoch: validated on the test set)" in r.stdout


def test_a_run_with_held_out_data_reports_its_best_checkpoint(tiny_run):
    m = metrics(tiny_run)
    assert m["selection"]["weights"] == "best" and "200 held-out training samples" in m["selection"]["validated_on"]
    assert m["checkpoints"]["selected"] == m["checkpoints"]["best"]
    host = m["host"]  # what the wall times were measured on
    assert host["cpu_count"] >= 1 and host["torch_threads"] >= 1 and host["torch"]
    assert len(host["loadavg_1m"]) == 2 and all(x >= 0 for x in host["loadavg_1m"])


def test_engine_options_come_from_the_config(tiny_run, tmp_path):
    """engine.* reaches the multi-step engine: Bernoulli draws in the kernel are another
    random stream, so the same seed trains other weights than tiny_run's torch draws;
    metrics.json records the options. A bad value fails at startup naming the key."""
    r = train([*TINY_RUN, "engine.bernoulli=kernel", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert metrics(tmp_path / "run")["engine"]["bernoulli"] == "kernel"
    assert metrics(tiny_run)["engine"]["bernoulli"] == "torch"
    ours = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    theirs = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert ours.keys() == theirs.keys() and any(not torch.equal(ours[k], theirs[k]) for k in ours)
    bad = train([*TINY_RUN, "engine.bernoulli=quantum", "hydra.run.dir=bad"], tmp_path)
    assert bad.returncode != 0 and "engine.bernoulli='quantum' is unknown" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()


def test_plot_results_aggregates_seeds_into_one_row(tiny_run, tmp_path):
    """experiments/plot_results.py: one row per recipe over its seeds (mean, sample std,
    min), the selection rule and machine read from each run, and the curves PNG."""
    runs = []
    for i, acc in enumerate((0.90, 0.92, 0.97)):  # three 'seeds' of a real run's metrics.json
        run = tmp_path / f"s{i}"
        shutil.copytree(tiny_run, run)
        m = metrics(run)
        m["test_acc"] = acc
        (run / "metrics.json").write_text(json.dumps(m))
        runs.append(str(run))
    r = run_script("experiments/plot_results.py", [f"tiny={','.join(runs)}", "--out", str(tmp_path / "out")])
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(line for line in r.stdout.splitlines() if line.startswith("| tiny |"))
    assert "| 3 | **93.00 +- 3.61%** | 90.00% |" in row  # std of 90, 92, 97 (n-1): 3.606
    assert "best on 200 held-out training samples" in row and metrics(tiny_run)["host"]["cpu"] in row
    assert (tmp_path / "out" / "results_curves.png").stat().st_size > 0
    r3 = run_script(
        "experiments/plot_results.py", [f"tiny={','.join(runs)}", "--out", str(tmp_path / "out3"), "--decimals", "3"]
    )
    assert "| 3 | **93.000 +- 3.606%** | 90.00% |" in r3.stdout
    bad = run_script("experiments/plot_results.py", [f"tiny={tmp_path / 'nothing'}", "--out", str(tmp_path)])
    assert bad.returncode != 0 and "metrics.json does not exist" in bad.stderr


def test_weight_ema_is_what_is_validated_checkpointed_and_tested(tmp_path):
    """callbacks.ema_decay: best.ckpt's state_dict holds the averaged weights (the raw ones
    ride along for resuming), and the run's test accuracy is the averaged weights' (what
    snn-eval of best.ckpt gives), not the raw weights Lightning's callback would restore."""
    args = [*TINY_RUN, "trainer.max_epochs=2", "encoder=direct", "callbacks.ema_decay=0.9"]
    r = train([*args, "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = metrics(tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, weights_only=True)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if averaged[k].is_floating_point())
    ev = train(["train=false", f"ckpt_path={best}", "data.eval_subset=200", *QUIET, "hydra.run.dir=ev"], tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert metrics(tmp_path / "ev")["test_acc"] == pytest.approx(m["test_acc"], abs=1e-9)
    bad = train([*args, "callbacks.ema_decay=1.5", "hydra.run.dir=bad"], tmp_path)
    assert bad.returncode != 0 and "callbacks.ema_decay" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()


def test_weight_ema_decay_warms_up_and_copies_integer_buffers():
    from snn_lab.lit.callbacks import _ema_with_warmup

    average = _ema_with_warmup(0.999)
    zero, one = torch.zeros(3), torch.ones(3)
    # n = 0: decay (1 + 0) / (10 + 0) = 0.1, so the average moves 90% of the way
    assert torch.allclose(average(zero, one, torch.tensor(0)), torch.full((3,), 0.9))
    # n = 1000: (1001 / 1010) < 0.999 still warms up; n = 10**6: the configured 0.999
    assert torch.allclose(average(zero, one, torch.tensor(1000)), torch.full((3,), 1 - 1001 / 1010))
    assert torch.allclose(average(zero, one, torch.tensor(10**6)), torch.full((3,), 0.001))
    count = average(torch.tensor(5), torch.tensor(550), torch.tensor(7))  # num_batches_tracked
    assert count.dtype == torch.int64 and int(count) == 550

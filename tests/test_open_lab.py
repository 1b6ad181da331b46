"""Bring-your-own parts from the command line, as a user runs them (subprocesses): several
loggers at once with their real files, evaluation without training, the config tree,
the paths group, and one-line errors for bad parts that leave nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import QUIET, TINY_RUN, metrics, run_cli, train


def _digest(run: Path) -> dict:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.suffix != ".log"
    }


def wandb_records(run_file: Path) -> list:
    """The records of a W&B offline ``run-*.wandb`` file: a LevelDB-style log (32 KiB
    blocks; each chunk: crc32 u32, length u16, type u8) of ``wandb_internal_pb2.Record``
    protobufs after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    buf, pos, block, records, partial = run_file.read_bytes(), 7, 32768, [], b""
    assert buf[:4] == b":W&B", "not a W&B run file"
    while pos + 7 <= len(buf):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", buf[pos : pos + 7])
        data, pos = buf[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        if kind in (1, 4):  # full, last
            rec = pb.Record()
            rec.ParseFromString(partial + data)
            records.append(rec)
            partial = b""
        else:  # first, middle
            partial += data
    return records


def test_four_loggers_at_once_each_get_config_metrics_and_tags(tmp_path):
    r = train(
        [
            *TINY_RUN,
            "logger=[tensorboard,csv,wandb,mlflow]",
            "tags=[tiny,ci]",
            "trainer.limit_train_batches=1",
            "hydra.run.dir=run",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    m = metrics(run)
    assert m["tags"] == ["tiny", "ci"]
    assert m["global_step"] == 1  # limit_train_batches=1 is one batch (an int stays an int)
    assert "├── neuron" in r.stdout and "vth: 0.4" in r.stdout  # the config tree, printed at start
    test_acc = m["test_acc"]

    # TensorBoard: HPARAMS with the final metrics
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # CSV: the final metrics as columns, the config in hparams.yaml
    csv = (run / "csv" / "metrics.csv").read_text()
    assert "final/test_acc" in csv.splitlines()[0]
    assert "neuron.vth: 0.4" in (run / "csv" / "hparams.yaml").read_text()
    # MLflow: a real SQLite store the MLflow client (and `mlflow ui`) reads
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run}/mlflow.db")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("snn_lab").experiment_id])
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["neuron.vth"] == "0.4"
    assert mlrun.data.metrics["final/test_acc"] == pytest.approx(test_acc)
    # W&B offline: the run file holds the config, the tags and the final metrics
    (run_file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    config = {u.key: json.loads(u.value_json) for rec in records if rec.HasField("config") for u in rec.config.update}
    assert config["neuron.vth"] == 0.4
    tags = [list(rec.run.tags) for rec in records if rec.HasField("run")]
    assert tags == [["tiny", "ci"]]
    history = [
        (it.key or "/".join(it.nested_key), it.value_json)
        for rec in records
        if rec.HasField("history")
        for it in rec.history.item
    ]
    final = {key: json.loads(value) for key, value in history if key.startswith("final/")}
    assert final["final/test_acc"] == pytest.approx(test_acc)


def test_logger_none_paths_root_and_no_tree(tmp_path):
    root = tmp_path / "elsewhere"
    r = train([*TINY_RUN, "logger=none", "print_config=false", f"paths.root_dir={root}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = (root / "outputs" / "train" / "runs").iterdir()  # the paths group moved the outputs
    assert metrics(run)["test_acc"] is not None
    assert not (run / "tensorboard").exists() and not (tmp_path / "outputs").exists()
    assert "├── neuron" not in r.stdout


def snn_eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The ``snn-eval`` console script that ``pip install`` put next to this Python."""
    script = Path(sys.executable).with_name("snn-eval")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # ~30 s: kept out of .ci/run to hold it under 8 minutes on 2 cores
def test_snn_eval_gives_the_test_metrics_of_a_checkpoint(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoints" / "best.ckpt"
    trained = metrics(tiny_run)
    overrides = [f"ckpt_path={ckpt}", "data.eval_subset=200", "logger=csv", *QUIET]
    r = snn_eval([*overrides, "hydra.run.dir=eval"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = metrics(tmp_path / "eval")
    assert m["mode"] == "eval" and m["checkpoint"] == str(ckpt.resolve()) and m["time_steps"] == 4
    assert "snn_lab eval: test/acc=" in r.stdout
    assert "final/test_acc" in (tmp_path / "eval" / "csv" / "metrics.csv").read_text().splitlines()[0]
    # train=false on snn-train is the same job, and evaluation is deterministic
    r = train(["train=false", *overrides, "hydra.run.dir=again"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert metrics(tmp_path / "again")["test_acc"] == m["test_acc"]
    # the same weights on the same 200 test images: the encoder draws differ from the
    # training run's final test (its generator had advanced), the accuracy barely
    assert abs(m["test_acc"] - trained["test_acc"]) <= 0.1
    # time_steps on the command line changes the network's T (`python -m snn_lab.eval`,
    # the same command as the console script, run from the tests' zygote)
    r = run_cli(
        "snn_lab.eval",
        [f"ckpt_path={ckpt}", "time_steps=6", "data.eval_subset=200", "logger=none", *QUIET, "hydra.run.dir=t6"],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert metrics(tmp_path / "t6")["time_steps"] == 6


def test_snn_eval_refuses_a_missing_checkpoint_in_one_line(tmp_path):
    r = run_cli("snn_lab.eval", ["ckpt_path=nope.ckpt", "hydra.run.dir=ev"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "nope.ckpt does not exist" in r.stderr and not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.name=imagenet"], "data.name='imagenet' is unknown; accepted: mnist, fashion_mnist"),
        (["+neuron._target_=my_lab.CubaLIF"], "neuron._target_='my_lab.CubaLIF': module 'my_lab' cannot be imported"),
        (["+logger.mine._target_=my_lab.Logger"], "logger.mine._target_='my_lab.Logger'"),
        (["+callbacks.extra.x._target_=collections.OrderedDict"], "callbacks.extra.x (collections.OrderedDict)"),
        (["+data._target_=pathlib.Path"], "data (pathlib.Path) built a PosixPath, not a LightningDataModule"),
        (
            ["+data._target_=snn_lab.lit.MNISTDataModule", "+data.bogus=3"],
            "data.bogus is not an argument of snn_lab.lit.MNISTDataModule",
        ),
        (["trainer.limit_train_batches=all"], "trainer.limit_train_batches='all' is invalid"),
    ],
)
def test_bad_parts_fail_in_one_line_and_leave_nothing(overrides, message, tmp_path):
    r = train([*TINY_RUN, *overrides, "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_a_bad_part_resuming_a_finished_run_writes_nothing_over_it(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _digest(run)
    r = train([*TINY_RUN, "ckpt_path=last", "+logger.bad._target_=my_lab.Logger", f"hydra.run.dir={run}"], tmp_path)
    assert r.returncode == 2 and "logger.bad._target_" in r.stderr, r.stderr[-2000:]
    assert _digest(run) == before

"""``python -m snn_lab.deploy`` as a user runs it (subprocesses), on a real checkpoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from helpers import QUIET, run_cli, train

CONF = str(Path(__file__).resolve().parents[1] / "conf")
FAST = ["num_samples=70", "latency_samples=5", "warmup=1", "eager_batch_size=70", "threads=1"]


def deploy(args, cwd, timeout=300):
    return run_cli("snn_lab.deploy", args, cwd, timeout)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A training checkpoint in the format the train CLI writes (hparams + state_dict),
    built in-process from the composed train config of a small network."""
    from hydra import compose, initialize_config_dir

    from snn_lab.config import register_configs
    from snn_lab.config.build import net_config
    from snn_lab.lit.module import SNNLitModule

    register_configs()
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("train", overrides=["model.hidden=[64]", "time_steps=8"])
    net = net_config(cfg)
    torch.manual_seed(0)
    lit = SNNLitModule(net=net)
    for name, p in lit.net.named_parameters():
        if name.endswith("weight"):
            p.data.mul_(3.0)  # untrained but spiking
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": lit.state_dict(), "hyper_parameters": {"net": net}}, path)
    return path


def test_deploy_cli_writes_a_verified_report(ckpt, tmp_path):
    r = deploy([f"ckpt_path={ckpt}", "backend=onnxruntime", "batch_size=7", *FAST, "hydra.run.dir=out"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "out" / "deploy_report.json").read_text())
    assert rep["backend"] == "onnxruntime" and rep["batch_size"] == 7 and rep["samples"] == 70
    assert rep["agreement"] == 1.0 and rep["verified"] and rep["throughput"] > 0
    assert rep["latency_ms"]["batch1"]["p50"] > 0
    assert Path(rep["artifacts"]["onnx"]).is_file()
    assert "samples/s" in r.stdout and "agreement 100.000%" in r.stdout and "report:" in r.stdout


def test_deploy_cli_sparse_backend_options_from_the_command_line(ckpt, tmp_path):
    r = deploy(
        [
            f"ckpt_path={ckpt}",
            "backend=sparse",
            "backend.options.threads=1",
            "batch_size=14",
            *FAST,
            "latency_batch1=false",
            "hydra.run.dir=out",
        ],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "out" / "deploy_report.json").read_text())
    assert rep["backend_info"]["threads"] == 1 and rep["device_encoding"] and rep["agreement"] == 1.0
    assert rep["latency_ms"]["batch1"] is None


@pytest.mark.parametrize(
    "args,needle",
    [
        (["backend=tensorrt"], "onnxruntime"),  # Hydra lists backend/*.yaml
        (["target=apu"], "lyngor"),  # lynxi without the SDK
        (["ckpt_path=/nonexistent/best.ckpt"], "does not exist"),
    ],
)
def test_deploy_cli_rejects_with_one_line_errors(ckpt, tmp_path, args, needle):
    base = [f"ckpt_path={ckpt}", "hydra.run.dir=out", *FAST]
    r = deploy(base + args, tmp_path)
    assert r.returncode != 0
    assert needle in r.stderr + r.stdout, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "deploy_report.json").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["backend=custom", "backend.name=tensorrt"], "available: "),  # registry lists all backends
        (["backend=lynxi", "batch_size=5"], "1, 2, 4, 7, 14, 28"),
        (["target=apu", "batch_size=3"], "1, 2, 4, 7, 14, 28"),
        (["ckpt_path=null"], "ckpt_path is required"),
    ],
)
def test_deploy_config_errors_in_process(ckpt, tmp_path, args, needle):
    """The same composition as the CLI, without a subprocess per case."""
    from hydra import compose, initialize_config_dir

    from snn_lab.cli.deploy import run
    from snn_lab.deploy import DeployError

    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("deploy", overrides=[f"ckpt_path={ckpt}", f"out_dir={tmp_path}", *FAST, *args])
    with pytest.raises(DeployError, match=re.escape(needle)):
        run(cfg)
    assert not (tmp_path / "deploy_report.json").exists()


def test_target_apu_selects_lynxi_and_backend_group_wins():
    from hydra import compose, initialize_config_dir

    from snn_lab.cli.deploy import backend_from_config

    with initialize_config_dir(CONF, version_base="1.3"):
        assert backend_from_config(compose("deploy", overrides=["target=apu"]))[0] == "lynxi"
        assert backend_from_config(compose("deploy"))[0] == "onnxruntime"
        name, opts = backend_from_config(compose("deploy", overrides=["target=apu", "backend=sparse"]))
        assert name == "sparse" and opts["threads"] == 2
        assert backend_from_config(compose("deploy", overrides=["target=cpu"]))[1]["input_dtype"] == "auto"


@pytest.mark.slow
def test_train_then_deploy_one_flow(tmp_path):
    """train ... deploy=<backend>: one command trains, deploys and verifies (lead's wiring)."""
    r = train(
        [
            "data.train_subset=400",
            "data.eval_subset=200",
            "data.val_split=200",
            "trainer.max_epochs=1",
            "time_steps=4",
            "model.hidden=[64]",
            "deploy=sparse",
            "deploy_batch_size=28",
            *QUIET,
            "hydra.run.dir=run",
        ],
        tmp_path,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["deploy"]["agreement"] >= 0.999 and m["deploy"]["backend"] == "sparse"
    assert Path(m["deploy"]["report_path"]).is_file()

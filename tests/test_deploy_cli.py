"""``python -m snn_lab.deploy`` as a user runs it (subprocesses), on a real checkpoint."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from helpers import deploy
from snn_lab.config import schema as S

FAST = ["num_samples=70", "latency_samples=5", "warmup=1", "eager_batch_size=70", "threads=1"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, compose_cfg):
    """A training checkpoint in the format the train CLI writes (hparams + state_dict),
    built in-process from the composed train config of a small network, untrained but
    with weights scaled up so that it spikes (a trained tiny run may barely spike)."""
    from snn_lab.config.build import net_config
    from snn_lab.lit.module import SNNLitModule

    net = net_config(compose_cfg(["model.hidden=[64]", "time_steps=8"]))
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
    passes = rep["throughput_passes"]  # the default: three timed passes, the median reported
    assert len(passes) == 3 and rep["throughput"] == sorted(passes)[1]
    assert rep["latency_ms"]["batch"]["n"] == 3 * 10  # every pass's batches
    assert rep["latency_ms"]["batch1"]["p50"] > 0
    assert Path(rep["artifacts"]["onnx"]).is_file()
    assert "samples/s" in r.stdout and "agreement 100.000%" in r.stdout and "report:" in r.stdout
    assert "target" not in r.stdout and "target" not in rep  # no built-in project goal in user output


@pytest.mark.slow  # about a minute of CLI runs on 2 cores; runs with -m slow
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
    assert rep["runtime"].startswith("feeder") or os.cpu_count() == 1  # one kernel thread: the pipeline
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


def test_deploy_cli_refuses_a_run_dir_that_links_nowhere(ckpt, tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    r = deploy([f"ckpt_path={ckpt}", "hydra.run.dir=out", *FAST], tmp_path)
    assert r.returncode == 2 and "is a symbolic link to a missing directory" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "gone").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["backend=custom", "backend.name=tensorrt"], "available: "),  # registry lists all backends
        (["backend=lynxi", "batch_size=5"], "1, 2, 4, 7, 14, 28"),
        (["target=apu", "batch_size=3"], "1, 2, 4, 7, 14, 28"),
        (["ckpt_path=null"], "ckpt_path is required"),
        (["passes=0"], "passes=0 is invalid"),
        (["passes=abc"], "passes='abc' is invalid"),
    ],
)
def test_deploy_config_errors_in_process(ckpt, tmp_path, args, needle, compose_cfg):
    """The same composition as the CLI, without a subprocess per case."""
    from snn_lab.cli.deploy_app import run
    from snn_lab.deploy import DeployError

    cfg = compose_cfg([f"ckpt_path={ckpt}", f"out_dir={tmp_path}", *FAST, *args], "deploy")
    with pytest.raises(DeployError, match=re.escape(needle)):
        run(cfg)
    assert not (tmp_path / "deploy_report.json").exists()


def test_target_apu_selects_lynxi_and_backend_group_wins(compose_cfg):
    from snn_lab.cli.deploy_app import backend_from_config

    def backend(*overrides):
        return backend_from_config(compose_cfg(overrides, "deploy"))

    assert backend("target=apu")[0] == "lynxi"
    assert backend()[0] == "onnxruntime"
    name, opts = backend("target=apu", "backend=sparse")
    assert name == "sparse" and opts["threads"] == 2
    # the target's backend without the group: the backend's own defaults (= its schema's)
    assert backend("target=cpu") == ("onnxruntime", {})
    name, opts = backend("backend=onnxruntime", "backend.options.providers=[CPUExecutionProvider]")
    assert opts["providers"] == ["CPUExecutionProvider"] and opts["opset"] == 18


BACKEND_SCHEMAS = [(n, c) for n, c in S._GROUP_SCHEMAS["backend"].items() if n != "backend"]


@pytest.mark.parametrize("name,conf", BACKEND_SCHEMAS, ids=[n for n, _ in BACKEND_SCHEMAS])
def test_backend_defaults_equal_their_schema(name, conf):
    """conf/backend/<name>.yaml is typed by its schema; what the Python API uses when an
    option is not given (the backend's default_options) is the same."""
    from omegaconf import OmegaConf

    from snn_lab.deploy import get_backend

    schema = OmegaConf.to_container(OmegaConf.structured(conf))
    assert schema["name"] == name
    assert get_backend(name).default_options == schema["options"]


def test_backend_options_are_typed_at_compose(compose_cfg):
    with pytest.raises(Exception, match=r"backend\.options\.opset|opset"):
        compose_cfg(["ckpt_path=x", "backend=onnxruntime", "backend.options.opset=abc"], "deploy")
    with pytest.raises(Exception, match="bogus"):
        compose_cfg(["ckpt_path=x", "backend=aoti", "backend.options.bogus=1"], "deploy")


def test_runtime_bench_script_alternates_both_runtimes_on_one_compiled_step(ckpt, capsys):
    import importlib.util

    from helpers import ROOT

    spec = importlib.util.spec_from_file_location("bench_deploy_runtime", ROOT / "experiments/bench_deploy_runtime.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(ckpt), "--batch", "14", "--rounds", "2", "--samples", "42"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"\d+", re.search(r"^threads +samples/s: (.*)$", out, re.M).group(1))) == 2
    assert re.search(r"^ratio calling thread / threads per round: \[[\d., ]+\], median [\d.]+$", out, re.M)
    assert "same predictions: True" in out
    assert mod.main(["/nonexistent/best.ckpt"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow  # four fresh processes, each importing torch: ~half a minute
def test_sparse_kernel_bench_script_compares_with_a_git_revision(ckpt, capsys):
    """experiments/bench_sparse_kernel.py builds the kernel of a revision (here HEAD, as
    committed) beside this checkout's and runs each in fresh processes, rounds alternating."""
    import importlib.util
    import subprocess

    from helpers import ROOT

    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("needs the git checkout")
    spec = importlib.util.spec_from_file_location("bench_sparse_kernel", ROOT / "experiments/bench_sparse_kernel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = [str(ckpt), "--against", "HEAD", "--batch", "14", "--samples", "42", "--passes", "1", "--threads", "1"]
    assert mod.main([*args, "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"\d+", re.search(r"^ +HEAD samples/s per round: (.*)$", out, re.M).group(1))) == 2
    assert re.search(r"^ratio this checkout / HEAD per round: \[[\d., ]+\], median [\d.]+$", out, re.M)
    assert "same scores: True" in out
    assert mod.main([str(ckpt), "--against", "no-such-revision"]) == 2
    assert "error:" in capsys.readouterr().err

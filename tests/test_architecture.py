"""The layering holds at run time: what importing a layer loads and changes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pytorch_lightning", "lightning", "lightning_fabric", "hydra", "omegaconf")


def _probe(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


LOW_LAYERS = ("snn_lab.engine", "snn_lab.models", "snn_lab.deploy", "snn_lab.data")


def test_low_layers_load_neither_lightning_nor_hydra():
    """One interpreter imports the low layers one after another and lists the heavy
    modules loaded after each: what any one layer loads is loaded by then, so this finds
    what a fresh interpreter per layer would (and names the first layer that loads it)."""
    code = f"""
import importlib, json, sys
loaded = {{}}
for m in {LOW_LAYERS!r}:
    importlib.import_module(m)
    loaded[m] = [h for h in {HEAVY!r} if h in sys.modules]
print(json.dumps(loaded))
"""
    loaded = _probe(code)
    assert list(loaded) == list(LOW_LAYERS)
    assert all(heavy == [] for heavy in loaded.values()), loaded


def test_a_checkpoint_deploys_without_the_training_stack(trained_tiny_ckpt):
    code = f"""
import json, sys
from snn_lab.models import load_network
net = load_network({str(trained_tiny_ckpt)!r})
print(json.dumps({{"layers": len(net.layers), "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    got = _probe(code)
    assert got["heavy"] == [] and got["layers"] >= 2


def test_importing_snn_lab_changes_no_process_state():
    # the third-party stack first: some of it sets variables and filters of its own
    code = """
import json, os, warnings, importlib, pkgutil
import torch, torchvision, torchmetrics, numpy, pytorch_lightning, lightning_fabric, hydra, omegaconf
from pytorch_lightning import callbacks, loggers, strategies
before_env, before_filters = dict(os.environ), list(warnings.filters)
import snn_lab
for m in pkgutil.walk_packages(snn_lab.__path__, "snn_lab."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
changed = sorted(k for k in set(os.environ) | set(before_env) if os.environ.get(k) != before_env.get(k))
print(json.dumps({"env": changed, "filters_added": len(warnings.filters) - len(before_filters)}))
"""
    got = _probe(code)
    assert got["env"] == [], got
    assert got["filters_added"] <= 0, got


@pytest.mark.parametrize(
    "override,needle",
    [
        ("neuron.vth=abc", "neuron.vth"),
        ("neuron.vht=0.4", "Key 'vht' not in 'LIFConf'"),
        ("time_steps=[1]", "time_steps"),
    ],
)
def test_a_bad_override_fails_before_torch_or_lightning_load(override, needle, tmp_path):
    """Hydra merges and type-checks the overrides against the schemas before the job
    imports the training stack: the one-line error comes without torch or Lightning."""
    code = f"""
import json, runpy, sys
sys.argv = ["snn_lab.train", {override!r}, "hydra.run.dir={tmp_path / "run"}"]
try:
    runpy.run_module("snn_lab.train", run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "loaded": [m for m in ("torch", "pytorch_lightning") if m in sys.modules]}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"code": 1, "loaded": []}, (got, out.stderr[-2000:])
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a rejected command line


@pytest.mark.parametrize("module", ["snn_lab", "snn_lab.cli", "snn_lab.bench"])
def test_entry_packages_load_no_torch_before_the_cli_sets_the_environment(module):
    """``python -m snn_lab.bench`` imports ``snn_lab.bench`` before its ``__main__``: torch
    (and OpenMP, which reads OMP_WAIT_POLICY once, when it loads) must not come with it."""
    assert _probe(f"import json, sys, {module}; print(json.dumps('torch' in sys.modules))") is False


def test_entry_functions_stay_callable_after_their_modules_load():
    """``snn_lab.cli.train`` etc. are the console-script functions; the Hydra apps they
    load live in ``*_app`` modules, so importing those never replaces the functions (a
    submodule named like the function would be bound over it on import)."""
    import snn_lab.cli.bench_app
    import snn_lab.cli.deploy_app
    import snn_lab.cli.train_app  # noqa: F401
    from snn_lab import cli

    for name in ("train", "evaluate", "deploy", "bench"):
        assert callable(getattr(cli, name)) and getattr(cli, name).__module__ == "snn_lab.cli", name

"""``python -m snn_lab.bench``: a tiny run end to end (no timing assertions)."""

import json

import pytest

from helpers import bench, run_script
from snn_lab.bench import BenchConfig, run, table
from snn_lab.bench import convnets as CN
from snn_lab.bench.runner import ConvBenchConfig
from snn_lab.engine import native

# the smallest bench config that exercises every stage (a BenchConfig's fields)
TINY_CONV = dict(train_batch=4, train_steps=1, infer_batches=[2], pretrain_steps=1)
TINY_BENCH = dict(
    time_steps=3,
    train_batch=8,
    train_steps=1,
    infer_batches=[1, 4],
    infer_min_samples=4,
    infer_min_batches=1,
    rounds=1,
    warmup=0,
    pretrain_steps=1,
    layer_repeats=1,
    agreement_batch=4,
    dataset="random",
    threads=None,
    peers=False,
    conv=ConvBenchConfig(**TINY_CONV),
)


def test_tiny_bench_in_process():
    res = run(BenchConfig(**TINY_BENCH))
    assert set(res["networks"]) == {"mlp", "conv", "conv_bernoulli"}
    mlp = res["networks"]["mlp"]
    assert set(mlp["contestants"]) == {"reference", "tutorial_code", "engine", "engine_kernel_rng"}
    assert mlp["agreement"]["tutorial_code"]["scores_identical"]
    assert [row["layer"] for row in mlp["layers"]] == [0, 1, 2]
    for name, net in res["networks"].items():
        for entry in net["contestants"].values():
            assert entry["train"]["samples_per_s"] > 0
            assert entry["saved_activation_bytes"] > 0
        assert net["ratios_vs_reference"]["reference"]["train"] == pytest.approx(1.0)
        eng = net["agreement"]["engine"]
        assert eng["spikes_compared"] > 0 and eng["spike_mismatches"] <= 1e-3 * eng["spikes_compared"]
        assert net["targets"]["engine_train_vs_reference_ge_" + ("5x" if name == "mlp" else "2.5x")]["ratio"] > 0
        dense_op = "matmul" if name == "mlp" else "conv"
        assert 0 <= eng[f"spike_mismatches_dense_{dense_op}"] <= 1e-3 * eng["spikes_compared"]
        if name != "mlp":
            assert net["network"]["time_steps"] == CN.NETWORKS[name][0]
    others = res["machine"]["cpu_share_used_by_other_processes"]
    assert others is None or 0.0 <= others <= 1.0
    text = table(res)
    assert "network conv (T=4" in text and "network conv_bernoulli (T=20" in text and "engine" in text
    json.dumps(res)  # serialisable as is
    # the dense recheck's line says which of the two cases it found
    eng = res["networks"]["mlp"]["agreement"]["engine"]
    for n_dense, says in (
        (0, "the rest is float summation order"),
        (3, "the library rounds the all-steps matmuls differently"),
    ):
        eng["spike_mismatches_dense_matmul"] = n_dense
        assert f"({n_dense} with engine.matmul=dense, the per-step path's matmuls: {says}" in table(res)


def test_the_competition_warning_trusts_the_measured_cpu_share_over_the_load_average():
    from snn_lab.bench.runner import _competition_warning

    busy_box = {"cpu_count": 2, "loadavg_at_start": [0.2, 0.2, 0.2], "loadavg_1_5_15": [0.3, 0.2, 0.2]}
    # jobs stopped just before the run: a high load average, but nothing used the CPU
    stopped_jobs = {"cpu_count": 2, "loadavg_at_start": [3.5, 3.0, 2.0], "loadavg_1_5_15": [2.5, 2.8, 2.0]}
    assert _competition_warning({**stopped_jobs, "cpu_share_used_by_other_processes": 0.01}) == ""
    warn = _competition_warning({**busy_box, "cpu_share_used_by_other_processes": 0.45})
    assert "other processes used 45% of this machine's CPU" in warn and "unreliable" in warn
    # where /proc/stat is not there, the load average decides
    unmeasured = {**stopped_jobs, "cpu_share_used_by_other_processes": None}
    assert "load average 3.5 at start" in _competition_warning(unmeasured)
    assert _competition_warning({**busy_box, "cpu_share_used_by_other_processes": None}) == ""


def test_a_race_without_the_engine_contestant_starts_from_the_same_pretraining():
    """The shared starting weights are trained by the engine whether it races or not (the
    per-step reference cannot encode images on its own)."""
    res = run(BenchConfig(**{**TINY_BENCH, "networks": ["mlp"], "contestants": ["engine_kernel_rng"]}))
    mlp = res["networks"]["mlp"]
    assert set(mlp["contestants"]) == {"reference", "engine_kernel_rng"}
    assert mlp["agreement"]["engine_kernel_rng"]["scores_identical"]


def test_spikingjelly_runs_the_same_conv_network():
    """The peer's multi-step conv layers reproduce the per-step path's scores (eval mode,
    the shared weights), with direct and with Bernoulli input."""
    pytest.importorskip("spikingjelly")
    res = run(BenchConfig(**{**TINY_BENCH, "networks": ["conv", "conv_bernoulli"], "peers": True}))
    for net in res["networks"].values():
        assert "spikingjelly" in net["contestants"], net["skipped"]
        assert net["agreement"]["spikingjelly"]["max_abs_score_diff"] < 1e-4
        assert net["targets"]["engine_train_vs_spikingjelly_ge_1x"]["ratio"] > 0


def test_bench_conv_network_is_the_conv_mnist_recipe(compose_cfg):
    """The race's ``conv`` network is what ``experiment=conv_mnist`` trains."""
    from snn_lab.config.build import net_config
    from snn_lab.models import build_network

    recipe = build_network(net_config(compose_cfg(["experiment=conv_mnist"])))
    ours = CN.conv_network("conv", "layer")
    assert repr(ours) == repr(recipe)
    assert ours.time_steps == recipe.time_steps and type(ours.encoder) is type(recipe.encoder)
    assert ours.readout == recipe.readout
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in recipe.state_dict().items()}


def test_bench_cli_writes_bench_json(tmp_path):
    args = [
        f"{k}={json.dumps(v) if isinstance(v, list) else ('null' if v is None else v)}"
        for k, v in TINY_BENCH.items()
        if k != "conv"
    ] + [f"conv.{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in TINY_CONV.items()]
    proc = bench(
        [*args, "contestants=[engine]", "networks=[mlp,conv]", f"hydra.run.dir={tmp_path}"], tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "bench.json").read_text())
    assert set(res["networks"]) == {"mlp", "conv"}
    assert set(res["networks"]["mlp"]["contestants"]) == {"reference", "engine"}  # the reference always races
    assert "x)" in proc.stdout and "wrote" in proc.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_bench_rejects_bad_config():
    with pytest.raises(ValueError, match="contestant 'fastest' is unknown"):
        run(BenchConfig(**{**TINY_BENCH, "contestants": ["fastest"]}))
    with pytest.raises(ValueError, match="network 'resnet' is unknown"):
        run(BenchConfig(**{**TINY_BENCH, "networks": ["resnet"]}))
    with pytest.raises(ValueError, match="target='tpu' is unknown"):
        run(BenchConfig(**{**TINY_BENCH, "target": "tpu"}))
    with pytest.raises(ValueError, match="rounds=0 is invalid"):
        run(BenchConfig(**{**TINY_BENCH, "rounds": 0}))
    with pytest.raises(ValueError, match="train_batch=0 is invalid"):
        run(BenchConfig(**{**TINY_BENCH, "conv": ConvBenchConfig(**{**TINY_CONV, "train_batch": 0})}))


def test_the_mlp_step_profile_script_names_the_kernels():
    r = run_script("experiments/profile_mlp_step.py", ["--kernel-draws", "--warmup", "1", "--steps", "1"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "aten::mm" in r.stdout and "step:" in r.stdout
    if native.available():
        assert "tm_fwd" in r.stdout and "bernoulli_tmask" in r.stdout


def test_the_draws_script_times_both_and_checks_the_numbers(capsys):
    """experiments/bench_draws.py: torch's draws and the engine's, alternated, with the
    per-round ratios and the check that both give the same numbers and generator state."""
    import importlib.util
    import re

    from helpers import ROOT

    spec = importlib.util.spec_from_file_location("bench_draws", ROOT / "experiments/bench_draws.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--rounds", "2", "--repeat", "1", "--threads", "1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "ratios" in ln]
    assert len(lines) == 2
    for line in lines:
        assert re.search(r"ratios [\d.]+ [\d.]+ \(median [\d.]+x\); same numbers and generator state: True$", line)

"""Deploy stage: single-step graphs, load/save lowering, registry, backends' parity with
eager on the same spikes, the runtime, the report, and every way it should fail."""

from __future__ import annotations

import importlib.metadata
import json
import os
import textwrap
import threading

import numpy as np
import pytest
import torch

from snn_lab.deploy import (
    BackendUnavailableError,
    DeployError,
    LoadSaveStep,
    StepModule,
    UnknownBackendError,
    UnsupportedError,
    create_backend,
    get_backend,
    list_backends,
    register_backend,
    registry,
    run_deploy,
    state_slots,
)
from snn_lab.deploy.api import compile_step, load_images
from snn_lab.deploy.backends.base import Backend
from snn_lab.deploy.encoding import CounterDraws, mix32, sample_keys
from snn_lab.deploy.ops import graph_ops
from snn_lab.deploy.runtime import InputSource, Runtime, eager_reference
from snn_lab.deploy.step import export_program, trace_torchscript
from snn_lab.encoders import LatencyEncoder, build_encoder
from snn_lab.models import tutorial_network

T = 6  # the time steps of tiny_net (its default)


def eager_scores(net, images, ids, time_steps=T, seed=0):
    src = InputSource(net, seed, time_steps)
    with torch.no_grad():
        return net.forward_spikes(src.spike_train(images, ids)).numpy()


def run_compiled(compiled, net, images, ids, time_steps=T, seed=0):
    src = InputSource(net, seed, time_steps)
    steps, keys = src.step_inputs(compiled, images, ids)
    return compiled.run_batch(images, steps, keys, time_steps) / np.float32(time_steps)


# -- the step graphs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "neuron,readout",
    [("lif", "rate"), ("plif", "rate"), ("if", "rate"), ("alif", "rate"), ("lif_sub", "rate"), ("lif", "membrane")],
)
def test_step_module_reproduces_the_network_bit_for_bit(neuron, readout, tiny_net):
    net = tiny_net(neuron, readout)
    x = (torch.rand(T, 5, 1, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    ref, rec = net.forward_spikes(x, return_record=True)
    step = StepModule(net, "host")
    state = step.init_state(5)
    outs = []
    with torch.no_grad():
        for t in range(T):
            out, *state = step(x[t].to(torch.uint8), *state)
            outs.append(out)
    assert torch.equal(torch.stack(outs).sum(0) / T, ref)
    assert rec.firing_rates()[0] > 0.01  # the test network does spike


def test_graph_encoding_equals_host_encoding_on_the_same_draws(tiny_net, mnist_like):
    net = tiny_net()
    images, ids = mnist_like(6), np.arange(6)
    draws = CounterDraws(3, T)
    u = torch.from_numpy(draws.uniform(images.numpy(), ids))
    spikes = torch.from_numpy(draws.spikes(images.numpy(), ids, np.uint8))
    host, graph = StepModule(net, "host"), StepModule(net, "graph")
    sh, sg = host.init_state(6), graph.init_state(6)
    with torch.no_grad():
        for t in range(T):
            oh, *sh = host(spikes[t], *sh)
            og, *sg = graph(images, u[t], *sg)
            assert torch.equal(oh, og)
    assert all(torch.equal(a, b) for a, b in zip(sh, sg))


def test_state_slots_have_stable_keys(tiny_net):
    assert [s.key for s in state_slots(tiny_net())] == ["layers.0.v", "layers.1.v", "layers.2.v"]
    assert [s.key for s in state_slots(tiny_net("alif"))][:2] == ["layers.0.v", "layers.0.a"]
    assert [s.shape for s in state_slots(tutorial_network())] == [(512,), (512,), (10,)]


def test_loadsave_step_runs_like_the_explicit_step_and_resets(tiny_net):
    net = tiny_net()
    x = (torch.rand(T, 4, 1, 28, 28, generator=torch.Generator().manual_seed(2)) < 0.2).float()
    ls = LoadSaveStep(net, 4)
    with torch.no_grad():
        for _ in range(2):  # second pass checks reset()
            ls.reset()
            out = sum(ls(x[t]) for t in range(T)) / T
            assert torch.equal(out, net.forward_spikes(x))


def test_loadsave_graph_carries_load_and_save_ops_keyed_by_state(tiny_net):
    net = tiny_net()
    ls = LoadSaveStep(net, 2)
    example = ls.example_inputs(2)
    ts = trace_torchscript(ls, example)
    text = str(ts.graph)
    assert graph_ops(text) == {"state_load": 3, "state_save": 3, "state_sink": 1}
    for key in ("layers.0.v", "layers.1.v", "layers.2.v"):
        assert f'"{key}"' in text
    ep = export_program(ls, example)
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("snn_lab.state_load.default") == 3
    assert targets.count("snn_lab.state_save.default") == 3
    # the explicit lowering has none of them, and state as graph inputs/outputs instead
    explicit = trace_torchscript(StepModule(net), StepModule(net).example_inputs(2))
    assert graph_ops(str(explicit.graph)) == {"state_load": 0, "state_save": 0, "state_sink": 0}
    assert len(list(explicit.graph.inputs())) == 1 + 1 + 3  # self, x, 3 states


def test_state_ops_are_identity_on_cpu():
    t = torch.randn(3, 4)
    assert torch.equal(torch.ops.snn_lab.state_load(t, "k"), t)
    assert torch.equal(torch.ops.snn_lab.state_save(t, "k"), t)
    assert torch.equal(torch.ops.snn_lab.state_sink(t, [t]), t)


# -- encoding -----------------------------------------------------------------------------------


def test_counter_draws_are_batch_independent_and_bernoulli(mnist_like):
    images, ids = mnist_like(40, seed=5), np.arange(100, 140)
    d = CounterDraws(7, 20)
    full = d.spikes(images.numpy(), ids)
    part = d.spikes(images[10:11].numpy(), ids[10:11])
    assert np.array_equal(full[:, 10:11], part)
    u = d.uniform(images.numpy(), ids)
    assert np.array_equal((u < images.numpy()[None]).astype(np.float32), full)
    p = images.numpy()[None].repeat(20, 0)
    assert abs(full.mean() - p.mean()) < 0.01  # E[spike] = p
    assert np.all(u[:, images.numpy() == 0] == 1.0)
    assert mix32(np.array([0, 1], np.uint32)).dtype == np.uint32
    assert not np.array_equal(sample_keys(0, [1]), sample_keys(1, [1]))


# -- registry -------------------------------------------------------------------------------------


def test_registry_lists_builtins_and_rejects_unknown_names_listing_them(tmp_path, tiny_net):
    names = list_backends()
    assert {"eager", "torchscript", "onnxruntime", "nir", "sparse", "lynxi"} <= set(names)
    with pytest.raises(UnknownBackendError) as e:
        get_backend("tensorrt")
    assert "tensorrt" in str(e.value) and "onnxruntime" in str(e.value) and "sparse" in str(e.value)
    assert isinstance(e.value, ValueError)
    # the Python API refuses it the same way
    with pytest.raises(UnknownBackendError, match=r"available: .*eager"):
        run_deploy(tiny_net(), "tpu", 2, tmp_path)


def test_register_backend_decorator_and_duplicates():
    @register_backend("unit_test_backend")
    class Mine(get_backend("eager")):
        pass

    try:
        assert get_backend("unit_test_backend") is Mine and "unit_test_backend" in list_backends()
        with pytest.raises(ValueError, match="already registered"):
            register_backend("unit_test_backend")(type("Other", (Backend,), {}))
    finally:
        registry.unregister_backend("unit_test_backend")


def test_entry_point_plugin_backend_is_found(tmp_path, monkeypatch, tiny_net, mnist_like):
    (tmp_path / "fakechip_plugin.py").write_text(
        textwrap.dedent("""
        from snn_lab.deploy.backends.eager import EagerBackend
        class FakeChip(EagerBackend):
            name = "fakechip"
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint("fakechip", "fakechip_plugin:FakeChip", registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def fake(**kw):
        return [ep] if kw.get("group") == registry.ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    try:
        assert "fakechip" in list_backends()
        assert get_backend("fakechip").__name__ == "FakeChip"
        net = tiny_net()
        _, compiled, _ = compile_step(net, "fakechip", 3, tmp_path / "fc")
        images = mnist_like(3)
        assert np.array_equal(
            run_compiled(compiled, net, images, np.arange(3)), eager_scores(net, images, np.arange(3))
        )
    finally:
        registry.unregister_backend("fakechip")


def test_missing_toolchain_fails_at_startup_saying_what_to_install(tmp_path, tiny_net):
    class NeedsSdk(Backend):
        name = "needs_sdk"
        requires = ("surely_not_installed_sdk_xyz",)
        install_hint = "pip install surely-not-installed-sdk"

    with pytest.raises(BackendUnavailableError, match=r"surely_not_installed_sdk_xyz.*pip install surely-not"):
        NeedsSdk().check_available()
    with pytest.raises(BackendUnavailableError, match="C compiler"):
        create_backend("sparse").compile(
            StepModule(tiny_net()), StepModule(tiny_net()).example_inputs(2), str(tmp_path), cc="no-such-cc-xyz"
        )


def test_bad_batch_size_options_and_networks_fail_clearly(tmp_path, tiny_net):
    with pytest.raises(UnsupportedError, match="batch_size=0"):
        compile_step(tiny_net(), "eager", 0, tmp_path)
    with pytest.raises(UnsupportedError, match=r"no option.*bogus"):
        compile_step(tiny_net(), "onnxruntime", 2, tmp_path, backend_options={"bogus": 1})
    with pytest.raises(UnsupportedError, match="ALIF"):
        compile_step(tiny_net("alif"), "nir", 2, tmp_path)
    with pytest.raises(UnsupportedError, match="reset"):
        compile_step(tiny_net("lif_sub"), "sparse", 2, tmp_path)
    with pytest.raises(UnsupportedError, match="encode=graph"):
        compile_step(tiny_net(encoder=LatencyEncoder()), "onnxruntime", 2, tmp_path, encode="graph")
    with pytest.raises(UnsupportedError, match="does not support encode=graph"):
        compile_step(tiny_net(), "nir", 2, tmp_path, encode="graph")
    with pytest.raises(DeployError, match="unknown deploy option"):
        run_deploy(tiny_net(), "eager", 2, tmp_path, bogus=1)


# -- parity with eager, per backend ----------------------------------------------------------

CASES = [
    ("eager", "host"),
    ("eager", "graph"),
    ("torchscript", "host"),
    ("torchscript", "graph"),
    ("onnxruntime", "host"),
    ("onnxruntime", "graph"),
    ("nir", "host"),
    ("sparse", "host"),
    ("sparse", "graph"),
]


@pytest.mark.parametrize("backend,encode", CASES)
def test_deployed_predictions_equal_eager_on_the_same_spikes(backend, encode, tmp_path, tiny_net, mnist_like):
    net = tiny_net()
    B = 7
    _, compiled, _ = compile_step(net, backend, B, tmp_path, encode)
    images = mnist_like(2 * B, seed=11)
    for k in range(2):  # two batches: state must be reset in between
        ids = np.arange(k * B, (k + 1) * B)
        img = images[k * B : (k + 1) * B]
        dep = run_compiled(compiled, net, img, ids)
        ref = eager_scores(net, img, ids)
        assert np.array_equal(dep.argmax(1), ref.argmax(1))
        # spike counts are integers: the readouts agree exactly, not just their argmax
        assert np.array_equal(dep, ref), np.abs(dep - ref).max()
    compiled.close()


@pytest.mark.parametrize("backend", ["onnxruntime", "sparse", "nir", "torchscript"])
def test_membrane_readout_and_plif_deploy(backend, tmp_path, tiny_net, mnist_like):
    for net in (tiny_net("plif", seed=3), tiny_net("lif", "membrane", seed=4)):
        _, compiled, _ = compile_step(net, backend, 5, tmp_path / str(id(net)), "host")
        images, ids = mnist_like(5, seed=2), np.arange(5)
        dep, ref = run_compiled(compiled, net, images, ids), eager_scores(net, images, ids)
        assert np.array_equal(dep.argmax(1), ref.argmax(1))
        np.testing.assert_allclose(dep, ref, rtol=1e-5, atol=1e-5)


def test_seed_size_network_on_real_mnist_batches(tmp_path, tiny_net):
    from snn_lab.data.mnist import load_mnist_arrays

    net = tiny_net(arch="tutorial", time_steps=20, weight_scale=3.0)
    images, _ = load_mnist_arrays("test")
    x = images[:56].float().div(255).reshape(56, 1, 28, 28)
    ref = eager_scores(net, x, np.arange(56), time_steps=20)
    for backend, encode in (("onnxruntime", "host"), ("onnxruntime", "graph"), ("sparse", "graph")):
        _, compiled, _ = compile_step(net, backend, 28, tmp_path / backend / encode, encode)
        dep = np.concatenate([run_compiled(compiled, net, x[i : i + 28], np.arange(i, i + 28), 20) for i in (0, 28)])
        assert np.array_equal(dep.argmax(1), ref.argmax(1)), (backend, encode)
        assert (dep == ref).all(1).mean() >= 0.98
        compiled.close()


# -- runtime and report -----------------------------------------------------------------------


@pytest.mark.parametrize("in_caller", [False, True])
def test_runtime_pads_the_last_batch_and_matches_eager(in_caller, tmp_path, tiny_net, mnist_like, monkeypatch):
    net = tiny_net()
    _, compiled, _ = compile_step(net, "onnxruntime", 4, tmp_path)
    compiled.runs_on_all_cores = in_caller  # a step on every core runs in the calling thread
    images = mnist_like(10, seed=3)
    src = InputSource(net, 0, T)
    if in_caller:
        monkeypatch.setattr(threading, "Thread", None)  # any thread started would fail
    res = Runtime(compiled, src, queue_depth=2, warmup=1).run(images)
    ref = eager_reference(net, src, images, batch_size=3)
    assert res.samples == 10 and len(res.batch_latency_s) == 3
    assert np.array_equal(res.predictions, ref.argmax(1))
    assert np.array_equal(res.scores, ref)
    assert res.throughput > 0


@pytest.mark.parametrize(
    "encoder,shape", [("population", (3, 28, 28)), ("direct", (1, 28, 28)), ("latency", (1, 28, 28))]
)
def test_host_encoders_other_than_bernoulli_deploy_exactly(encoder, shape, tmp_path, tiny_net):
    enc = build_encoder(encoder, **({"size": 3} if encoder == "population" else {}))
    net = tiny_net(hidden=(32,), encoder=enc, time_steps=4, weight_scale=1.0, input_shape=shape)
    rep = run_deploy(net, "onnxruntime", 7, tmp_path, num_samples=30, latency_batch1=False, warmup=0)
    assert rep["encode"] == "host" and rep["agreement"] == 1.0 and rep["scores_identical_fraction"] == 1.0


def test_deploy_refuses_a_backend_whose_passes_differ(tmp_path, tiny_net, monkeypatch):
    """Passes over the same inputs must give the same scores (the draws are keyed by
    sample): a backend that does not is reported, and no report is written."""
    net = tiny_net(hidden=(32,), time_steps=4)
    calls = {"n": 0}
    run = Runtime.run

    def drifting(self, images, sample_ids=None):
        res = run(self, images, sample_ids)
        calls["n"] += 1
        res.scores = res.scores + np.float32(calls["n"] == 2)  # the second pass differs
        return res

    monkeypatch.setattr(Runtime, "run", drifting)
    with pytest.raises(DeployError, match="different scores on 3 passes"):
        run_deploy(net, "eager", 7, tmp_path, num_samples=14, latency_batch1=False, warmup=0)
    assert not (tmp_path / "deploy_report.json").exists()
    rep = run_deploy(net, "eager", 7, tmp_path, num_samples=14, latency_batch1=False, warmup=0, passes=1)
    assert len(rep["throughput_passes"]) == 1 and rep["throughput"] == rep["throughput_passes"][0]


def test_runtime_surfaces_backend_errors(tmp_path, tiny_net, mnist_like):
    net = tiny_net()
    _, compiled, _ = compile_step(net, "eager", 4, tmp_path)

    def boom(*a, **k):
        raise RuntimeError("device fell over")

    compiled.run_batch = boom
    for in_caller in (False, True):
        compiled.runs_on_all_cores = in_caller
        with pytest.raises(RuntimeError, match="device fell over"):
            Runtime(compiled, InputSource(net, 0, T), warmup=0).run(mnist_like(8))


def test_run_deploy_writes_a_complete_report(tmp_path, tiny_net):
    net = tiny_net(time_steps=4)
    rep = run_deploy(net, "sparse", 8, tmp_path / "d", num_samples=40, latency_samples=5, warmup=1)
    data = json.loads((tmp_path / "d" / "deploy_report.json").read_text())
    assert data == json.loads(json.dumps(rep))
    # a kernel pool on every core is driven from the calling thread, else by the threads
    all_cores = data["backend_info"]["threads"] >= (os.cpu_count() or 1)
    assert data["runtime"].startswith("calling thread" if all_cores else "feeder")
    for key in (
        "backend",
        "batch_size",
        "throughput",
        "deployed_accuracy",
        "eager_accuracy",
        "agreement",
        "report_path",
        "artifacts",
        "latency_ms",
        "time_steps",
        "encode",
    ):
        assert key in data, key
    assert data["agreement"] == 1.0 and data["verified"] and data["samples"] == 40
    assert data["latency_ms"]["batch1"]["p50"] > 0 and data["latency_ms"]["batch"]["n"] == 3 * 5  # 3 passes
    assert data["device_encoding"] and data["encode"] == "graph"
    assert not list((tmp_path / "d").glob(".tmp-*"))  # atomic write left no temp file
    assert "target" not in data  # no built-in throughput goal in a user's report


def test_wrong_checkpoint_fails_clearly(tmp_path, tiny_net):
    from snn_lab.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        run_deploy(tmp_path / "missing.ckpt", "eager", 2, tmp_path)
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        run_deploy(bad, "eager", 2, tmp_path)
    plain = tmp_path / "plain.pt"
    torch.save(tiny_net().state_dict(), plain)  # a bare state dict is not a training checkpoint
    with pytest.raises(CheckpointError, match="not a snn_lab training checkpoint"):
        run_deploy(plain, "eager", 2, tmp_path)
    assert isinstance(CheckpointError("x"), ValueError)


# -- conv, BatchNorm and analog inputs -------------------------------------------------------


@pytest.fixture
def conv_bn_net(tiny_net, neuron_maker):
    """A conv SNN with BatchNorm (non-trivial running statistics) and dropout, direct input:
    wrong in deployment unless every backend runs it in eval mode on float inputs."""
    net = tiny_net(
        neuron_maker("plif", vth=0.5, decay=0.6),
        readout="membrane",
        encoder="direct",
        time_steps=3,
        arch="conv",
        weight_scale=1.0,
        channels=(4, 8),
        fc=16,
        pool="current",
        dropout=0.3,
    )
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.2, 2.0)
    return net.eval()


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_conv_batchnorm_direct_input_deploys_exactly_and_stays_in_eval(backend, tmp_path, conv_bn_net):
    net = conv_bn_net
    # input_dtype as the CLI's backend config passes it
    opts = {"input_dtype": "auto"} if backend == "onnxruntime" else None
    rep = run_deploy(net, backend, 7, tmp_path, num_samples=30, latency_batch1=False, warmup=0, backend_options=opts)
    assert not any(m.training for m in net.modules())  # compiling left the network in eval mode
    assert rep["agreement"] == 1.0 and rep["deployed_accuracy"] == rep["eager_accuracy"]
    # and the report's eager reference is the eval-mode network's
    images, labels = load_images(net, "test", None, 30)
    with torch.no_grad():
        pred = net(images).argmax(1).numpy()
    assert rep["eager_accuracy"] == pytest.approx(float(np.mean(pred == np.asarray(labels))))


def test_narrow_input_dtype_for_analog_inputs_is_refused(tmp_path, tiny_net, conv_bn_net):
    net = conv_bn_net
    with pytest.raises(UnsupportedError, match=r"input_dtype='uint8' would truncate the analog inputs"):
        compile_step(net, "onnxruntime", 4, tmp_path, backend_options={"input_dtype": "uint8"})
    _, compiled, _ = compile_step(net, "onnxruntime", 4, tmp_path)
    assert compiled.input_dtype == torch.float32
    _, compiled, _ = compile_step(tiny_net(), "onnxruntime", 4, tmp_path / "spikes")
    assert compiled.input_dtype == torch.uint8

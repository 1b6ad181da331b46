"""The export paths: ONNX through the ``torch.export``-based exporter with a dynamic batch
axis, ORT execution providers, the AOTInductor ``.pt2`` backend, and what deploy takes
besides feed-forward LIF networks (current-based LIF, conv, recurrent layers, given
event frames), every one checked against eager on the same inputs.

AOTInductor compiles C++ (tens of seconds): the default run compiles one tiny network
once (``aoti_step``); the wider sweeps are ``slow``."""

from __future__ import annotations

import logging
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from snn_lab.deploy import BackendUnavailableError, StepModule, UnsupportedError, run_deploy, state_slots
from snn_lab.deploy.api import compile_step, load_images
from snn_lab.deploy.backends.onnxruntime import resolve_providers
from snn_lab.deploy.runtime import InputSource, Runtime, eager_reference
from snn_lab.encoders import ENCODERS, build_encoder
from snn_lab.models import RecurrentSNN, SpikingConvNet
from snn_lab.neurons import CubaLIF, Surrogate

T = 6  # tiny_net's time steps
DEPLOY_SRC = Path(__file__).resolve().parents[1] / "src" / "snn_lab" / "deploy"


def eager_scores(net, images, ids, time_steps=T, seed=0):
    src = InputSource(net, seed, time_steps)
    with torch.no_grad():
        return net.forward_spikes(src.spike_train(images, ids)).numpy()


def run_compiled(compiled, net, images, ids, time_steps=T, seed=0):
    src = InputSource(net, seed, time_steps)
    steps, keys = src.step_inputs(compiled, images, ids)
    return compiled.run_batch(images, steps, keys, time_steps) / np.float32(time_steps)


def assert_any_batch_size_matches_eager(compiled, net, mnist_like, sizes=(1, 3, 9)):
    """The graph compiled at one batch size runs at others (``rebatch``), exactly."""
    for b in sizes:
        step = compiled if b == compiled.batch_size else compiled.rebatch(b)
        assert step is not None and step.batch_size == b
        images, ids = mnist_like(b, seed=b), np.arange(100, 100 + b)
        dep, ref = run_compiled(step, net, images, ids), eager_scores(net, images, ids)
        assert np.array_equal(dep, ref), (b, np.abs(dep - ref).max())


def rsnn(neuron=CubaLIF, hidden=(24,), seed=0, encoder="bernoulli"):
    """A recurrent SNN on 28x28 inputs whose recurrent weights matter (scaled up)."""
    torch.manual_seed(seed)
    net = RecurrentSNN(
        lambda: neuron(surrogate=Surrogate("rectangle")),
        input_shape=(1, 28, 28),
        hidden=hidden,
        time_steps=5,
        encoder=build_encoder(encoder),
    ).eval()
    for layer in net.layers:
        layer.synapse[-1].weight.data.mul_(3.0)
    net.layers[0].recurrent_synapse.weight.data.mul_(3.0)
    return net


def conv_cuba(readout="membrane"):
    torch.manual_seed(1)
    net = SpikingConvNet(
        lambda: CubaLIF(surrogate=Surrogate("rectangle")),
        channels=(4, 8),
        fc=16,
        time_steps=4,
        encoder=build_encoder("bernoulli"),
        readout=readout,
    )
    return net.eval()


FAST = {"latency_samples": 3, "warmup": 0}


# -- ONNX: the torch.export-based exporter, dynamic batch -----------------------------------


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def ort_step(tmp_path_factory, tiny_net):
    """The tiny network compiled for onnxruntime at batch 4, with the Python warnings and
    log records the export and session creation emitted (root logger at INFO, as the CLIs
    run)."""
    net = tiny_net()
    root, handler = logging.getLogger(), _Records()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, compiled, _ = compile_step(net, "onnxruntime", 4, tmp_path_factory.mktemp("ort"))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    yield net, compiled, (caught, handler.records)
    compiled.close()


def test_onnx_step_has_a_named_dynamic_batch_axis_on_every_input_and_output(ort_step):
    import onnx

    net, compiled, _ = ort_step
    model = onnx.load(compiled.artifacts["onnx"])
    step = StepModule(net)
    assert [i.name for i in model.graph.input] == ["x"] + [s.onnx_name for s in state_slots(net)]
    assert [o.name for o in model.graph.output] == step.output_names
    for v in [*model.graph.input, *model.graph.output]:
        assert v.type.tensor_type.shape.dim[0].dim_param == "batch", v.name
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8  # spikes as uint8
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    info = compiled.describe()
    assert info["exporter"] == "torch.onnx.export(dynamo=True)" and info["dynamic_batch"]


def test_onnx_step_runs_at_batch_sizes_other_than_the_traced_one(ort_step, mnist_like):
    net, compiled, _ = ort_step
    assert_any_batch_size_matches_eager(compiled, net, mnist_like, sizes=(4, 1, 3, 9))
    # and the functional form, state explicit, at a fourth size
    step = StepModule(net)
    x = (torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(3)) < 0.3).to(torch.uint8)
    state = step.init_state(6)
    with torch.no_grad():
        ref = step(x, *state)
    got = compiled(x, *state)
    assert torch.equal(got[0], ref[0])  # spikes exact
    for g, r in zip(got[1:], ref[1:]):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-6)  # membranes: GEMM summation order


def test_onnx_export_raises_no_python_warnings_and_logs_no_pass_chatter(ort_step):
    _, _, (caught, records) = ort_step
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]
    # the exporter's graph passes log every rewrite at INFO: kept out of a user's output
    assert not [r.getMessage() for r in records if r.name.split(".")[0] in ("onnxscript", "onnx_ir")]


def test_deploy_sources_silence_no_warnings():
    """Warnings from the exporters are fixed at their cause or shown, never filtered."""
    pattern = re.compile(r"catch_warnings|simplefilter|filterwarnings")
    hits = [
        f"{p.relative_to(DEPLOY_SRC)}:{i}"
        for p in sorted(DEPLOY_SRC.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits


# -- ORT execution providers ----------------------------------------------------------------


def test_default_providers_prefer_gpu_ones_when_offered():
    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, cpu_only) == ["CPUExecutionProvider"]
    assert resolve_providers([], cpu_only) == ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, gpu) == gpu
    assert resolve_providers(None, gpu[1:]) == gpu[1:]
    assert resolve_providers(["CPUExecutionProvider"], gpu) == ["CPUExecutionProvider"]


def test_an_unavailable_provider_fails_in_one_line_listing_the_available(tmp_path, tiny_net):
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(BackendUnavailableError) as e:
        compile_step(tiny_net(), "onnxruntime", 2, tmp_path, backend_options={"providers": ["CUDAExecutionProvider"]})
    msg = str(e.value)
    assert "\n" not in msg and "CUDAExecutionProvider" in msg
    assert f"available: {', '.join(available)}" in msg
    assert not list(tmp_path.iterdir())  # refused before exporting anything


def test_session_uses_the_requested_providers(ort_step):
    _, compiled, _ = ort_step
    assert compiled.session.get_providers() == compiled.describe()["providers"] == ["CPUExecutionProvider"]


# -- AOTInductor (.pt2) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def aoti_step(tmp_path_factory, tiny_net):
    """The tiny network compiled once with AOTInductor at batch 4 (tens of seconds)."""
    net = tiny_net()
    _, compiled, _ = compile_step(net, "aoti", 4, tmp_path_factory.mktemp("aoti"))
    yield net, compiled
    compiled.close()


def test_aoti_writes_a_pt2_package_and_runs_it_at_any_batch_size(aoti_step, mnist_like):
    net, compiled = aoti_step
    pt2 = Path(compiled.artifacts["pt2"])
    assert pt2.suffix == ".pt2" and zipfile.is_zipfile(pt2)
    assert any(n.endswith(".so") for n in zipfile.ZipFile(pt2).namelist())  # the compiled step
    assert compiled.describe()["dynamic_batch"]
    assert_any_batch_size_matches_eager(compiled, net, mnist_like, sizes=(4, 1, 7))


def test_aoti_package_reloads_from_the_file_alone(aoti_step):
    net, compiled = aoti_step
    runner = torch._inductor.aoti_load_package(compiled.artifacts["pt2"])
    step = StepModule(net)
    x = (torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(4)) < 0.3).to(torch.uint8)
    state = step.init_state(5)
    with torch.no_grad():
        ref = step(x, *state)
        got = runner(x, *state)
    assert all(torch.equal(g, r) for g, r in zip(got, ref))  # no contraction: bit for bit


def test_aoti_step_in_the_threaded_runtime_agrees_with_eager(aoti_step, mnist_like):
    net, compiled = aoti_step
    images = mnist_like(10, seed=8)
    src = InputSource(net, 0, T)
    res = Runtime(compiled, src, queue_depth=2, warmup=1).run(images)
    ref = eager_reference(net, src, images, batch_size=5)
    assert np.array_equal(res.scores, ref)


def test_aoti_without_a_cxx_compiler_says_what_to_install(tmp_path, tiny_net):
    with pytest.raises(BackendUnavailableError, match=r"C\+\+ compiler \(no-such-cxx-xyz\).*apt-get install g\+\+"):
        compile_step(tiny_net(), "aoti", 2, tmp_path, backend_options={"cxx": "no-such-cxx-xyz"})


# -- networks beyond feed-forward LIF ---------------------------------------------------------


def test_recurrent_state_is_flattened_with_stable_keys():
    assert [s.key for s in state_slots(rsnn())] == [
        "layers.0.neuron.v",
        "layers.0.neuron.i",
        "layers.0.spikes",
        "layers.1.v",
        "layers.1.i",
    ]


@pytest.mark.parametrize("backend", ["eager", "torchscript"])
def test_rsnn_deploys_exactly_on_torch_backends(backend, tmp_path):
    rep = run_deploy(rsnn(), backend, 6, tmp_path, num_samples=24, **FAST)
    assert rep["agreement"] == 1.0 and rep["scores_identical_fraction"] == 1.0


def test_rsnn_deploys_through_onnx_with_its_spikes_as_state(tmp_path):
    import onnx

    net = rsnn()
    rep = run_deploy(net, "onnxruntime", 6, tmp_path, num_samples=30, **FAST)
    assert rep["agreement"] == 1.0 and rep["scores_identical_fraction"] == 1.0
    names = [i.name for i in onnx.load(rep["artifacts"]["onnx"]).graph.input]
    assert "state.layers_0_spikes" in names and "state.layers_0_neuron_v" in names
    # the recurrent synapse is in the graph: without it eager scores differ from deployed ones
    images, _ = load_images(net, num_samples=30)
    src = InputSource(net, 0, net.time_steps)
    with_rec = eager_reference(net, src, images)
    net.layers[0].recurrent_synapse.weight.data.zero_()
    assert not np.array_equal(eager_reference(net, src, images), with_rec)


def test_conv_with_current_based_lif_deploys_through_onnx(tmp_path):
    rep = run_deploy(conv_cuba(), "onnxruntime", 5, tmp_path, num_samples=20, **FAST)
    assert rep["agreement"] == 1.0


def _kinds(tiny_net, neuron_maker):
    """The network kinds of docs/DEPLOY.md's table, small."""
    from snn_lab.neurons import Izhikevich

    cuba = lambda: CubaLIF(surrogate=Surrogate("rectangle"))  # noqa: E731 - a factory, as the models take
    return {
        "alif": lambda: tiny_net("alif"),
        "izhikevich": lambda: tiny_net(lambda: Izhikevich(surrogate=Surrogate("rectangle"))),
        "subtract_reset": lambda: tiny_net("lif_sub"),
        "cuba": lambda: tiny_net(cuba),
        "conv_bn": lambda: tiny_net(arch="conv", channels=(4,), fc=8, weight_scale=1.0),
        "rsnn": rsnn,
        "direct": lambda: tiny_net(encoder="direct"),
    }


KINDS = ["alif", "izhikevich", "subtract_reset", "cuba", "conv_bn", "rsnn", "direct"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_network_table_holds(kind, tmp_path, tiny_net, neuron_maker, mnist_like):
    """docs/DEPLOY.md: eager and torchscript take every kind exactly, sparse refuses it in
    one line, the lynxi load/save graph traces it (and refuses recurrent layers)."""
    from snn_lab.deploy import LoadSaveStep
    from snn_lab.deploy.backends.lynxi import prepare_graph

    net = _kinds(tiny_net, neuron_maker)[kind]()
    images, ids = mnist_like(3, seed=5), np.arange(3)
    if net.input_shape != (1, 28, 28):
        images = images[:, :1].reshape(3, *net.input_shape)
    ref = eager_scores(net, images, ids, net.time_steps)
    for backend in ("eager", "torchscript"):
        _, compiled, _ = compile_step(net, backend, 3, tmp_path / backend)
        assert np.array_equal(run_compiled(compiled, net, images, ids, net.time_steps), ref), backend
    with pytest.raises(UnsupportedError) as e:
        compile_step(net, "sparse", 3, tmp_path / "sparse")
    assert "\n" not in str(e.value)
    ls = LoadSaveStep(net, 2)
    graph = prepare_graph(ls, ls.example_inputs(2), str(tmp_path / "lynxi"))
    assert graph["ops"] == {"state_load": len(ls.slots), "state_save": len(ls.slots), "state_sink": 1}
    if kind == "rsnn":
        with pytest.raises(UnsupportedError, match="backend 'lynxi' cannot lower recurrent layers"):
            compile_step(net, "lynxi", 2, tmp_path / "lynxi_refused")


@pytest.mark.parametrize("kind", ["alif", "izhikevich"])
def test_other_neurons_deploy_through_onnx(kind, tmp_path, tiny_net, neuron_maker):
    rep = run_deploy(_kinds(tiny_net, neuron_maker)[kind](), "onnxruntime", 5, tmp_path, num_samples=15, **FAST)
    assert rep["agreement"] == 1.0


@pytest.mark.parametrize("backend", ["sparse", "nir", "lynxi"])
def test_backends_that_cannot_lower_recurrence_refuse_naming_those_that_can(backend, tmp_path):
    with pytest.raises(UnsupportedError) as e:
        compile_step(rsnn(), backend, 2, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and f"backend {backend!r} cannot lower recurrent layers (layer 0" in msg
    assert all(name in msg for name in ("aoti", "eager", "onnxruntime", "torchscript"))


def test_sparse_refuses_recurrence_when_called_directly_too(tmp_path):
    """Past compile_step's check, the kernel itself would drop W_rec s_(t-1) silently."""
    from snn_lab.deploy import create_backend

    net = rsnn()
    with pytest.raises(UnsupportedError, match="sparse backend: layer 0 is recurrent"):
        create_backend("sparse").compile(StepModule(net), StepModule(net).example_inputs(2), str(tmp_path))


@pytest.mark.skipif("passthrough" not in ENCODERS, reason="encoder=passthrough is not in this tree")
def test_event_frames_deploy_when_given_and_are_refused_without_them(tmp_path):
    torch.manual_seed(2)
    net = SpikingConvNet(
        lambda: CubaLIF(surrogate=Surrogate("rectangle")),
        input_shape=(2, 12, 12),
        channels=(4,),
        fc=16,
        time_steps=3,
        encoder=build_encoder("passthrough"),
    ).eval()
    with pytest.raises(UnsupportedError, match=r"passthrough.*data=\(frames, labels\)"):
        run_deploy(net, "eager", 4, tmp_path, **FAST)
    g = torch.Generator().manual_seed(0)
    frames = torch.poisson(torch.full((18, 3, 2, 12, 12), 0.4), generator=g)  # event counts [N, T, C, H, W]
    labels = torch.randint(0, 10, (18,), generator=g)
    rep = run_deploy(net, "onnxruntime", 4, tmp_path, data=(frames, labels), **FAST)
    assert rep["samples"] == 18 and rep["agreement"] == 1.0 and rep["encode"] == "host"
    assert rep["backend_info"]["backend"] == "onnxruntime"


# -- wider sweeps (slow: each AOTInductor compile takes tens of seconds) ----------------------


@pytest.mark.slow
@pytest.mark.parametrize("net_name", ["rsnn_cuba", "rsnn_lif", "conv_cuba"])
def test_aoti_deploys_recurrent_and_current_based_networks(net_name, tmp_path):
    from snn_lab.neurons import LIF

    net = {"rsnn_cuba": rsnn, "rsnn_lif": lambda: rsnn(LIF), "conv_cuba": conv_cuba}[net_name]()
    rep = run_deploy(net, "aoti", 6, tmp_path, num_samples=24, **FAST)
    assert rep["agreement"] == 1.0 and rep["latency_ms"]["batch1"]["n"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "aoti"])
def test_graph_encoding_exports_with_a_dynamic_batch(backend, tmp_path, tiny_net, mnist_like):
    net = tiny_net()
    _, compiled, _ = compile_step(net, backend, 4, tmp_path, "graph")
    assert compiled.encode == "graph"
    assert_any_batch_size_matches_eager(compiled, net, mnist_like, sizes=(4, 1, 6))

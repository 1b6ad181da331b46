"""The current-based LIF (``neuron=cuba``) and the recurrent SNN (``model=rsnn``): exact
dynamics, step/multi-step agreement, gradients through time, config round trip, and
deploy backends refusing what they cannot lower."""

from __future__ import annotations

import inspect
import logging

import pytest
import torch
from omegaconf import OmegaConf

from snn_lab.config import schema as S
from snn_lab.deploy import run_deploy
from snn_lab.deploy.api import compile_step
from snn_lab.encoders import build_encoder
from snn_lab.errors import ConfigError, UnsupportedError
from snn_lab.models import RecurrentSNN, RecurrentSpikingLayer, RecurrentState, SpikingMLP, build_network
from snn_lab.neurons import NEURONS, CubaLIF, CubaLIFState, Surrogate


def _rsnn(neuron=CubaLIF, mode="step", readout="rate", hidden=(12, 10), seed=0, **params):
    torch.manual_seed(seed)
    net = RecurrentSNN(
        lambda: neuron(surrogate=Surrogate("rectangle"), **params),
        input_shape=(1, 4, 4),
        hidden=hidden,
        time_steps=5,
        readout=readout,
        mode=mode,
    )
    for layer in net.layers:  # strong enough that every layer spikes, untrained
        layer.synapse[-1].weight.data.mul_(3.0)
    return net


# -- the neuron -------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["hard", "subtract"])
def test_cuba_two_step_trace_by_hand(reset):
    n = CubaLIF(vth=0.4, alpha=0.5, beta=0.8, reset=reset)
    st = n.init_state((3,))
    x1, x2 = torch.tensor([0.5, 0.2, 0.0]), torch.tensor([0.0, 0.2, 1.0])
    s1, st = n.step(x1, st)
    # i1 = x1; v1 = 0 * 1 * 0.8 + i1 = x1
    assert torch.equal(st.i, x1) and torch.equal(st.v, x1)
    assert s1.tolist() == [1.0, 0.0, 0.0]  # 0.5 > 0.4 only
    s2, st = n.step(x2, st)
    # i2 = 0.5 * i1 + x2 = [0.25, 0.3, 1.0]
    assert torch.allclose(st.i, torch.tensor([0.25, 0.3, 1.0]))
    # neuron 0 spiked at t=1: hard -> 0 * 0.8 + 0.25; subtract -> (0.5 - 0.4) * 0.8 + 0.25
    v0 = 0.25 if reset == "hard" else 0.1 * 0.8 + 0.25
    # neuron 1: 0.2 * 0.8 + 0.3 = 0.46; neuron 2: 0 + 1.0
    assert torch.allclose(st.v, torch.tensor([v0, 0.46, 1.0]))
    assert s2.tolist() == [float(v0 > 0.4), 1.0, 1.0]


def test_cuba_alpha_zero_is_the_lif():
    from snn_lab.neurons import LIF

    x = torch.rand(8, 3, 5, generator=torch.Generator().manual_seed(0))
    a, _ = CubaLIF(alpha=0.0, beta=0.8).multi_step(x)
    b, _ = LIF(decay=0.8).multi_step(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("detach_reset", [False, True])
def test_cuba_multi_step_equals_the_step_loop_with_gradients(detach_reset):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(7, 4, 6, generator=g).requires_grad_(True)
    n = CubaLIF(detach_reset=detach_reset, learn_alpha=True, learn_beta=True, learn_vth=True)
    seq, last = n.multi_step(x)
    st = n.init_state((4, 6))
    outs = []
    for t in range(7):
        s, st = n.step(x[t], st)
        outs.append(s)
    assert torch.equal(seq, torch.stack(outs)) and torch.equal(last.v, st.v) and torch.equal(last.i, st.i)
    assert isinstance(last, CubaLIFState) and seq.sum() > 0
    (seq.sum() + last.v.sum()).backward()
    assert x.grad is not None and x.grad[0].abs().sum() > 0  # the first step's input reaches the end
    for p in ("alpha", "beta", "vth"):
        assert getattr(n, p).grad is not None and torch.isfinite(getattr(n, p).grad)


@pytest.mark.parametrize(
    "kwargs,key",
    [({"vth": 0.0}, "vth"), ({"alpha": 1.5}, "alpha"), ({"beta": -0.1}, "beta"), ({"reset": "soft"}, "reset")],
)
def test_cuba_bad_parameters_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"^{key}="):
        CubaLIF(**kwargs)


def test_class_defaults_equal_the_schemas():
    for conf, cls in ((S.CubaLIFConf, CubaLIF), (S.RSNNConf, RecurrentSNN)):
        params = inspect.signature(cls).parameters
        defaults = OmegaConf.to_container(OmegaConf.structured(conf))
        shared = {k: v for k, v in defaults.items() if k in params and params[k].default is not inspect.Parameter.empty}
        assert len(shared) >= 3
        for k, v in shared.items():
            d = params[k].default
            assert (list(d) if isinstance(d, tuple) else d) == v, f"{cls.__name__}.{k}"
    assert NEURONS.get("cuba") is CubaLIF


# -- the recurrent layer and network ----------------------------------------------------------


def test_recurrent_layer_state_and_multi_step_equal_the_step_loop():
    torch.manual_seed(0)
    layer = RecurrentSpikingLayer(torch.nn.Linear(5, 6), CubaLIF(), 6)
    layer.recurrent_synapse.weight.data.mul_(4.0)
    x = torch.rand(6, 3, 5) * 2
    st0 = layer.init_state((3, 6))
    assert isinstance(st0, RecurrentState) and isinstance(st0.neuron, CubaLIFState) and st0.spikes.shape == (3, 6)
    seq, last = layer.multi_step(x, st0)
    st, outs = st0, []
    for t in range(6):
        s, st = layer.step(x[t], st)
        outs.append(s)
    assert torch.equal(seq, torch.stack(outs)) and torch.equal(last.spikes, seq[-1])
    assert torch.equal(layer.membrane(last), last.neuron.v)
    # the recurrent path changes the result: the same layer without W_rec differs
    with torch.no_grad():
        layer.recurrent_synapse.weight.zero_()
    assert not torch.equal(layer.multi_step(x, st0)[0], seq)


def test_gradients_flow_through_time_and_w_rec():
    net = _rsnn(hidden=(12,))
    x = (torch.rand(5, 3, 1, 4, 4, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    net.forward_spikes(x).sum().backward()
    rec = net.layers[0].recurrent_synapse.weight.grad
    assert rec is not None and rec.abs().sum() > 0
    assert net.layers[0].synapse[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("readout", ["rate", "membrane"])
def test_rsnn_both_modes_give_the_same_outputs_and_gradients(readout, caplog):
    x = (torch.rand(5, 3, 1, 4, 4, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    net = _rsnn(mode="layer", readout=readout)
    results = []
    with caplog.at_level(logging.INFO, logger="snn_lab.models"):
        for mode in ("step", "layer", None):  # None: the model's own mode (layer)
            net.zero_grad()
            scores, rec = net.forward_spikes(x, return_record=True, mode=mode)
            scores.sum().backward()
            results.append((scores.detach(), rec, [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    lines = [r for r in caplog.records if "step loop" in r.getMessage()]
    assert len(lines) == 1 and lines[0].name == "snn_lab.models"  # once, at the first layer-mode run
    assert torch.equal(results[1][0], results[2][0])
    results = results[:2]
    (a, ra, ga), (b, rb, gb) = results
    # the readout layer is feed-forward: in layer mode its matmul runs over T*B rows (float tolerance)
    assert torch.allclose(a, b, atol=1e-5) and len(ra.spikes) == len(rb.spikes) == 3
    assert all(torch.equal(p, q) for p, q in zip(ra.spikes[:2], rb.spikes[:2]))  # the recurrent layers
    assert (
        ra.firing_rates()[0] > 0 and len(ga) == len(gb) and all(torch.allclose(p, q, atol=1e-5) for p, q in zip(ga, gb))
    )
    st = net.init_state(2)
    assert isinstance(st[0], RecurrentState) and st[0].spikes.shape == (2, 12) and st[1].spikes.shape == (2, 10)
    assert net.layers[0].membrane(st[0]).shape == (2, 12)
    assert net.layers[0].neuron.membrane(st[0]).shape == (2, 12)  # what the spike dashboard calls


def test_step_mode_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="snn_lab.models"):
        _rsnn(mode="step").forward_spikes(torch.ones(2, 1, 1, 4, 4))
        _rsnn(mode="layer")  # built (a trial build) but never run
    assert not [r for r in caplog.records if "step loop" in r.getMessage()]


def test_rsnn_bad_parameters_name_the_key():
    with pytest.raises(ValueError, match=r"^hidden="):
        _rsnn(hidden=())
    with pytest.raises(ValueError, match=r"^num_classes="):
        RecurrentSNN(CubaLIF, num_classes=1)


# -- config -----------------------------------------------------------------------------------


def test_cuba_and_rsnn_compose_validate_and_build(compose_cfg):
    from snn_lab.config import validate
    from snn_lab.config.build import net_config

    cfg = compose_cfg(["neuron=cuba", "model=rsnn", "model.hidden=[16,8]", "neuron.alpha=0.6", "time_steps=3"])
    assert cfg.neuron.name == "cuba" and cfg.neuron.beta == 0.8 and cfg.model.name == "rsnn"
    validate(cfg)
    net = build_network(net_config(cfg))
    assert isinstance(net, RecurrentSNN) and [type(layer.neuron) for layer in net.layers] == [CubaLIF] * 3
    assert float(net.layers[0].neuron.alpha) == pytest.approx(0.6) and net.state_shapes == [(16,), (8,), (10,)]
    out = net(torch.rand(2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 10)


@pytest.mark.parametrize(
    "override,key",
    [
        ("neuron.alpha=1.5", "alpha"),
        ("neuron.beta=-1", "beta"),
        ("neuron.reset=soft", "reset"),
        ("model.hidden=[]", "hidden"),
    ],
)
def test_bad_config_values_fail_naming_the_key(compose_cfg, override, key):
    from snn_lab.config import validate

    cfg = compose_cfg(["neuron=cuba", "model=rsnn", "model.hidden=[8]", "time_steps=2", override])
    with pytest.raises(ConfigError, match=key):
        validate(cfg)


def test_wrong_type_fails_at_compose(compose_cfg):
    with pytest.raises(Exception, match=r"neuron\.alpha"):
        compose_cfg(["neuron=cuba", "neuron.alpha=abc"])


# -- deploy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["nir", "sparse", "lynxi"])
@pytest.mark.parametrize("neuron", ["cuba", "lif"])
def test_backends_refuse_recurrent_networks_with_the_reason(backend, neuron, tmp_path):
    """Backends that cannot lower W_rec s_(t-1) refuse, naming those that can (the
    exported ones deploy it: tests/test_deploy_export.py)."""
    net = _rsnn(NEURONS.get(neuron), hidden=(8,)).eval()
    with pytest.raises(UnsupportedError, match=r"recurrent layers \(layer 0.*use .*onnxruntime"):
        compile_step(net, backend, 2, tmp_path)


def test_run_deploy_refuses_an_rsnn_where_the_backend_cannot_lower_it(tmp_path):
    net = _rsnn(hidden=(8,)).eval()
    net.encoder = build_encoder("bernoulli")
    with pytest.raises(UnsupportedError, match=r"backend 'sparse' cannot lower recurrent layers \(layer 0"):
        run_deploy(net, backend="sparse", batch_size=2, out_dir=tmp_path, num_samples=4)


def test_feedforward_cuba_deploys_where_lowered_generically_and_is_refused_elsewhere(tmp_path):
    torch.manual_seed(0)
    net = SpikingMLP(
        CubaLIF, input_shape=(1, 28, 28), hidden=(16,), time_steps=3, encoder=build_encoder("bernoulli")
    ).eval()
    for backend in ("onnxruntime", "nir"):  # nir: a CubaLIF node (docs/INTEROP.md)
        rep = run_deploy(net, backend, 4, tmp_path / backend, num_samples=8, latency_samples=2, warmup=0)
        assert rep["agreement"] == 1.0
    with pytest.raises(UnsupportedError, match="CubaLIF"):
        compile_step(net, "sparse", 2, tmp_path)

import re

import pytest
import torch
import torch.nn.functional as F

from helpers import run_script
from snn_lab.encoders import build_encoder
from snn_lab.models import SpikingConvNet, SpikingMLP, load_tutorial_state_dict, tutorial_network
from snn_lab.neurons import LIF
from tutorial_impl import TutorialReference


def _seed_pair(seed=0, mode="step"):
    torch.manual_seed(seed)
    ref = TutorialReference()
    net = tutorial_network(mode=mode)
    load_tutorial_state_dict(net, ref.tutorial_state_dict())
    return ref, net


def _spikes(T=20, B=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, 784, generator=g) * 0.6
    return (torch.rand(T, B, 784, generator=g) < p).float()


@pytest.mark.parametrize("mode", ["step", "layer"])
def test_tutorial_network_bit_exact_against_independent_reference(mode):
    """Both modes (the per-step loop, the engine's layer-at-a-time path) against the
    independent re-implementation: outputs bit for bit, with and without autograd (the
    engine's inference and training paths), and every layer's weight gradient."""
    ref, net = _seed_pair(mode=mode)
    x = _spikes()
    with torch.no_grad():
        expected = ref(x)
        assert torch.equal(net.forward_spikes(x), expected)
        assert torch.equal(net.forward_spikes(x, mode="layer" if mode == "step" else "step"), expected)
    assert expected.sum() > 0  # the check is not vacuous: output neurons fire
    out_ref, out = ref(x), net.forward_spikes(x)
    assert torch.equal(out, out_ref)
    y = torch.arange(16) % 10
    F.cross_entropy(out_ref, y).backward()
    F.cross_entropy(out, y).backward()
    ours = [net.layers[0].synapse[1].weight, net.layers[1].synapse[0].weight, net.layers[2].synapse[0].weight]
    tol = {} if mode == "step" else {"rtol": 1e-4, "atol": 1e-6}  # layer mode: other summation order
    for fc, w in zip(ref.fcs, ours):
        torch.testing.assert_close(w.grad, fc.weight.grad, **tol)


def test_gradients_reach_every_weight_through_T_steps():
    net = tutorial_network(time_steps=20)
    x = _spikes(B=8)
    torch.nn.functional.cross_entropy(net.forward_spikes(x), torch.arange(8)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_looping_step_equals_forward():
    _, net = _seed_pair()
    x = _spikes(T=12, B=4)
    state = net.init_state(4)
    total = 0
    for t in range(12):
        out, state = net.step(x[t], state)
        total = total + out
    assert torch.equal(total / 12, net.forward_spikes(x))


def test_forward_encodes_with_generator():
    net = tutorial_network(encoder=build_encoder("bernoulli"), time_steps=5)
    img = torch.rand(3, 1, 28, 28)
    a = net(img, torch.Generator().manual_seed(0))
    b = net(img, torch.Generator().manual_seed(0))
    assert a.shape == (3, 10) and torch.equal(a, b)


def test_record_firing_rates():
    _, net = _seed_pair()
    scores, rec = net.forward_spikes(_spikes(), return_record=True)
    assert len(rec.spikes) == 3 and rec.spikes[0].shape == (20, 16, 512)
    assert all(0 <= r <= 1 for r in rec.firing_rates())
    assert torch.equal(rec.outputs.mean(0), scores)


@pytest.mark.parametrize("readout", ["rate", "membrane"])
def test_mlp_sizes_depth_readout(readout, tiny_net):
    net = tiny_net(
        readout=readout,
        hidden=(32, 16, 16),
        time_steps=6,
        surrogate="atan",
        weight_scale=1.0,
        train=True,
        input_shape=(1, 8, 8),
        num_classes=4,
        batch_norm=True,
        dropout=0.1,
    )
    out = net.forward_spikes(torch.rand(6, 5, 64).round())
    assert out.shape == (5, 4)
    if readout == "membrane":
        assert not net.layers[-1].neuron.spiking


@pytest.mark.parametrize("mode", ["step", "layer"])
def test_conv_snn_runs_and_trains(mode, tiny_net):
    net = tiny_net(
        readout="membrane",
        time_steps=4,
        arch="conv",
        mode=mode,
        weight_scale=1.0,
        train=True,
        channels=(4, 8),
        fc=16,
        pool="spikes",  # the neuron sees the full-size map, pooled after it
    )
    x = torch.rand(4, 3, 1, 28, 28).round()
    out = net.forward_spikes(x)
    assert out.shape == (3, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert net.state_shapes[0] == (4, 28, 28) and net.state_shapes[1] == (8, 14, 14)


@pytest.mark.parametrize("pool", ["spikes", "current"])
def test_conv_layer_and_step_modes_agree_in_eval(pool, tiny_net):
    net = tiny_net(time_steps=3, arch="conv", weight_scale=1.0, channels=(4, 6), fc=8, pool=pool)
    x = torch.rand(3, 2, 1, 28, 28).round()
    with torch.no_grad():
        assert torch.equal(net.forward_spikes(x, mode="step"), net.forward_spikes(x, mode="layer"))


def test_conv_pool_current_pools_before_the_neuron(tiny_net, neuron_maker):
    net = tiny_net(
        neuron_maker("lif", vth=0.3),
        time_steps=3,
        arch="conv",
        weight_scale=1.0,
        channels=(4, 8, 16),
        fc=8,
        pool="current",
        dropout=0.0,
    )
    # each block halves H and W before its neurons: 4x fewer neurons than pool=spikes
    assert net.state_shapes[:3] == [(4, 14, 14), (8, 7, 7), (16, 3, 3)]
    x = torch.rand(3, 2, 1, 28, 28).round()
    block = net.layers[0].synapse
    conv, bn = block[0], block[1]
    with torch.no_grad():
        _, rec = net.forward_spikes(x, return_record=True)
        cur = torch.nn.functional.max_pool2d(bn(conv(x.reshape(6, 1, 28, 28))), 2).reshape(3, 2, 4, 14, 14)
        expected, _ = LIF(vth=0.3).multi_step(cur, None)
    assert torch.equal(rec.spikes[0], expected)
    assert rec.spikes[0].sum() > 0


def test_conv_bad_pool_and_too_many_blocks():
    with pytest.raises(ValueError, match="pool='avg' is unknown; accepted: current, spikes"):
        SpikingConvNet(LIF, pool="avg")
    with pytest.raises(ValueError, match="too small for 5 pooled blocks"):
        SpikingConvNet(LIF, channels=(2, 2, 2, 2, 2))


def test_wrong_input_shape():
    net = tutorial_network()
    with pytest.raises(ValueError, match=r"input of shape \(20, 4, 100\) does not fit.*784 values"):
        net.forward_spikes(torch.zeros(20, 4, 100))


@pytest.mark.parametrize("T", [0, -1, 2.5])
def test_bad_time_steps(T):
    with pytest.raises(ValueError, match="time_steps"):
        tutorial_network(time_steps=T)


def test_bad_mode_and_readout():
    with pytest.raises(ValueError, match="mode='fast'"):
        tutorial_network(mode="fast")
    with pytest.raises(ValueError, match="readout='max'"):
        SpikingMLP(LIF, readout="max")


def test_conv_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        SpikingConvNet(LIF, input_shape=(784,))


@pytest.mark.slow  # a CLI run (tens of seconds); lighter tests cover the same code in the default run
def test_conv_pool_bench_script_prints_side_by_side_ratio():
    args = ["--rounds", "2", "--steps", "1", "--batch", "4", "--threads", "1", "model.channels=[2,4]", "model.fc=8"]
    r = run_script("experiments/bench_conv_pool.py", args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (
        len(
            re.findall(
                r"^round \d: pool=current \d+ samples/s  pool=spikes \d+ samples/s  ratio [\d.]+x$", r.stdout, re.M
            )
        )
        == 2
    ), r.stdout
    assert re.search(
        r"^median: .* current/spikes [\d.]+x \(rounds [\d.]+-[\d.]+x\), batch 4, 1 threads$", r.stdout, re.M
    ), r.stdout

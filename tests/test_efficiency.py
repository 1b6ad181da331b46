"""Efficiency metrics (snn_lab.models.efficiency) against hand-computed counts on tiny
networks and against a brute-force NeuroBench-style count (hooks on every connection,
binarised layer on binarised input) for random sparse inputs and weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from snn_lab.encoders import build_encoder
from snn_lab.models import RecurrentSNN, SNNModel, SpikingConvNet, SpikingLayer, SpikingMLP
from snn_lab.models.efficiency import (
    CONNECTIONS,
    EfficiencyMeter,
    EnergyModel,
    connection_sparsity,
    footprint,
    state_bytes,
)
from snn_lab.neurons import LI, LIF


def _measure(net: SNNModel, train: torch.Tensor, **kw) -> dict:
    meter = EfficiencyMeter(net, **kw)
    with torch.no_grad():
        _, rec = net.forward_spikes(train, return_record=True)
    meter.update(train, rec)
    return meter.summary()


def _one_layer(synapse: nn.Module, input_shape, time_steps: int = 2, vth: float = 0.5) -> SNNModel:
    return SNNModel([SpikingLayer(synapse, LIF(vth=vth))], tuple(input_shape), time_steps).eval()


# -- hand-computed counts ------------------------------------------------------------------
def test_linear_counts_nonzero_inputs_times_nonzero_fanout():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 2, 0], [0, 3, 0, 0], [1, 1, 1, 1]]))
        lin.bias.zero_()
    net = _one_layer(lin, (4,))
    # nonzero weights per input column: 2, 2, 2, 1
    train = torch.tensor([[[1.0, 0, 1, 0]], [[0, 1, 1, 1]]])  # T=2, B=1
    s = _measure(net, train)
    assert s["effective_acs"] == 4 + 5  # t0: inputs 0, 2 -> 2 + 2; t1: inputs 1, 2, 3 -> 2 + 2 + 1
    assert s["effective_macs"] == 0 and s["synops"] == 9
    assert s["dense_synops"] == 2 * 4 * 3  # every pair at every step
    assert s["samples"] == 1 and s["time_steps"] == 2
    assert s["connection_sparsity"] == pytest.approx(5 / 12)


def test_counts_are_per_sample_over_the_batch():
    lin = nn.Linear(3, 2, bias=False)
    nn.init.constant_(lin.weight, 1.0)
    net = _one_layer(lin, (3,), time_steps=1)
    train = torch.tensor([[[1.0, 1, 1], [0, 0, 1]]])  # T=1, B=2: 3 and 1 nonzero inputs
    s = _measure(net, train)
    assert s["synops"] == (3 * 2 + 1 * 2) / 2 and s["samples"] == 2


def test_conv2d_with_padding_counts_the_output_positions_each_pixel_reaches():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 0.5)
    net = _one_layer(conv, (1, 3, 3), time_steps=1)
    train = torch.zeros(1, 1, 1, 3, 3)
    train[0, 0, 0, 0, 0] = 1  # corner: reaches 2x2 output positions x 2 channels
    train[0, 0, 0, 1, 1] = 1  # centre: 3x3 positions x 2 channels
    train[0, 0, 0, 0, 1] = 1  # edge: 2x3 positions x 2 channels
    s = _measure(net, train)
    assert s["effective_acs"] == 4 * 2 + 9 * 2 + 6 * 2
    # dense: every output position's in-image taps: 4 corners x 4 + 4 edges x 6 + 9, x 2 channels
    assert s["dense_synops"] == (4 * 4 + 4 * 6 + 9) * 2


def test_conv2d_with_stride_and_zero_weights():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)  # 4x4 -> 2x2 outputs
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]]]))
    net = _one_layer(conv, (1, 4, 4), time_steps=1)
    train = torch.zeros(1, 1, 1, 4, 4)
    train[0, 0, 0, 1, 1] = 1  # under the kernel centre of output (0,0) and the (0,0)... taps of the others
    train[0, 0, 0, 0, 1] = 1
    # output (r, c) reads input (2r-1+i, 2c-1+j) with weight w[i, j]:
    # pixel (1,1): out(0,0) tap (2,2)=1, out(0,1) tap (2,0)=1, out(1,0) tap (0,2)=1, out(1,1) tap (0,0)=1 -> 4
    # pixel (0,1): out(0,0) tap (1,2)=0, out(0,1) tap (1,0)=0 -> 0 (rows of outputs 1,x start at input row 1)
    s = _measure(net, train)
    assert s["effective_acs"] == 4
    # dense: taps inside the image: out(0,0) 2x2, out(0,1) 2x3, out(1,0) 3x2, out(1,1) 3x3
    assert s["dense_synops"] == 4 + 6 + 6 + 9


def test_analog_first_layer_counts_macs_at_every_step():
    lin = nn.Linear(4, 3, bias=False)
    nn.init.constant_(lin.weight, 1.0)
    net = _one_layer(lin, (4,), time_steps=3)
    img = torch.tensor([[0.5, 0.0, 0.25, 1.0]])
    train = img.unsqueeze(0).expand(3, *img.shape)  # the direct encoder: the same input each step
    assert train.stride(0) == 0
    s = _measure(net, train)
    assert s["effective_macs"] == 3 * 3 * 3 and s["effective_acs"] == 0  # 3 nonzero inputs x 3 outputs x T
    e = EnergyModel()
    assert s["energy"]["pj_per_sample"] == pytest.approx(27 * e.mac_pj)
    # the same values materialised (stride 1): the same count
    assert _measure(net, train.contiguous())["effective_macs"] == 27


def test_direct_encoder_net_counts_macs_in_the_first_layer_acs_after():
    net = SpikingMLP(LIF, input_shape=(1, 4, 4), hidden=[8], encoder=build_encoder("direct"), time_steps=4).eval()
    for layer in net.layers:
        layer.synapse[-1].weight.data.mul_(4)
    img = torch.rand(5, 1, 4, 4)
    img[img < 0.3] = 0
    s = _measure(net, net.encode(img))
    first, second = s["layers"]
    nonzero = int((img != 0).sum())
    assert first["effective_macs"] * 5 == 4 * nonzero * 8 and first["effective_acs"] == 0
    assert second["effective_macs"] == 0 and second["effective_acs"] > 0


def test_signed_spikes_are_accumulates():
    lin = nn.Linear(3, 2, bias=False)
    nn.init.constant_(lin.weight, 1.0)
    net = _one_layer(lin, (3,), time_steps=1)
    s = _measure(net, torch.tensor([[[1.0, -1.0, 0.0]]]))
    assert s["effective_acs"] == 4 and s["effective_macs"] == 0


def test_a_train_wrongly_declared_binary_is_counted_from_its_data():
    lin = nn.Linear(2, 2, bias=False)
    nn.init.constant_(lin.weight, 1.0)
    net = _one_layer(lin, (2,), time_steps=1)
    train = torch.tensor([[[0.3, 0.0]]])
    meter = EfficiencyMeter(net)
    with torch.no_grad():
        _, rec = net.forward_spikes(train, return_record=True)
    meter.update(train, rec, input_binary=True)
    s = meter.summary()
    assert s["effective_macs"] == 2 and s["effective_acs"] == 0


def test_activation_sparsity_per_layer_and_weighted_overall():
    net = SpikingMLP(LIF, input_shape=(6,), hidden=[5, 3], num_classes=2, time_steps=3).eval()
    for layer in net.layers:
        layer.synapse[-1].weight.data.mul_(3)
    train = (torch.rand(3, 7, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    s = _measure(net, train)
    with torch.no_grad():
        _, rec = net.forward_spikes(train, return_record=True)
    zeros = [int((r == 0).sum()) for r in rec.spikes]
    sizes = [r.numel() for r in rec.spikes]
    assert [x["activation_sparsity"] for x in s["layers"]] == pytest.approx([z / n for z, n in zip(zeros, sizes)])
    assert s["activation_sparsity"] == pytest.approx(sum(zeros) / sum(sizes))
    assert 0 < s["activation_sparsity"] < 1  # both spikes and silence: the check is not vacuous
    assert [x["neurons"] for x in s["layers"]] == [5, 3, 2]


def test_a_non_spiking_readout_is_not_an_activation():
    net = SpikingMLP(LIF, input_shape=(4,), hidden=[3], num_classes=2, time_steps=2, readout="membrane").eval()
    assert isinstance(net.layers[-1].neuron, LI)
    s = _measure(net, torch.ones(2, 1, 4))
    assert s["layers"][-1]["spiking"] is False and s["layers"][-1]["activation_sparsity"] is None
    assert s["activation_sparsity"] == s["layers"][0]["activation_sparsity"]


def test_recurrent_connection_reads_the_previous_steps_spikes():
    net = RecurrentSNN(LIF, input_shape=(3,), hidden=[4], num_classes=2, time_steps=3).eval()
    rec_w = net.layers[0].recurrent_synapse.weight
    with torch.no_grad():
        rec_w.fill_(0.1)
        rec_w[0, 1] = 0.0  # input neuron 1 meets 3 nonzero weights, the others 4
        net.layers[0].synapse[-1].weight.mul_(5)
    train = (torch.rand(3, 2, 3, generator=torch.Generator().manual_seed(0)) < 0.7).float()
    s = _measure(net, train)
    with torch.no_grad():
        _, rec = net.forward_spikes(train, return_record=True)
    prev = rec.spikes[0][:-1]  # s_0 .. s_{T-2} feed steps 1 .. T-1
    assert prev.sum() > 0
    expected = float((prev.sum(dim=(0, 1)) * torch.tensor([4.0, 3, 4, 4])).sum()) / 2
    layer0 = s["layers"][0]
    kinds = [c["kind"] for c in layer0["connections"]]
    assert kinds == ["feedforward", "recurrent"]
    ff = float((train != 0).sum()) * 4 / 2  # dense input weights: every input meets 4 outputs
    assert layer0["effective_acs"] == pytest.approx(ff + expected)
    assert layer0["dense_synops"] == 3 * (3 * 4 + 4 * 4)


# -- static metrics ---------------------------------------------------------------------------
def test_footprint_parameters_buffers_and_state():
    net = _one_layer(nn.Linear(4, 3), (4,))
    f = footprint(net)
    assert f["parameter_bytes"] == (12 + 3) * 4  # float32 weight + bias
    assert f["buffer_bytes"] == 2 * 4  # the LIF's vth and decay
    assert f["total_bytes"] == f["parameter_bytes"] + f["buffer_bytes"]
    assert f["state_bytes_per_sample"] == state_bytes(net) == 3 * 4  # one membrane per neuron
    rnn = RecurrentSNN(LIF, input_shape=(3,), hidden=[4], num_classes=2)
    assert state_bytes(rnn) == (4 + 4 + 2) * 4  # membrane + last spikes of the recurrent layer, output membrane


def test_connection_sparsity_counts_weights_not_biases():
    lin = nn.Linear(5, 2)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.weight[0, :3] = 0
        lin.bias.zero_()
    assert connection_sparsity(_one_layer(lin, (5,))) == pytest.approx(3 / 10)
    assert connection_sparsity(nn.Sequential(nn.ReLU())) == 0.0


def test_energy_model_rejects_bad_values_and_defaults_match_the_config_schema():
    from omegaconf import OmegaConf

    from snn_lab.config.schema import EfficiencyConf

    with pytest.raises(ValueError, match="ac_pj=-1"):
        EnergyModel(ac_pj=-1)
    with pytest.raises(ValueError, match="mac_pj=nan"):
        EnergyModel(mac_pj=math.nan)
    schema = OmegaConf.to_container(OmegaConf.structured(EfficiencyConf))
    assert (schema["ac_pj"], schema["mac_pj"]) == (EnergyModel().ac_pj, EnergyModel().mac_pj) == (0.9, 4.6)


def test_summary_before_any_batch_is_refused_and_a_wrong_record_is_named():
    net = _one_layer(nn.Linear(2, 2), (2,))
    meter = EfficiencyMeter(net)
    with pytest.raises(ValueError, match="no batch was counted"):
        meter.summary()
    with pytest.raises(ValueError, match="record holds 0 layer outputs"):
        from snn_lab.models import Record

        meter.update(torch.zeros(2, 1, 2), Record())


# -- brute force --------------------------------------------------------------------------------
def _brute_force(net: SNNModel, train: torch.Tensor) -> tuple[float, float, float]:
    """(ACs, MACs, dense) per sample, NeuroBench's way: pre-hooks on every connection
    module of a step-mode run save each call's input; each input and weight is binarised
    (zero / nonzero), and the pairs are counted output by output with explicit loops
    (Linear) or the binarised module (Conv; its taps are looped in
    :func:`_conv_pairs_loop` for the small cases of the hypothesis test)."""
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: calls.append((mod, args[0].detach().clone())))
        for m in net.modules()
        if isinstance(m, CONNECTIONS)
    ]
    try:
        with torch.no_grad():
            net.forward_spikes(train, mode="step")
    finally:
        for h in hooks:
            h.remove()
    acs = macs = dense = 0.0
    for mod, x in calls:
        spikes = bool(((x == 0) | (x.abs() == 1)).all())
        xb, wb = (x != 0).float(), (mod.weight != 0).float()
        if isinstance(mod, nn.Linear):
            eff = float((xb.unsqueeze(1) * wb.unsqueeze(0)).sum())  # [B, out, in] pairs
            dense += x.shape[0] * wb.numel()
        else:
            eff = float(_binary_conv(mod, xb, wb).sum())
            dense += float(_binary_conv(mod, torch.ones_like(xb), torch.ones_like(wb)).sum())
        if spikes:
            acs += eff
        else:
            macs += eff
    B = train.shape[1]
    return acs / B, macs / B, dense / B


def _binary_conv(mod: nn.Conv2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w, None, mod.stride, mod.padding, mod.dilation, mod.groups)


def _conv_pairs_loop(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> int:
    """Nonzero (input, weight) pairs of a conv, by looping over every output position and tap."""
    B, C, H, W = x.shape
    n_out, _, K, _ = w.shape
    Ho, Wo = (H + 2 * padding - K) // stride + 1, (W + 2 * padding - K) // stride + 1
    n = 0
    for b in range(B):
        for o in range(n_out):
            for r in range(Ho):
                for c in range(Wo):
                    for ci in range(C):
                        for i in range(K):
                            for j in range(K):
                                y, z = r * stride - padding + i, c * stride - padding + j
                                if 0 <= y < H and 0 <= z < W and x[b, ci, y, z] != 0 and w[o, ci, i, j] != 0:
                                    n += 1
    return n


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    k=st.sampled_from([1, 2, 3]),
    stride=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1, 2]),
    density=st.floats(0.0, 1.0),
    w_density=st.floats(0.0, 1.0),
)
def test_conv_counts_equal_a_loop_over_every_output_and_tap(data, k, stride, padding, density, w_density):
    c_in, c_out = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    h, w = data.draw(st.integers(k, 5)), data.draw(st.integers(k, 5))
    seed = data.draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=False)
    with torch.no_grad():
        conv.weight.copy_(
            torch.randn(conv.weight.shape, generator=g) * (torch.rand(conv.weight.shape, generator=g) < w_density)
        )
    T, B = 2, 2
    train = (torch.rand(T, B, c_in, h, w, generator=g) < density).float()
    net = _one_layer(conv, (c_in, h, w), time_steps=T)
    s = _measure(net, train)
    expected = _conv_pairs_loop(train.reshape(T * B, c_in, h, w), conv.weight, stride, padding)
    assert s["effective_acs"] * B == expected and s["effective_macs"] == 0
    dense = _conv_pairs_loop(torch.ones(T * B, c_in, h, w), torch.ones_like(conv.weight), stride, padding)
    assert s["dense_synops"] * B == dense


@settings(max_examples=25, deadline=None)
@given(
    n_in=st.integers(1, 12),
    n_out=st.integers(1, 6),
    T=st.integers(1, 4),
    B=st.integers(1, 4),
    density=st.floats(0.0, 1.0),
    w_density=st.floats(0.0, 1.0),
    analog=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_counts_equal_brute_force(n_in, n_out, T, B, density, w_density, analog, seed):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(lin.weight.shape, generator=g) < w_density)
    values = torch.rand(T, B, n_in, generator=g) if analog else torch.ones(T, B, n_in)
    train = values * (torch.rand(T, B, n_in, generator=g) < density)
    net = _one_layer(lin, (n_in,), time_steps=T)
    s = _measure(net, train)
    acs, macs, dense = _brute_force(net, train)
    assert (s["effective_acs"], s["effective_macs"]) == (pytest.approx(acs), pytest.approx(macs))
    assert s["dense_synops"] == pytest.approx(dense)


NETS = {
    "mlp": lambda: SpikingMLP(LIF, input_shape=(1, 6, 6), hidden=[12, 8], time_steps=4, dropout=0.2),
    "mlp_direct": lambda: SpikingMLP(
        LIF, input_shape=(1, 6, 6), hidden=[12], time_steps=4, encoder=build_encoder("direct")
    ),
    "conv_current": lambda: SpikingConvNet(LIF, input_shape=(1, 8, 8), channels=[3, 4], fc=10, time_steps=3),
    "conv_spikes": lambda: SpikingConvNet(
        LIF, input_shape=(1, 8, 8), channels=[3, 4], fc=10, time_steps=3, pool="spikes"
    ),
    "rsnn": lambda: RecurrentSNN(LIF, input_shape=(1, 6, 6), hidden=[10], time_steps=4),
}


@pytest.mark.parametrize("mode", ["layer", "step"])
@pytest.mark.parametrize("arch", sorted(NETS))
def test_networks_count_what_hooks_on_every_connection_count(arch, mode):
    """The meter reads only the record (and runs pre-connection ops such as max-pool);
    the reference re-runs the network step by step with a hook on every connection."""
    torch.manual_seed(0)
    net = NETS[arch]().eval()
    net.mode = mode
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.data.mul_(3)  # untrained: stronger weights so every layer spikes
    if net.encoder is None:
        from snn_lab.encoders import BernoulliEncoder

        net.encoder = BernoulliEncoder()
    img = torch.rand(3, *[int(d) for d in net.input_shape], generator=torch.Generator().manual_seed(2))
    train = net.encode(img, generator=torch.Generator().manual_seed(3))
    s = _measure(net, train)
    acs, macs, dense = _brute_force(net, train)
    assert s["effective_acs"] == pytest.approx(acs) and s["effective_macs"] == pytest.approx(macs)
    assert s["dense_synops"] == pytest.approx(dense)
    assert s["effective_acs"] > 0
    assert (s["effective_macs"] > 0) == (arch == "mlp_direct")


def test_a_custom_synapse_container_is_counted_through_hooks():
    class Twice(nn.Module):  # not a Sequential: the meter cannot know the order of its parts
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 5)
            self.b = nn.Linear(5, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    net = _one_layer(Twice(), (4,), time_steps=2)
    train = (torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0)) < 0.6).float()
    s = _measure(net, train)
    acs, macs, dense = _brute_force(net, train)
    assert (s["effective_acs"], s["effective_macs"], s["dense_synops"]) == pytest.approx((acs, macs, dense))
    assert macs > 0  # the second Linear reads the first one's analog output


# -- training: logged per validation epoch, metrics.json, sweep objectives ---------------------
def test_validation_epoch_counts_every_batch_and_logs_the_figures(compose_cfg):
    """The LightningModule's meter (one per validation epoch, on the recorded spikes of
    every batch) gives what a meter fed the same batches gives; its figures are logged."""
    import warnings

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from snn_lab.config.build import net_config
    from snn_lab.lit.module import SNNLitModule

    cfg = compose_cfg(["encoder=direct", "model.hidden=[16]", "time_steps=3"])  # direct: nothing random
    torch.manual_seed(0)
    module = SNNLitModule(net_config(cfg), seed=0, efficiency={"enabled": True, "ac_pj": 1.0, "mac_pj": 10.0})
    for layer in module.net.layers:
        layer.synapse[-1].weight.data.mul_(4)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, 1, 28, 28, generator=g) * (torch.rand(24, 1, 28, 28, generator=g) < 0.3)
    data = TensorDataset(images, torch.randint(0, 10, (24,), generator=g))
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(module, DataLoader(data, batch_size=10), verbose=False)
    got = module.efficiency
    meter = EfficiencyMeter(module.net.eval(), EnergyModel(1.0, 10.0))
    with torch.no_grad():
        for start in range(0, 24, 10):
            train = module.net.encode(images[start : start + 10])
            _, rec = module.net.forward_spikes(train, return_record=True)
            meter.update(train, rec)
    want = meter.summary()
    assert got["samples"] == 24 and got["synops"] == pytest.approx(want["synops"])
    assert got["effective_macs"] > 0 and got["effective_acs"] > 0  # analog first layer, spikes after
    assert got["activation_sparsity"] == pytest.approx(want["activation_sparsity"])
    assert got["energy"]["pj_per_sample"] == pytest.approx(got["effective_acs"] + 10 * got["effective_macs"])
    logged = trainer.callback_metrics
    assert float(logged["val/synops"]) == pytest.approx(got["synops"], rel=1e-6)
    assert float(logged["val/activation_sparsity/layer0"]) == pytest.approx(got["layers"][0]["activation_sparsity"])
    assert float(logged["val/synops_macs"]) == pytest.approx(got["effective_macs"], rel=1e-6)
    assert len(module.efficiency_history) == 1


def test_a_training_run_writes_the_efficiency_of_its_best_checkpoint(tiny_run):
    from snn_lab.models import read_checkpoint

    m = json.loads((tiny_run / "metrics.json").read_text())
    eff = m["efficiency"]
    # the best checkpoint's own record (saved with its weights), labelled as such
    assert eff == {
        **read_checkpoint(tiny_run / "checkpoints" / "best.ckpt")["efficiency"],
        "measured_on": eff["measured_on"],
        "history": eff["history"],
    }
    assert "best checkpoint" in eff["measured_on"] and f"{eff['samples']} samples" in eff["measured_on"]
    # TINY_RUN: 784-64-10, T=4, Bernoulli input: all accumulates
    assert eff["effective_macs"] == 0 and eff["synops"] == eff["effective_acs"] > 0
    assert eff["dense_synops"] == 4 * (784 * 64 + 64 * 10)
    assert eff["footprint"]["parameter_bytes"] == 4 * (784 * 64 + 64 + 64 * 10 + 10)
    assert eff["synops"] == pytest.approx(sum(layer["synops"] for layer in eff["layers"]))
    assert 0 < eff["activation_sparsity"] < 1 and eff["connection_sparsity"] == 0
    assert eff["energy"]["pj_per_sample"] == pytest.approx(0.9 * eff["effective_acs"])
    assert "arithmetic energy only" in eff["energy"]["scope"] and "Horowitz" in eff["energy"]["source"]
    assert [h["epoch"] for h in eff["history"]] == [0] and eff["history"][0]["synops"] == eff["synops"]
    # TensorBoard: the scalars of every validation epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for ev in (tiny_run / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [e.value for e in acc.Scalars(tag)]
    assert scalars["val/synops"] == [pytest.approx(eff["synops"], rel=1e-6)]
    assert scalars["val/activation_sparsity"] == [pytest.approx(eff["activation_sparsity"], rel=1e-6)]
    assert {"val/synops/layer0", "val/synops/layer1", "val/activation_sparsity/layer1", "hparams/synops"} <= set(
        scalars
    )


def test_bad_efficiency_config_and_objectives_are_refused_naming_the_key(compose_cfg):
    from snn_lab.cli.train_app import _check_efficiency
    from snn_lab.errors import ConfigError

    for args, message in (
        (["efficiency.mac_pj=-2"], "efficiency.mac_pj=-2.0 is invalid: must be a finite number of picojoules >= 0"),
        (["objectives=[best_val_acc,synops]"], "objectives: 'synops' is unknown; accepted: best_val_acc, "),
        (["objectives=[efficiency.synops]", "efficiency.enabled=false"], "needs efficiency.enabled=true"),
    ):
        with pytest.raises(ConfigError) as err:
            _check_efficiency(compose_cfg(args))
        assert message in str(err.value) and "\n" not in str(err.value)
    _check_efficiency(compose_cfg(["hparams_search=mnist_pareto"]))  # the shipped search passes


def test_deploy_report_counts_the_deployed_input_spikes(trained_tiny_ckpt, tmp_path):
    import numpy as np

    from snn_lab.deploy import run_deploy
    from snn_lab.deploy.api import load_images
    from snn_lab.deploy.runtime import InputSource
    from snn_lab.models import load_network

    report = run_deploy(
        trained_tiny_ckpt, backend="eager", batch_size=28, out_dir=tmp_path, num_samples=90, latency_batch1=False
    )
    eff = report["efficiency"]
    assert json.loads((tmp_path / "deploy_report.json").read_text())["efficiency"] == eff
    assert eff["samples"] == 90 and "deployed input spikes of the first 90 of 90" in eff["measured_on"]
    # the counter-based Bernoulli draws the deployed graph got (seed 0), counted again here
    net = load_network(trained_tiny_ckpt)
    images, _ = load_images(net, num_samples=90)
    train = InputSource(net, 0, net.time_steps).spike_train(images, np.arange(90))
    assert eff["synops"] == pytest.approx(_measure(net, train)["synops"])
    assert eff["effective_macs"] == 0 and eff["footprint"]["total_bytes"] > 0


def test_deploy_counts_only_the_real_samples_of_a_padded_last_batch():
    import numpy as np

    from snn_lab.deploy.efficiency import deploy_efficiency
    from snn_lab.deploy.runtime import InputSource

    images = torch.rand(10, 1, 4, 4)
    net = SpikingMLP(  # the population encoder makes 2 input channels of each pixel
        LIF, input_shape=(2, 4, 4), hidden=[6], time_steps=3, encoder=build_encoder("population", size=2)
    ).eval()
    source = InputSource(net, 0, 3)
    eff = deploy_efficiency(net, source, images, deploy_batch=4)  # batches of 4, 4, 2 (+2 padding)
    assert eff["samples"] == 10
    # the deployed batches' draws, padding dropped
    total = 0.0
    for start in range(0, 10, 4):
        img = images[start : start + 4]
        ids = np.arange(start, start + img.shape[0])
        k = img.shape[0]
        if k < 4:
            img = torch.cat([img, torch.zeros(4 - k, 1, 4, 4)])
            ids = np.concatenate([ids, np.full(4 - k, ids[-1])])
        train = source.spike_train(img, ids)[:, :k]
        total += _measure(net, train)["synops"] * k
    assert eff["synops"] == pytest.approx(total / 10)


@pytest.mark.slow  # a CLI run (tens of seconds); lighter tests cover the same code in the default run
def test_the_best_epoch_is_reported_with_every_epochs_history(tmp_path):
    """Two epochs that cannot improve (a direct encoder: nothing random; a learning rate
    that moves nothing): the best checkpoint stays at epoch 0, so metrics.json reports
    epoch 0's figures, and the history still has both epochs (testing the best
    checkpoint loads its own, shorter history)."""
    from helpers import TINY_RUN, train

    tiny = [a for a in TINY_RUN if not a.startswith("trainer.max_epochs")]
    r = train([*tiny, "trainer.max_epochs=2", "encoder=direct", "optimizer.lr=1e-30", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    eff = m["efficiency"]
    assert [h["epoch"] for h in m["history"]] == [0, 1] and m["history"][0]["val_acc"] == m["history"][1]["val_acc"]
    assert eff["epoch"] == 0 and "epoch 0" in eff["measured_on"]
    assert [h["epoch"] for h in eff["history"]] == [0, 1]
    assert eff["history"][0]["synops"] == eff["synops"] and eff["effective_macs"] > 0


@pytest.mark.slow
def test_ddp_ranks_add_their_counts(tmp_path):
    """Two CPU processes each validate half of the 200 images; metrics.json counts all
    200, equal to one process recounting them from the best checkpoint."""
    from omegaconf import OmegaConf

    from helpers import TINY_RUN, train
    from snn_lab.config.build import build_datamodule
    from snn_lab.models import load_network

    r = train([*TINY_RUN, "trainer=ddp", "encoder=direct", "target.threads=1", "hydra.run.dir=run"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "run"
    eff = json.loads((run / "metrics.json").read_text())["efficiency"]
    dm = build_datamodule(OmegaConf.load(run / ".hydra" / "config.yaml").data)
    dm.setup("fit")
    net = load_network(run / "checkpoints" / "best.ckpt")
    meter = EfficiencyMeter(net)
    with torch.no_grad():
        for batch in dm.val_dataloader():
            images, _ = dm.on_after_batch_transfer(batch, 0)
            train_in = net.encode(images)
            _, rec = net.forward_spikes(train_in, return_record=True)
            meter.update(train_in, rec)
    want = meter.summary()
    assert eff["samples"] == want["samples"] == 200
    assert eff["synops"] == pytest.approx(want["synops"]) and eff["effective_macs"] > 0
    assert eff["activation_sparsity"] == pytest.approx(want["activation_sparsity"])

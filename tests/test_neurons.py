import pytest
import torch

from helpers import step_loop
from snn_lab.neurons import ALIF, IF, LI, LIF, NEURONS, PLIF, Izhikevich, Surrogate, build_neuron

# LIF.multi_step against the step loop, for any input: test_engine.py (property test).


def run(neuron, current, steps=None):
    """Per-step drive ``current[T, ...]``, or a constant one for ``steps`` steps, through
    ``step``; returns spikes [T, ...] and membranes [T, ...]."""
    spikes, mems, _ = step_loop(neuron, current, steps)
    return spikes, mems


def test_lif_hand_computed_two_neuron_trace():
    """Two LIF neurons (vth 0.4, decay 0.8) driven through fixed weights.

    Inputs s_t (2 inputs) for 5 steps and W = [[0.3, 0.0], [0.25, 0.2]], no bias:
        s: t1 (1,0)  t2 (1,1)  t3 (0,0)  t4 (1,0)  t5 (0,0)
    neuron A (W row 0): I = 0.3, 0.3, 0, 0.3, 0
        V1 = 0.3          -> no spike
        V2 = 0.3*0.8+0.3 = 0.54 -> spike
        V3 = reset (spiked at t2): 0*0.8 + 0 = 0 -> no spike
        V4 = 0 + 0.3 = 0.3 -> no spike
        V5 = 0.3*0.8 = 0.24 -> no spike
    neuron B (W row 1): I = 0.25, 0.45, 0, 0.25, 0
        V1 = 0.25 -> no
        V2 = 0.25*0.8+0.45 = 0.65 -> spike
        V3 = 0 (delayed reset) -> no
        V4 = 0.25 -> no
        V5 = 0.2 -> no
    The stored membrane at t2 is the pre-reset 0.54/0.65 (the tutorial keeps it), and the
    reset shows only at t3.
    """
    W = torch.tensor([[0.3, 0.0], [0.25, 0.2]])
    s = torch.tensor([[1, 0], [1, 1], [0, 0], [1, 0], [0, 0]], dtype=torch.float32)
    spikes, mems = run(LIF(vth=0.4, decay=0.8), s @ W.T)
    assert spikes.tolist() == [[0, 0], [1, 1], [0, 0], [0, 0], [0, 0]]
    torch.testing.assert_close(mems, torch.tensor([[0.3, 0.25], [0.54, 0.65], [0.0, 0.0], [0.3, 0.25], [0.24, 0.2]]))


def test_lif_threshold_is_strict():
    spikes, _ = run(LIF(vth=0.5, decay=0.0), torch.tensor([0.5]), 3)
    assert spikes.sum() == 0
    spikes, _ = run(LIF(vth=0.5, decay=0.0), torch.tensor([0.5001]), 3)
    assert spikes.sum() == 3


def test_if_integrates_without_leak():
    spikes, mems = run(IF(vth=1.0), torch.tensor([0.3]), 4)
    torch.testing.assert_close(mems[:, 0], torch.tensor([0.3, 0.6, 0.9, 1.2]))
    assert spikes[:, 0].tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("name", ["if", "lif", "plif", "alif"])
def test_rate_grows_with_constant_input(name):
    neuron = build_neuron(name, vth=0.4)
    drive = torch.linspace(0.05, 1.0, 12)
    spikes, _ = run(neuron, drive, 100)
    rate = spikes.mean(0)
    assert torch.all(rate[1:] >= rate[:-1]), rate
    assert rate[-1] > rate[0]


def test_subtract_reset_keeps_the_excess():
    spikes, mems = run(IF(vth=1.0, reset="subtract"), torch.tensor([0.7]), 3)
    # V: 0.7, 1.4 (spike), then 1.4 - 1.0 + 0.7 = 1.1 (spike)
    torch.testing.assert_close(mems[:, 0], torch.tensor([0.7, 1.4, 1.1]))
    assert spikes[:, 0].tolist() == [0, 1, 1]


def test_plif_decay_is_learnable_and_starts_at_value():
    n = PLIF(vth=0.4, decay=0.7)
    assert n.leak().item() == pytest.approx(0.7, abs=1e-6)
    x = torch.full((5, 3), 0.3)
    s, _ = n.multi_step(x.requires_grad_())
    (s.sum() + 0).backward()
    assert n.decay_logit.grad is not None and n.decay_logit.grad.abs() > 0


def test_alif_adapts_interspike_interval_grows():
    spikes, _ = run(ALIF(vth=0.4, decay=0.9, beta=0.3, rho=0.98), torch.tensor([0.2]), 200)
    times = torch.nonzero(spikes[:, 0]).flatten()
    isi = times.diff().float()
    assert len(isi) >= 5
    assert isi[-3:].mean() > isi[:2].mean()


def test_izhikevich_regular_spiking_adapts():
    """RS cell (a=.02, b=.2, c=-65, d=8) under I=10: tonic spiking whose inter-spike
    interval lengthens over the first spikes (spike-frequency adaptation)."""
    spikes, mems = run(Izhikevich(gain=1.0), torch.tensor([10.0]), 300)
    times = torch.nonzero(spikes[:, 0]).flatten()
    isi = times.diff()
    assert 4 <= len(times) <= 40
    assert isi[0] < isi[-1]
    assert torch.all(isi[1:] >= isi[:-1] - 1)  # non-decreasing up to 1 ms of jitter
    assert mems.max() <= 30.0 and mems.min() >= -80.0


def test_izhikevich_silent_without_input():
    spikes, _ = run(Izhikevich(gain=1.0), torch.tensor([0.0]), 200)
    assert spikes.sum() == 0


def test_li_integrates_without_spiking():
    out, _ = run(LI(decay=0.5), torch.tensor([1.0]), 3)
    torch.testing.assert_close(out[:, 0], torch.tensor([1.0, 1.5, 1.75]))


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_gradients_flow_through_time(name):
    neuron = build_neuron(name, surrogate=Surrogate("sigmoid"))
    w = torch.randn(4, 6, requires_grad=True)
    scale = 30.0 if name == "izhikevich" else 1.0
    x = torch.rand(10, 3, 4)
    s, _ = neuron.multi_step((x @ w) * scale)
    s.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_state_is_explicit_no_hidden_buffers():
    n = LIF()
    assert set(dict(n.named_buffers())) == {"vth", "decay"}
    state = n.init_state((2, 3))
    _, new = n.step(torch.ones(2, 3), state)
    assert torch.equal(state.v, torch.zeros(2, 3))  # input state untouched
    assert torch.equal(new.v, torch.ones(2, 3))


def test_learnable_flags():
    n = LIF(learn_vth=True)
    assert isinstance(n.vth, torch.nn.Parameter) and not isinstance(n.decay, torch.nn.Parameter)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vth=0.0), r"vth=0\.0"),
        (dict(vth=-1), "vth=-1"),
        (dict(decay=1.5), r"decay=1\.5"),
        (dict(decay=-0.1), "decay"),
        (dict(reset="soft"), "reset='soft'.*hard, subtract"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIF(**kwargs)


def test_unknown_neuron_lists_accepted():
    with pytest.raises(ValueError, match="neuron='lfi' is unknown; accepted: if, lif, plif, alif, izhikevich"):
        build_neuron("lfi")

"""The fast multi-step engine equals the per-step path: spikes bit for bit, gradients
within float tolerance (fused LIF scan, spike-aware matmuls, whole models)."""

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from helpers import step_loop
from snn_lab import engine
from snn_lab.encoders import build_encoder
from snn_lab.engine import lif_scan, lif_scan_reference, native, spike_linear
from snn_lab.engine import random as engine_random
from snn_lab.models import tutorial_network
from snn_lab.neurons import ALIF, LIF, Surrogate

NATIVE = native.available()
BACKENDS = [pytest.param(False, id="torch")] + ([pytest.param(True, id="native")] if NATIVE else [])


def _inputs(gen, T=7, shape=(5, 6), dtype=torch.float32):
    x = (torch.randn(T, *shape, generator=gen, dtype=dtype) * 0.6).requires_grad_()
    v0 = (torch.randn(*shape, generator=gen, dtype=dtype) * 0.6).requires_grad_()
    return x, v0


@pytest.mark.parametrize("use_native", BACKENDS)
@pytest.mark.parametrize("sg", ["rectangle", "triangle", "sigmoid", "atan"])
@pytest.mark.parametrize("reset", ["hard", "subtract"])
@pytest.mark.parametrize("detach", [False, True])
def test_scan_equals_step_loop(gen, use_native, sg, reset, detach):
    surrogate = Surrogate(sg)
    x, v0 = _inputs(gen)
    vth = torch.tensor(0.4, requires_grad=True)
    decay = torch.tensor(0.8, requires_grad=True)
    w, wv = torch.randn(x.shape, generator=gen), torch.randn(v0.shape, generator=gen)
    with engine.using(native=use_native):
        s1, v1 = lif_scan(x, v0, vth, decay, surrogate.name, surrogate.width, reset, detach)
        g1 = torch.autograd.grad((s1 * w).sum() + (v1 * wv).sum(), [x, v0, vth, decay])
    s2, v2 = lif_scan_reference(x, v0, vth, decay, surrogate, reset, detach)
    g2 = torch.autograd.grad((s2 * w).sum() + (v2 * wv).sum(), [x, v0, vth, decay])
    assert torch.equal(s1, s2) and torch.equal(v1, v2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not NATIVE, reason="native kernels not built")
@pytest.mark.parametrize("kind", [0, 1, 2, 3])  # rectangle, triangle, sigmoid, atan
@pytest.mark.parametrize("hard,detach", [(True, False), (False, False), (True, True)])
def test_native_backward_vector_lanes_equal_the_scalar_tail(gen, kind, hard, detach):
    """Neuron 8 runs the kernel's scalar tail, neurons 0-7 its 8-lane path: fed the same
    membranes and gradients as neuron 0, neuron 8's dL/dx must be the same floats."""
    T, P = 6, 9
    V = torch.randn(T, P, generator=gen) * 0.6 + 0.4
    gS = torch.randn(T, P, generator=gen)
    gv = torch.randn(P, generator=gen)
    for t in (V, gS):
        t[:, 8] = t[:, 0]
    gv[8] = gv[0]
    G, gd = native.lif_bwd(V, gS, gv, 0.4, 0.8, hard, detach, kind, 1.3, want_decay=True)
    assert torch.equal(G[:, 8], G[:, 0])
    # and the decay gradient's vector accumulation agrees with a float64 sum
    pre = torch.where(V[:-1] > 0.4, torch.zeros_like(V[:-1]), V[:-1]) if hard else V[:-1] - 0.4 * (V[:-1] > 0.4)
    assert gd == pytest.approx(float((G[1:].double() * pre.double()).sum()), rel=1e-9, abs=1e-9)


def test_scan_float64_is_exact_to_rounding(gen):
    x, v0 = _inputs(gen, dtype=torch.float64)
    sg = Surrogate()
    s1, v1 = lif_scan(x, v0, 0.4, 0.8, sg.name)
    g1 = torch.autograd.grad(s1.sum() + v1.sum(), [x, v0])
    s2, v2 = lif_scan_reference(x, v0, 0.4, 0.8, sg)
    g2 = torch.autograd.grad(s2.sum() + v2.sum(), [x, v0])
    assert s1.dtype == torch.float64 and torch.equal(s1, s2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("use_native", BACKENDS)
def test_scan_no_grad_matches_and_chunks_compose(gen, use_native):
    """Inference path == training path; two chunks with the carried state == one run."""
    x = torch.randn(12, 3, 40, generator=gen)
    sg = Surrogate()
    with engine.using(native=use_native), torch.no_grad():
        s_all, v_all = lif_scan(x, None, 0.4, 0.8, sg.name)
        s_a, v_a = lif_scan(x[:5], None, 0.4, 0.8, sg.name)
        s_b, v_b = lif_scan(x[5:], v_a, 0.4, 0.8, sg.name)
    s_ref, v_ref = lif_scan_reference(x, None, 0.4, 0.8, sg)
    assert torch.equal(s_all, s_ref) and torch.equal(v_all, v_ref)
    assert torch.equal(torch.cat([s_a, s_b]), s_all) and torch.equal(v_b, v_all)


# any currents (ties with vth, zeros, large values), any neuron shape and T >= 1
currents = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 12), hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)).map(lambda s: (s[0], *s[1])),
    elements=st.floats(-3, 3, width=32) | st.sampled_from([0.0, 0.4, -0.4, 0.8, 1.0]),
)


@pytest.mark.parametrize("use_native", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(
    x=currents,
    vth=st.floats(0.0625, 2.0, width=32),
    decay=st.floats(0.0, 1.0, width=32),
    reset=st.sampled_from(["hard", "subtract"]),
)
def test_lif_scan_spikes_equal_the_step_loop_for_any_input(use_native, x, vth, decay, reset):
    """The fused scan, LIF.multi_step (engine on and off) and looping LIF.step give the
    same spikes and last membrane, bit for bit."""
    x = torch.from_numpy(x)
    neuron = LIF(vth, decay, reset=reset)
    with engine.using(native=use_native):
        s_scan, v_scan = lif_scan(x, None, neuron.vth, neuron.decay, neuron.spike.name, neuron.spike.width, reset)
        s_fused, st_fused = neuron.multi_step(x)
    with engine.using(enabled=False):
        s_base, st_base = neuron.multi_step(x)
    s_loop, v_loop, st_loop = step_loop(neuron, x)
    assert s_scan.shape == x.shape and set(s_scan.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(s_scan, s_loop) and torch.equal(s_fused, s_loop) and torch.equal(s_base, s_loop)
    assert torch.equal(v_scan, st_loop.v) and torch.equal(st_fused.v, st_loop.v) and torch.equal(st_base.v, v_loop[-1])


# kind -> (neuron_maker's kind, surrogate, parameters): the LIF family the fused scan serves
NEURON_CASES = {
    "lif": ("lif", "rectangle", {}),
    "lif_learn": ("lif", "rectangle", {"learn_vth": True, "learn_decay": True}),
    "subtract_detach": (
        "lif",
        "rectangle",
        {"vth": 0.3, "decay": 0.9, "reset": "subtract", "detach_reset": True, "learn_vth": True},
    ),
    "if": ("if", "rectangle", {"vth": 0.5}),
    "plif": ("plif", "atan", {"learn_vth": True}),
}


@pytest.mark.parametrize("use_native", BACKENDS)
@pytest.mark.parametrize("kind", list(NEURON_CASES))
def test_neuron_multi_step_uses_engine_and_matches_step(gen, use_native, kind, neuron_maker):
    name, surrogate, params = NEURON_CASES[kind]
    make = neuron_maker(name, surrogate, **params)
    fused, looped = make(), make()
    looped.load_state_dict(fused.state_dict())
    x = torch.randn(9, 4, 33, generator=gen) * 0.5
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    with engine.using(native=use_native):
        s1, st1 = fused.multi_step(x1)
    s2, _, st2 = step_loop(looped, x2)
    assert torch.equal(s1, s2) and torch.equal(st1.v, st2.v)
    w = torch.randn(s1.shape, generator=gen)
    (s1 * w).sum().backward()
    (s2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    for (n, p1), (_, p2) in zip(fused.named_parameters(), looped.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_engine_off_and_overridden_step_use_the_loop(gen, monkeypatch):
    calls = []
    real = engine.lif_scan

    def spy(*a, **k):
        calls.append(True)
        return real(*a, **k)

    monkeypatch.setattr(engine, "lif_scan", spy)

    class Custom(LIF):
        def step(self, x, state):  # a variant: the fused scan must not stand in for it
            return super().step(x * 2, state)

    x = torch.randn(4, 2, 3, generator=gen)
    Custom().multi_step(x)
    with engine.using(enabled=False):
        LIF().multi_step(x)
    ALIF().multi_step(x)  # not in the LIF family: always the base loop
    assert not calls
    LIF().multi_step(x)
    assert calls == [True]


@pytest.mark.parametrize("matmul", ["dense", "sparse", "auto", "bf16x3"])
def test_tutorial_network_layer_mode_equals_step_mode(gen, matmul):
    torch.manual_seed(0)
    step_net = tutorial_network(mode="step")
    layer_net = tutorial_network(mode="layer")
    layer_net.load_state_dict(step_net.state_dict())
    p = torch.rand(16, 1, 28, 28, generator=gen) * (torch.rand(16, 1, 28, 28, generator=gen) < 0.3)
    train = (torch.rand(20, *p.shape, generator=gen) < p).float()
    y = torch.randint(0, 10, (16,), generator=gen)
    out_s, rec_s = step_net.forward_spikes(train, return_record=True)
    F.cross_entropy(out_s, y).backward()
    with engine.using(matmul=matmul):
        out_l, rec_l = layer_net.forward_spikes(train, return_record=True)
        F.cross_entropy(out_l, y).backward()
    mismatches = sum(int((a != b).sum()) for a, b in zip(rec_s.spikes, rec_l.spikes))
    if matmul == "dense" or (matmul in ("sparse", "auto") and not NATIVE):
        assert mismatches == 0 and torch.equal(out_s, out_l)  # the same GEMM: bit-identical
    else:  # other summation order: a spike may flip only at a float tie with vth
        assert mismatches <= 1e-4 * sum(a.numel() for a in rec_s.spikes)
    if mismatches == 0:
        for (n, a), b in zip(step_net.named_parameters(), layer_net.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("strategy", ["dense", "sparse", "auto", "bf16x3"])
@pytest.mark.parametrize("binary,time_steps", [(None, None), (True, None), (True, 5), (None, 10)])
def test_spike_linear_values_and_grads(gen, strategy, binary, time_steps):
    """Row-indexed (no T) and temporally grouped (T given) spikes, incl. inputs that fire
    at most steps (the complement path): the rate-coded rows repeat over time."""
    p = torch.rand(5, 70, generator=gen) * (torch.rand(5, 70, generator=gen) < 0.5)
    x = (torch.rand(10, 5, 70, generator=gen) < p).float().reshape(50, 70).requires_grad_()
    W = torch.randn(40, 70, generator=gen).requires_grad_()
    b = torch.randn(40, generator=gen).requires_grad_()
    out = spike_linear(x, W, b, strategy, binary, time_steps=time_steps)
    ref = F.linear(x, W, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(out.shape, generator=gen)
    got = torch.autograd.grad(out, [x, W, b], g)
    want = torch.autograd.grad(ref, [x, W, b], g)
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not NATIVE, reason="native kernels not built")
@pytest.mark.parametrize("strategy", ["auto", "sparse", "dense"])
@pytest.mark.parametrize("n_out", [10, 100, 200])  # a readout, a partial column tile, several tiles
@pytest.mark.parametrize(
    "reset, detach, sg", [("hard", False, "rectangle"), ("subtract", False, "atan"), ("hard", True, "triangle")]
)
def test_spike_linear_lif_equals_spike_linear_then_the_scan(gen, strategy, n_out, reset, detach, sg):
    """The LIF scan run by the synapse's own node (on the sparse temporal path, inside the
    gather kernel) gives the floats of spike_linear followed by lif_scan: the same spikes
    and membranes bit for bit, the same gradients."""
    T, B, K = 12, 6, 90
    p = torch.rand(B, K, generator=gen) * (torch.rand(B, K, generator=gen) < 0.6)
    x = (torch.rand(T, B, K, generator=gen) < p).float().reshape(T * B, K).requires_grad_()
    W = (torch.randn(n_out, K, generator=gen) * 0.3).requires_grad_()
    b = (torch.randn(n_out, generator=gen) * 0.2).requires_grad_()
    neuron = LIF(vth=0.4, decay=0.8, surrogate=Surrogate(sg), reset=reset, detach_reset=detach)
    spec = neuron.fixed_scan()
    assert spec is not None
    fused = engine.spike_linear_lif(x, W, b, spec, T, strategy, True)
    cur = spike_linear(x, W, b, strategy, True, time_steps=T)
    unfused, _ = lif_scan(cur.view(T, B, n_out), None, 0.4, 0.8, sg, None, reset, detach)
    assert fused is not None and fused.grad_fn is not None
    assert torch.equal(fused, unfused.reshape(T * B, n_out))
    assert 0 < float(fused.detach().mean()) < 1
    g = torch.randn(fused.shape, generator=gen)
    got = torch.autograd.grad(fused, [x, W, b], g)
    want = torch.autograd.grad(unfused.reshape(T * B, n_out), [x, W, b], g)
    for a, c in zip(got, want):
        assert torch.equal(a, c)


def test_fixed_scan_is_offered_only_by_a_plain_lif_with_fixed_parameters():
    from snn_lab.neurons import IF, LI, PLIF

    vth, decay = float(torch.tensor(0.4)), float(torch.tensor(0.8))  # the neuron's float32 buffers
    rect = native.SURROGATE_KINDS["rectangle"]
    assert LIF().fixed_scan() == engine.LIFSpec(vth, decay, True, False, rect, 0.5)
    assert IF(vth=1.0, reset="subtract").fixed_scan() == engine.LIFSpec(1.0, 1.0, False, False, rect, 0.5)
    assert LIF(learn_vth=True).fixed_scan() is None
    assert LIF(learn_decay=True).fixed_scan() is None
    assert PLIF().fixed_scan() is None  # its decay is learnt
    assert not hasattr(LI(), "fixed_scan") or LI().fixed_scan() is None  # a readout integrator: no spikes


@pytest.mark.skipif(not NATIVE, reason="native kernels not built")
def test_tutorial_network_scans_its_hidden_layers_inside_the_gather_kernel(monkeypatch, mnist_like):
    """In layer mode both hidden layers of the tutorial network (the Bernoulli-coded first
    and the 512 -> 512 second) run their LIF scan as the temporal kernel's epilogue."""
    calls = []
    real = native.tm_fwd_lif

    def spy(*args, **kw):
        out = real(*args, **kw)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(native, "tm_fwd_lif", spy)
    net = tutorial_network(mode="layer", time_steps=6, encoder=build_encoder("bernoulli")).train()
    net(mnist_like(8), torch.Generator().manual_seed(0)).sum().backward()
    assert calls == [True, True]


def test_spike_linear_non_binary_input_falls_back_to_dense(gen):
    x = torch.rand(30, 20, generator=gen)
    W = torch.randn(64, 20, generator=gen, requires_grad=True)
    out = spike_linear(x, W, None, "auto")
    assert torch.equal(out, F.linear(x, W))
    (gw,) = torch.autograd.grad(out.sum(), [W])
    torch.testing.assert_close(gw, torch.ones(30, 64).t() @ x)


@pytest.mark.skipif(not NATIVE, reason="native kernels not built")
def test_auto_runs_a_readouts_few_outputs_dense_and_wide_layers_sparse(gen, monkeypatch):
    """``matmul=auto`` builds no spike index for a layer of at most ``DENSE_MAX_OUT``
    outputs (BLAS is the faster there): its values are the dense GEMM's, bit for bit."""
    from snn_lab.engine import linear

    built = []
    real = native.tmask
    monkeypatch.setattr(native, "tmask", lambda x: built.append(x.shape) or real(x))
    x = (torch.rand(4, 6, 50, generator=gen) < 0.2).float().reshape(24, 50)
    for n_out, sparse in ((linear.DENSE_MAX_OUT, False), (linear.DENSE_MAX_OUT + 1, True)):
        built.clear()
        W = torch.randn(n_out, 50, generator=gen, requires_grad=True)
        out = spike_linear(x, W, None, "auto", binary=True, time_steps=4)
        assert bool(built) == sparse
        if not sparse:
            assert torch.equal(out, F.linear(x, W))
        assert linear.auto_sparse(0.2, n_out, 0.5) == sparse
    assert not linear.auto_sparse(0.6, 512, 0.5)


def test_bad_strategy_and_options():
    with pytest.raises(ValueError, match="matmul='fast' is unknown"):
        spike_linear(torch.zeros(2, 3), torch.zeros(4, 3), None, "fast")
    with pytest.raises(ValueError, match="unknown engine option"):
        engine.configure(speed=11)
    with pytest.raises(ValueError, match="is unknown; accepted"):
        engine.configure(matmul="magic")
    before = engine.options()
    with engine.using(matmul="dense", sparse_max_density=0.1):
        assert engine.options().matmul == "dense"
    assert engine.options() == before


def test_engine_keeps_at_most_half_the_activation_memory(gen):
    from snn_lab.bench.measure import SavedBytes

    images = torch.rand(32, 1, 28, 28, generator=gen) * (torch.rand(32, 1, 28, 28, generator=gen) < 0.2)
    train = (torch.rand(20, *images.shape, generator=gen) < images).float()
    sizes = {}
    for mode in ("step", "layer"):
        net = tutorial_network(mode=mode)
        with SavedBytes(list(net.parameters()) + list(net.buffers())) as sb:
            net.forward_spikes(train).sum()
        sizes[mode] = sb.total
    assert sizes["layer"] <= 0.5 * sizes["step"], sizes


def test_native_status_reports():
    status = native.status()
    assert set(status) >= {"available", "path", "error"}
    assert status["available"] == NATIVE


def test_scan_traces_under_torch_compile(gen):
    """No graph breaks in the scan: dynamo traces it whole (fullgraph) through autograd."""
    sg = Surrogate()

    def f(x, vth):
        return lif_scan(x, None, vth, 0.8, sg.name)

    torch._dynamo.reset()
    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    x = (torch.randn(6, 4, 5, generator=gen) * 0.5).requires_grad_()
    vth = torch.tensor(0.4, requires_grad=True)
    s, v = cf(x, vth)
    (s.sum() + v.sum()).backward()
    x2 = x.detach().clone().requires_grad_()
    vth2 = torch.tensor(0.4, requires_grad=True)
    s2, v2 = lif_scan_reference(x2, None, vth2, 0.8, sg)
    (s2.sum() + v2.sum()).backward()
    assert torch.equal(s, s2)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(vth.grad, vth2.grad)


@pytest.mark.slow
def test_conv_network_with_dropout_trains_under_torch_compile(tiny_net, mnist_like):
    """The engine's native draws rewrite the generator's state, which a compiled graph
    cannot do: under torch.compile dropout and the encoder draw with torch's own ops, and
    a PLIF conv network with dropout trains (forward and backward) in training mode."""
    torch._dynamo.reset()
    net = tiny_net(
        "plif", encoder="direct", arch="conv", channels=(8, 16), fc=24, mode="layer", weight_scale=1.0, train=True
    )
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in net.modules())
    compiled = torch.compile(net, backend="aot_eager")
    out = compiled(mnist_like(3))
    out.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    net.eval()
    images = mnist_like(2, seed=1)
    torch.testing.assert_close(compiled(images), net(images))


@pytest.mark.slow
def test_tutorial_network_compiles_with_inductor(gen):
    torch._dynamo.reset()
    net = tutorial_network(mode="layer", time_steps=6)
    compiled = torch.compile(net.forward_spikes)
    train = (torch.rand(6, 4, 1, 28, 28, generator=gen) < 0.3).float()
    out = compiled(train)
    out.sum().backward()
    assert torch.equal(out, net.forward_spikes(train, mode="step"))


def test_time_invariant_input_goes_through_the_synapse_once(gen, tiny_net):
    """Direct encoding repeats the analog image every step: the engine runs the first
    synapse once; spikes and gradients still equal the per-step path."""

    def make(mode):
        return tiny_net(
            readout="membrane",
            hidden=(64,),
            encoder="direct",
            time_steps=6,
            surrogate="atan",
            mode=mode,
            seed=3,
            weight_scale=1.0,
            train=True,
        )

    step_net, layer_net = make("step"), make("layer")
    images = torch.rand(5, 1, 28, 28, generator=gen)
    out_s, rec_s = step_net(images, return_record=True)
    out_l, rec_l = layer_net(images, return_record=True)
    assert torch.equal(rec_s.spikes[0], rec_l.spikes[0])  # the hidden layer's spikes
    torch.testing.assert_close(rec_l.spikes[1], rec_s.spikes[1])  # the readout membrane
    torch.testing.assert_close(out_l, out_s)
    out_s.sum().backward()
    out_l.sum().backward()
    for a, b in zip(step_net.parameters(), layer_net.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_over_time_is_a_view_whose_gradient_sums_over_time_in_its_layout(gen, channels_last):
    x = torch.randn(3, 5, 6, 7, generator=gen, requires_grad=True)
    seq = engine.over_time(x, 4)
    assert seq.shape == (4, 3, 5, 6, 7) and seq.stride(0) == 0 and seq.data_ptr() == x.data_ptr()
    g = torch.randn(4, 3, 6, 7, 5, generator=gen).permute(0, 1, 4, 2, 3) if channels_last else torch.randn(seq.shape)
    (grad,) = torch.autograd.grad(seq, x, g)
    (expected,) = torch.autograd.grad(x.unsqueeze(0).expand(4, *x.shape), x, g)
    assert torch.equal(grad, expected)
    # the sum stays in the gradient's layout (no strided reduction, no copy back)
    assert grad.is_contiguous(memory_format=torch.channels_last) == channels_last
    with torch.no_grad():
        assert engine.over_time(x, 2).stride(0) == 0


def test_layer_mode_starts_every_scan_from_the_fresh_state(monkeypatch, tiny_net, mnist_like):
    """Layer mode hands the neurons no state (their zero state), so the scan knows the
    first step's reset terms vanish and a learnable decay's backward skips them."""
    from snn_lab.engine import scan

    seen = []
    real = scan._LIFScan.apply

    def spy(*args):
        seen.append(args[-1])  # the ``fresh`` flag
        return real(*args)

    monkeypatch.setattr(scan._LIFScan, "apply", spy)
    for encoder in ("direct", "bernoulli"):
        net = tiny_net(
            "plif", encoder=encoder, arch="conv", channels=(8, 16), fc=24, mode="layer", weight_scale=1.0, train=True
        )
        net(mnist_like(3), torch.Generator().manual_seed(1)).sum().backward()
    assert seen and all(seen)


@pytest.mark.parametrize("time_steps", [None, 4])
def test_spike_linear_without_any_spike(gen, time_steps):
    x = torch.zeros(8, 30)
    W = torch.randn(70, 30, generator=gen, requires_grad=True)
    b = torch.randn(70, generator=gen, requires_grad=True)
    out = spike_linear(x, W, b, "sparse", True, time_steps=time_steps)
    assert torch.equal(out, b.detach().expand(8, 70))
    gw, gb = torch.autograd.grad(out.sum(), [W, b])
    assert torch.equal(gw, torch.zeros_like(W)) and torch.equal(gb, torch.full((70,), 8.0))


# -- convolutional layers ----------------------------------------------------------------------
CONV_GEOMETRIES = [  # (N, C_in, C_out, H, W, kernel, padding, bias)
    (6, 1, 32, 28, 28, 3, 1, False),
    (5, 12, 16, 9, 7, 3, 1, True),
    (4, 3, 8, 9, 7, 5, 2, True),
    (3, 8, 24, 6, 6, 3, 0, False),
    (3, 8, 8, 5, 5, 1, 0, True),
    (3, 8, 16, 6, 5, 1, 1, False),  # padded beyond the kernel: the input gradient's fallback
    (2, 16, 72, 7, 6, 3, 1, True),  # a 64-channel output block and an 8-channel tail
    (2, 8, 128, 5, 5, 3, 1, False),  # a 128-channel block (two 64-channel ones without AVX-512)
    (2, 8, 136, 6, 7, 3, 1, True),  # a 128-channel block and an 8-channel tail
]


@pytest.mark.parametrize("strategy", ["dense", "channels_last", "sparse", "auto"])
@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: "x".join(map(str, g[:7])))
def test_spike_conv2d_values_and_grads(gen, strategy, geometry):
    N, ci, co, H, W, k, p, bias = geometry
    x = (torch.rand(N, ci, H, W, generator=gen) < 0.2).float().requires_grad_()
    w = torch.randn(co, ci, k, k, generator=gen).requires_grad_()
    b = torch.randn(co, generator=gen).requires_grad_() if bias else None
    out = engine.spike_conv2d(x, w, b, 1, p, strategy=strategy, max_density=1.0)
    ref = F.conv2d(x, w, b, 1, p)
    if strategy != "dense":
        assert out.is_contiguous(memory_format=torch.channels_last)
    if strategy == "dense":
        assert torch.equal(out, ref)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(ref.shape, generator=gen)
    wrt = [x, w] + ([b] if bias else [])
    for got, want in zip(torch.autograd.grad(out, wrt, g), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_spike_conv2d_sparse_runs_the_native_kernel_only_on_spikes(gen):
    x = (torch.rand(4, 8, 6, 6, generator=gen) < 0.2).float()
    w = torch.randn(16, 8, 3, 3, generator=gen, requires_grad=True)
    sparse = engine.spike_conv2d(x, w, None, 1, 1, strategy="sparse")
    assert type(sparse.grad_fn).__name__ == ("_SpikeConv2dBackward" if NATIVE else "ConvolutionBackward0")
    analog = engine.spike_conv2d(x * 0.5, w, None, 1, 1, strategy="sparse")  # not spikes: dense
    assert type(analog.grad_fn).__name__ == "ConvolutionBackward0"
    torch.testing.assert_close(analog, F.conv2d(x * 0.5, w, None, 1, 1))
    dense = engine.spike_conv2d(x, w, None, 1, 1, strategy="auto", max_density=0.05)  # too dense for auto
    assert type(dense.grad_fn).__name__ == "ConvolutionBackward0"
    none = engine.spike_conv2d(torch.zeros(2, 8, 6, 6), w, None, 1, 1, strategy="sparse")
    assert torch.equal(none, torch.zeros(2, 16, 6, 6))
    strided = engine.spike_conv2d(x, w, None, 2, 1, strategy="sparse")  # not the kernel's: dense
    torch.testing.assert_close(strided, F.conv2d(x, w, None, 2, 1))
    with pytest.raises(ValueError, match="conv='fast' is unknown"):
        engine.spike_conv2d(x, w, strategy="fast")
    with pytest.raises(ValueError, match=r"engine\.conv='fast' is unknown"):
        engine.configure(conv="fast")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 16, 14, 14), (5, 8, 7, 9), (2, 32, 28, 28), (3, 4, 6, 6), (4, 24, 7, 6)])
def test_batch_norm_max_pool2d_equals_batch_norm_then_max_pool(gen, training, shape):
    C = shape[1]
    x = (torch.randn(*shape, generator=gen) * 2 + 0.5).contiguous(memory_format=torch.channels_last)
    w = torch.randn(C, generator=gen).requires_grad_()
    b = torch.randn(C, generator=gen).requires_grad_()
    rm, rv = torch.randn(C, generator=gen) * 0.1, torch.rand(C, generator=gen) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = engine.batch_norm_max_pool2d(x1, rm, rv, w, b, training, 0.1, 1e-5)
    ref = F.max_pool2d(F.batch_norm(x2, rm2, rv2, w, b, training, 0.1, 1e-5), 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)
    g = torch.randn(ref.shape, generator=gen)
    for got, want in zip(torch.autograd.grad(out, [x1, w, b], g), torch.autograd.grad(ref, [x2, w, b], g)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_native", BACKENDS)
def test_scan_keeps_a_channels_last_layout_and_reads_repeated_currents_in_place(gen, use_native):
    """A channels-last current is scanned in memory order (no copy) and the spikes keep
    its layout; a current repeated over time (stride 0) gives what its copy gives."""
    x = torch.randn(5, 3, 8, 4, 4, generator=gen) * 0.6
    x_cl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)  # channels-last per step
    rep = x[0].contiguous(memory_format=torch.channels_last).unsqueeze(0).expand(5, -1, -1, -1, -1)
    for inp in (x_cl, rep):
        a, b = inp.clone().requires_grad_(), inp.contiguous().requires_grad_()
        a.retain_grad()
        decay = torch.tensor(0.8, requires_grad=True)
        with engine.using(native=use_native):
            s1, v1 = lif_scan(a, None, 0.4, decay, "atan", 2.0)
            s2, v2 = lif_scan(b, None, 0.4, decay, "atan", 2.0)
        assert torch.equal(s1, s2) and torch.equal(v1, v2)
        if inp is x_cl:
            assert s1.stride() == x_cl.stride()
        w = torch.randn(s1.shape, generator=gen)
        g1 = torch.autograd.grad((s1 * w).sum() + v1.sum(), [a, decay])
        g2 = torch.autograd.grad((s2 * w).sum() + v2.sum(), [b, decay])
        for p, q in zip(g1, g2):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", ["dense", "channels_last", "auto"])
def test_conv_network_layer_mode_equals_step_mode(gen, tiny_net, mnist_like, conv):
    """Eval mode (BatchNorm on running statistics): the per-step path and the engine give
    the same spikes (bit for bit with conv=dense; else within float rounding) and
    gradients, with Bernoulli and with direct input."""
    for encoder, neuron in (("bernoulli", "lif"), ("direct", "plif")):
        nets = {}
        for mode in ("step", "layer"):
            net = tiny_net(
                neuron, encoder=encoder, arch="conv", channels=(8, 16), fc=24, mode=mode, seed=5, weight_scale=1.0
            )
            for m in net.modules():  # non-trivial running statistics
                if isinstance(m, torch.nn.BatchNorm2d):
                    g = torch.Generator().manual_seed(7)
                    m.running_mean.uniform_(-0.2, 0.2, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
            nets[mode] = net
        images = mnist_like(6)
        out, rec = {}, {}
        for mode, net in nets.items():
            with engine.using(conv=conv, conv_max_density=1.0):
                out[mode], rec[mode] = net(images, torch.Generator().manual_seed(1), return_record=True)
                out[mode].sum().backward()
        spikes = sum(s.numel() for s in rec["step"].spikes)
        flips = sum(int((a != b).sum()) for a, b in zip(rec["step"].spikes, rec["layer"].spikes))
        assert flips == 0 if conv == "dense" else flips <= 1e-3 * spikes
        if flips == 0:
            torch.testing.assert_close(out["layer"], out["step"])
            for (n, a), b in zip(nets["step"].named_parameters(), nets["layer"].parameters()):
                torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "geometry", [(6, 1, 16, 12, 12, 3, 1, False), (4, 3, 8, 9, 11, 3, 1, True), (3, 2, 24, 8, 8, 5, 2, False)]
)
def test_conv_bn_max_pool2d_equals_the_three_layers(gen, training, geometry):
    """The first-layer fusion (input spikes without gradient, the conv output recomputed
    instead of stored) equals conv2d -> batch_norm -> max_pool2d: values, running
    statistics, and the gradients of the conv and BatchNorm parameters."""
    N, ci, co, H, W, k, p, bias = geometry
    x = (torch.rand(N, ci, H, W, generator=gen) < 0.3).float()
    w = torch.randn(co, ci, k, k, generator=gen).requires_grad_()
    b = torch.randn(co, generator=gen).requires_grad_() if bias else None
    bw, bb = torch.randn(co, generator=gen).requires_grad_(), torch.randn(co, generator=gen).requires_grad_()
    rm, rv = torch.randn(co, generator=gen) * 0.1, torch.rand(co, generator=gen) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    out = engine.conv_bn_max_pool2d(x, w, b, p, rm, rv, bw, bb, training, 0.1, 1e-5)
    if not NATIVE:
        assert out is None
        return
    assert out is not None and out.is_contiguous(memory_format=torch.channels_last)
    ref = F.max_pool2d(F.batch_norm(F.conv2d(x, w, b, 1, p), rm2, rv2, bw, bb, training, 0.1, 1e-5), 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)
    g = torch.randn(ref.shape, generator=gen)
    wrt = [w, bw, bb] + ([b] if bias else [])
    for got, want in zip(torch.autograd.grad(out, wrt, g), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert engine.conv_bn_max_pool2d(x * 0.5, w, b, p, rm, rv, bw, bb, training, 0.1, 1e-5) is None  # not spikes
    assert engine.conv_bn_max_pool2d(x.requires_grad_(), w, b, p, rm, rv, bw, bb, training, 0.1, 1e-5) is None


# -- Bernoulli encoding inside the first layer's kernel ---------------------------------------
def _train_of(tm, T: int, B: int, K: int) -> torch.Tensor:
    """The spike train ``[T, B, K]`` a temporal index stands for."""
    row_ptr, cols, masks, _ = tm
    x = torch.zeros(T, B, K)
    for b in range(B):
        for j in range(int(row_ptr[b]), int(row_ptr[b + 1])):
            m = int(masks[j]) & (2**64 - 1)
            for t in range(T):
                if m >> t & 1:
                    x[t, b, int(cols[j])] = 1.0
    return x


@pytest.mark.skipif(not NATIVE, reason="native kernels unavailable")
def test_bernoulli_first_layer_draws_the_encoders_spikes(gen, mnist_like):
    """engine.bernoulli=torch: the first layer's current comes from the encoder's own
    draws without forming the train -- the same spikes, scores and gradients as encoding
    first, in layer mode as in step mode."""
    nets = {m: tutorial_network(encoder=build_encoder("bernoulli"), mode=m, time_steps=7) for m in ("step", "layer")}
    nets["layer"].load_state_dict(nets["step"].state_dict())
    images = mnist_like(12)
    y = torch.randint(0, 10, (12,), generator=gen)
    got = {}
    for mode, net in nets.items():
        out, rec = net(images, torch.Generator().manual_seed(3), return_record=True)
        F.cross_entropy(out, y).backward()
        got[mode] = (out, rec.spikes, [p.grad for p in net.parameters()])
    ref_out, ref_rec = nets["layer"].forward_spikes(
        nets["layer"].encode(images, generator=torch.Generator().manual_seed(3)), return_record=True
    )
    assert torch.equal(got["layer"][0], ref_out) and torch.equal(got["layer"][0], got["step"][0])
    assert all(torch.equal(a, b) for a, b in zip(got["layer"][1], ref_rec.spikes))
    for a, b in zip(got["layer"][2], got["step"][2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not NATIVE, reason="native kernels unavailable")
def test_kernel_bernoulli_draws(gen):
    """engine.bernoulli=kernel: per step a fresh Bernoulli(p) draw from a key the generator
    gives (reproducible, p = 0 never fires, rates match p), and the layer's values and
    weight gradient are those of the train the draws stand for."""
    B, K, T = 6, 300, 20
    p = torch.rand(B, K, generator=gen) * (torch.rand(B, K, generator=gen) < 0.5)
    W = torch.randn(40, K, generator=gen, requires_grad=True)
    b = torch.randn(40, generator=gen, requires_grad=True)
    tm = native.bernoulli_tmask(p, T, key=99)
    x = _train_of(tm, T, B, K)
    assert not x[:, p == 0].any() and tm[3] == int(x.sum())
    assert torch.equal(x, _train_of(native.bernoulli_tmask(p, T, key=99), T, B, K))
    assert not torch.equal(x, _train_of(native.bernoulli_tmask(p, T, key=100), T, B, K))
    big = native.bernoulli_tmask(torch.full((50, 400), 0.3), 40, key=7)
    assert abs(big[3] / (50 * 400 * 40) - 0.3) < 0.005  # 800k draws: 5 sigma is 0.0026
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    out = engine.bernoulli_linear(p, W, b, T, g1, rng="kernel")
    key = int(torch.randint(0, 2**62, (1,), generator=g2))  # the key the call drew
    xk = _train_of(native.bernoulli_tmask(p.contiguous(), T, key=key), T, B, K).reshape(T * B, K)
    ref = F.linear(xk, W, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    go = torch.randn(ref.shape, generator=gen)
    for a, c in zip(torch.autograd.grad(out, [W, b], go), torch.autograd.grad(ref, [W, b], go)):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="bernoulli='quantum' is unknown"):
        engine.bernoulli_linear(p, W, b, T, g1, rng="quantum")
    with pytest.raises(ValueError, match=r"engine\.bernoulli='quantum' is unknown"):
        engine.configure(bernoulli="quantum")


@pytest.mark.skipif(not NATIVE, reason="native kernels unavailable")
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    before=st.integers(0, 3000),
    sizes=st.lists(st.integers(native._RAND_MIN, 5 * native._RAND_MIN), min_size=1, max_size=3),
)
def test_engine_rand_draws_torch_rands_numbers_and_leaves_its_state(seed, before, sizes):
    """native.torch_rand: torch.rand's float32 numbers from any stream position (MT19937
    blocks are 624 numbers long), and the generator left exactly where torch.rand leaves
    it: the next draws agree too."""
    g_torch, g_engine = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    torch.rand(before, generator=g_torch)
    torch.rand(before, generator=g_engine)
    for n in sizes:
        shape = (n // 2, 2) if n % 2 == 0 else (n,)
        assert torch.equal(native.torch_rand(shape, g_engine), torch.rand(shape, generator=g_torch))
    assert torch.equal(g_engine.get_state(), g_torch.get_state())
    assert torch.equal(torch.rand(700, generator=g_engine), torch.rand(700, generator=g_torch))


@pytest.mark.skipif(not NATIVE, reason="native kernels unavailable")
def test_engine_rand_on_the_default_generator_and_its_fallbacks():
    """engine.rand uses the default generator when given none; a state carrying a cached
    normal sample, and engine.native=False, leave the draws to torch (same numbers)."""
    shape = (20, 200, 784)  # the seed network's Bernoulli input at T=20, batch 200
    torch.manual_seed(11)
    want, after = torch.rand(shape), torch.rand(5)
    torch.manual_seed(11)
    assert torch.equal(engine.rand(shape), want) and torch.equal(torch.rand(5), after)
    for setup in (lambda g: torch.randn(1, dtype=torch.float64, generator=g), lambda g: None):
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        setup(g1)
        setup(g2)
        with engine.using(native=False):
            assert torch.equal(engine.rand((100, 300), g2), torch.rand((100, 300), generator=g1))
        assert torch.equal(engine.rand((100, 300), g2), torch.rand((100, 300), generator=g1))
        assert torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.skipif(not NATIVE, reason="native kernels unavailable")
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    before=st.integers(0, 2000),
    n=st.integers(1, 30000),
    p=st.one_of(st.sampled_from([0.0, 0.5, 0.8, 1 - 0.2, 1.0, 2**-40, 1 - 2**-40]), st.floats(0.0, 1.0)),
)
def test_engine_bernoulli_mask_is_torchs_bernoulli_(seed, before, n, p):
    """native.torch_bernoulli: ``bernoulli_(p)``'s mask (one 53-bit double per element,
    ``u < p``, including p at the edges of [0, 1]) and the generator state after it --
    on a torch build whose CPU bernoulli_ draws that way (else engine.dropout never uses it)."""
    if not engine_random._bernoulli_draws_like_torch():
        pytest.skip("this torch build draws bernoulli_ otherwise (MKL); engine.dropout leaves it to torch")
    g_torch, g_engine = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    torch.rand(before, generator=g_torch)
    torch.rand(before, generator=g_engine)
    assert torch.equal(native.torch_bernoulli((n,), p, g_engine), torch.empty(n).bernoulli_(p, generator=g_torch))
    assert torch.equal(g_engine.get_state(), g_torch.get_state())


@pytest.mark.skipif(not NATIVE, reason="native kernels unavailable")
@pytest.mark.parametrize("p", [0.2, 0.5, 0.07])
def test_engine_dropout_is_f_dropout(p):
    """engine.dropout: F.dropout's values, gradient and default-generator state in training
    (contiguous, and a transposed input it leaves to torch); identity in evaluation."""
    for u in (torch.rand(300, 1152), torch.rand(1152, 300).t()):
        x = (u < 0.3).float().requires_grad_()
        torch.manual_seed(4)
        want = F.dropout(x, p, True)
        state = torch.get_rng_state()
        torch.manual_seed(4)
        got = engine.dropout(x, p, True)
        assert torch.equal(got, want) and torch.equal(torch.get_rng_state(), state)
        g = torch.randn(x.shape)
        assert torch.equal(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])
    assert torch.equal(engine.dropout(x, p, False), x)


@pytest.mark.skipif(not NATIVE, reason="native kernels unavailable")
def test_conv_network_with_dropout_trains_as_with_torchs_dropout(monkeypatch):
    """The conv network's head (Flatten -> Dropout -> Linear, Dropout -> Linear) in layer
    mode: the same scores, spikes and gradients as with torch's own dropout draws."""
    from snn_lab.models import SpikingConvNet
    from snn_lab.neurons import PLIF

    torch.manual_seed(0)
    net = SpikingConvNet(PLIF, channels=(8, 16), fc=64, time_steps=4, encoder=build_encoder("direct"), dropout=0.3)
    net.train()
    images = torch.rand(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    calls = []
    draw = native.torch_bernoulli
    monkeypatch.setattr(native, "torch_bernoulli", lambda *a: calls.append(a[0]) or draw(*a))
    runs = []
    for kernel_draws in (True, False):
        if not kernel_draws:
            assert calls[-2:] == [(64, 16 * 7 * 7), (64, 64)], calls  # both dropouts, over T*B rows at once
            monkeypatch.setattr(engine_random, "_draws_like_torch", False)
        torch.manual_seed(3)
        out, rec = net(images, return_record=True)
        grads = torch.autograd.grad(F.cross_entropy(out, y), list(net.parameters()))
        runs.append((out, rec.spikes, grads, torch.get_rng_state()))
    (o1, s1, g1, r1), (o2, s2, g2, r2) = runs
    assert torch.equal(o1, o2) and torch.equal(r1, r2)
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.slow
def test_compiled_scan_equals_the_native_scan(gen):
    """engine.scan=compile (the GPU default, runnable on CPU): the torch.compile'd scan and
    its backward give the native scan's spikes (within float rounding: inductor may fuse
    the multiply-add) and gradients, with and without autograd."""
    x = (torch.randn(12, 6, 40, generator=gen) * 0.6).requires_grad_()
    decay = torch.tensor(0.8, requires_grad=True)
    w = torch.randn(x.shape, generator=gen)
    out = {}
    for scan in ("compile", "auto"):
        with engine.using(scan=scan):
            s, v = lif_scan(x, None, 0.4, decay, "rectangle", 0.5)
            g = torch.autograd.grad((s * w).sum() + v.sum(), [x, decay])
            with torch.no_grad():
                s_ng, _ = lif_scan(x, None, 0.4, decay, "rectangle", 0.5)
        out[scan] = (s, v, g, s_ng)
    flips = int((out["compile"][0] != out["auto"][0]).sum())
    assert flips <= 1e-4 * x.numel() and torch.equal(out["compile"][3], out["compile"][0])
    if flips == 0:
        for a, b in zip(out["compile"][2], out["auto"][2]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"engine\.scan='jit' is unknown"):
        engine.configure(scan="jit")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("co, k, pad", [(16, 3, 1), (40, 3, 1), (32, 5, 2), (8, 3, 0)])
def test_one_channel_analog_conv_on_the_native_kernel(gen, bias, co, k, pad):
    """A first conv on pixels (one analog channel, no input gradient): the native kernel's
    values and weight gradient equal F.conv2d's within rounding, channels-last output
    (blocks of 32 and 8 outputs, taps cut at the borders)."""
    x = torch.rand(5, 1, 11, 9, generator=gen) * (torch.rand(5, 1, 11, 9, generator=gen) < 0.5)
    w = torch.randn(co, 1, k, k, generator=gen, requires_grad=True)
    b = torch.randn(co, generator=gen, requires_grad=True) if bias else None
    out = engine.spike_conv2d(x, w, b, 1, pad, strategy="auto")
    ref = F.conv2d(x, w, b, 1, pad)
    if NATIVE:
        assert type(out.grad_fn).__name__ == "_OneChannelConv2dBackward"
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(ref.shape, generator=gen)
    wrt = [w] + ([b] if bias else [])
    for a, c in zip(torch.autograd.grad(out, wrt, g), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not NATIVE, reason="native kernels not built")
@given(m=st.integers(1, 40), k=st.integers(1, 32), n=st.integers(1, 150), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_thin_matmul_equals_torch(m, k, n, seed):
    """The readout's input gradient ``G @ W`` for few outputs: 64-, 8-column blocks and
    a scalar tail, against torch's GEMM (another summation order: float rounding)."""
    g = torch.Generator().manual_seed(seed)
    G, W = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    torch.testing.assert_close(native.thin_mm(G, W), G @ W, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not NATIVE, reason="native kernels not built")
@given(
    T=st.integers(1, native.MAX_T),
    B=st.integers(1, 7),
    K=st.integers(1, 90),
    N=st.integers(65, 200),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_temporal_kernels_with_several_tiles_equal_the_one_tile_kernel_and_torch(T, B, K, N, seed):
    """With several column tiles the temporal forward sums each output row from per-step
    lists of rows; one tile (N <= 64) runs the read-modify-write kernel. Both add the same
    rows per lane in the same order -- the same floats, tile by tile -- and equal the
    dense product up to rounding. Inputs: silent, sparse and bright (complement) ones."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(B, K, generator=g) * (torch.rand(B, K, generator=g) < 0.7)
    x = (torch.rand(T, B, K, generator=g) < p).float()
    W, b = torch.randn(N, K, generator=g), torch.randn(N, generator=g)
    tm = native.tmask(x)
    out = native.tm_fwd(tm, native.pack_weight(W), b, T, B, N)
    tiles = [
        native.tm_fwd(
            tm, native.pack_weight(W[c : c + 64].contiguous()), b[c : c + 64].contiguous(), T, B, min(64, N - c)
        )
        for c in range(0, N, 64)
    ]
    assert torch.equal(out, torch.cat(tiles, dim=1))
    torch.testing.assert_close(out, F.linear(x.reshape(T * B, K), W, b), rtol=1e-4, atol=1e-4)
    # the weight gradient in nn.Linear's layout, and the bias gradient from the same pass;
    # G with zero rows (which the kernel skips), whole and within the first column tile
    G = torch.randn(T * B, N, generator=g)
    G[torch.rand(T * B, generator=g) < 0.3] = 0.0
    G[torch.rand(T * B, generator=g) < 0.3, :64] = 0.0
    dW, db = native.tm_wgrad(tm, G, T, B, K, bias_grad=True)
    assert dW.shape == (N, K) and dW.is_contiguous() and torch.equal(native.tm_wgrad(tm, G, T, B, K), dW)
    torch.testing.assert_close(dW, G.t() @ x.reshape(T * B, K), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(db, G.sum(0), rtol=1e-5, atol=1e-5)


def test_a_readout_layers_input_gradient_runs_thin(gen, monkeypatch):
    """A spike Linear with 10 outputs gets its input gradient from the thin kernel when
    the kernels are on, from torch otherwise; the same values either way."""
    x = (torch.rand(64, 48, generator=gen) < 0.3).float().requires_grad_()
    w = torch.randn(10, 48, generator=gen, requires_grad=True)
    gout = torch.randn(64, 10, generator=gen)
    calls = []
    if NATIVE:
        real = native.thin_mm
        monkeypatch.setattr(native, "thin_mm", lambda G, W: calls.append(G.shape) or real(G, W))
    (gx,) = torch.autograd.grad(spike_linear(x, w, None, "dense"), [x], gout)
    torch.testing.assert_close(gx, gout @ w.detach(), rtol=1e-5, atol=1e-5)
    assert calls == ([(64, 10)] if NATIVE else [])
    with engine.using(native=False):
        (gx_torch,) = torch.autograd.grad(spike_linear(x, w, None, "dense"), [x], gout)
    torch.testing.assert_close(gx, gx_torch, rtol=1e-5, atol=1e-5)
    assert len(calls) == (1 if NATIVE else 0)

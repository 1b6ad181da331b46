import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from snn_lab.encoders import ENCODERS, build_encoder


def test_bernoulli_rate_matches_intensity(gen):
    p = torch.linspace(0, 1, 11)
    T, n = 400, 50
    spikes = build_encoder("bernoulli")(p.expand(n, 11), T, gen)
    assert spikes.shape == (T, n, 11)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = spikes.mean((0, 1))
    # 5-sigma binomial bound on T*n draws per pixel
    bound = 5 * torch.sqrt(p * (1 - p) / (T * n)) + 1e-9
    assert torch.all((rate - p).abs() <= bound), (rate, p)
    assert rate[0] == 0 and rate[-1] == 1


def test_bernoulli_reproducible_with_generator():
    x = torch.rand(3, 1, 4, 4)
    enc = build_encoder("bernoulli")
    a = enc(x, 5, torch.Generator().manual_seed(7))
    b = enc(x, 5, torch.Generator().manual_seed(7))
    c = enc(x, 5, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("shape", [(2, 6), (40, 1, 28, 28)])  # the second is drawn by the engine's kernel
def test_bernoulli_step_and_forward_draw_the_same_stream(shape):
    x = torch.rand(shape)
    enc = build_encoder("bernoulli")
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    whole = enc(x, 4, g1)
    steps = torch.stack([enc.step(x, t, 4, g2) for t in range(4)])
    assert torch.equal(whole, steps)
    assert torch.equal(g1.get_state(), g2.get_state())  # and the generator is left alike


def test_latency_brighter_is_earlier_one_spike():
    x = torch.tensor([[1.0, 0.75, 0.5, 0.1, 0.0]])
    spikes = build_encoder("latency")(x, 9)
    assert spikes.sum(0).tolist() == [[1, 1, 1, 1, 0]]
    first = spikes.argmax(0)[0].tolist()[:4]
    assert first == sorted(first) and first[0] == 0 and first[3] == 7  # round(0.9*8) = 7


def test_phase_emits_bits_msb_first():
    x = torch.tensor([[0.0, 1.0, 128 / 255]])
    spikes = build_encoder("phase", bits=8)(x, 16)
    assert spikes[:8, 0, 0].sum() == 0
    assert spikes[:8, 0, 1].tolist() == [1] * 8
    assert spikes[:8, 0, 2].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert torch.equal(spikes[:8], spikes[8:])  # periodic


def test_population_expands_channels_and_prefers_centres(gen):
    enc = build_encoder("population", size=5)
    x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)
    spikes = enc(x, 300, gen)
    assert spikes.shape == (300, 3, 5, 1, 1)
    rates = spikes.mean(0).view(3, 5)
    assert rates.argmax(1).tolist() == [0, 2, 4]


def test_direct_passes_analog_values():
    x = torch.rand(2, 3)
    out = build_encoder("direct")(x, 4)
    assert out.shape == (4, 2, 3) and torch.equal(out[2], x)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_bad_time_steps(name):
    with pytest.raises(ValueError, match="time_steps=0"):
        build_encoder(name)(torch.rand(1, 4), 0)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="encoder='poisson' is unknown; accepted: bernoulli, latency"):
        build_encoder("poisson")


def test_integer_images_rejected():
    with pytest.raises(ValueError, match="float tensor"):
        build_encoder("bernoulli")(torch.zeros(1, 4, dtype=torch.uint8), 2)


# -- properties, for any image in [0, 1] and any T >= 1 -----------------------------------------

images01 = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
    elements=st.floats(0, 1, width=32) | st.sampled_from([0.0, 1.0, 0.5]),
)


@pytest.mark.parametrize("name", ["bernoulli", "latency", "phase"])
@settings(max_examples=30, deadline=None)
@given(images=images01, T=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_spike_encoders_emit_binary_trains_of_shape_T_by_image(name, images, T, seed):
    x = torch.from_numpy(images)
    enc = build_encoder(name)
    out = enc(x, T, torch.Generator().manual_seed(seed))
    assert out.shape == (T, *x.shape) and out.dtype == x.dtype
    assert ((out == 0) | (out == 1)).all()
    assert not out[:, x == 0].any()  # a black pixel never fires
    # step by step: the same train (bernoulli: from the same generator state)
    g = torch.Generator().manual_seed(seed)
    assert torch.equal(torch.stack([enc.step(x, t, T, g) for t in range(T)]), out)
    if name == "bernoulli":
        assert out[:, x == 1].all()  # p = 1 fires every step
    elif name == "latency":
        assert torch.equal(out.sum(0), (x > 0).to(out.dtype))  # one spike per lit pixel
    else:
        assert torch.equal(out[enc.bits :], out[: max(T - enc.bits, 0)])  # periodic in the bit count

import math

import pytest
import torch

from snn_lab.neurons import SURROGATES, Surrogate

ANALYTIC = {
    "rectangle": lambda u, w: (u.abs() < w).double() / (2 * w),
    "triangle": lambda u, w: torch.clamp(1 - u.abs() / w, min=0) / w,
    "sigmoid": lambda u, k: k * torch.sigmoid(k * u) * (1 - torch.sigmoid(k * u)),
    "atan": lambda u, a: a / (2 * (1 + (math.pi / 2 * a * u) ** 2)),
}


@pytest.mark.parametrize("name", sorted(SURROGATES))
@pytest.mark.parametrize("width", [None, 0.3])
def test_forward_is_strict_heaviside_and_backward_is_analytic(name, width):
    u = torch.linspace(-2, 2, 401, dtype=torch.float64).requires_grad_()
    sur = Surrogate(name, width)
    out = sur(u)
    assert torch.equal(out.detach(), (u > 0).double())
    assert out[200].item() == 0.0  # u == 0 does not spike: strict '>'
    out.sum().backward()
    w = SURROGATES[name] if width is None else width
    torch.testing.assert_close(u.grad, ANALYTIC[name](u.detach(), w))


def test_surrogates_integrate_to_one_like_a_derivative_of_a_step():
    u = torch.linspace(-50, 50, 200001, dtype=torch.float64)
    for name in SURROGATES:
        area = torch.trapezoid(Surrogate(name).grad(u), u).item()
        assert area == pytest.approx(1.0, abs=2e-2), name


def test_seed_rectangle_matches_seed_window():
    # the seed: |v - vth| < 0.5 passes gradient 1/(2*0.5) = 1
    u = torch.tensor([-0.6, -0.5, -0.49, 0.0, 0.49, 0.5], requires_grad=True)
    Surrogate("rectangle")(u).sum().backward()
    assert u.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_width(bad):
    with pytest.raises(ValueError, match="width"):
        Surrogate("atan", bad)


def test_unknown_surrogate_lists_accepted():
    with pytest.raises(ValueError, match=r"surrogate='rect'.*accepted: atan, rectangle, sigmoid, triangle"):
        Surrogate("rect")

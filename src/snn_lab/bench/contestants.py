"""The implementations the benchmark races, all on the tutorial network (784-512-512-10,
LIF vth 0.4 / decay 0.8, Bernoulli rate coding, mean-spike readout).

Each contestant exposes ``scores(images, generator) -> [B, 10]`` (encoding included),
``from_train(train)`` (the same on a given spike train ``[T, B, 1, 28, 28]``, for the
agreement check), ``parameters()`` and ``load(state)`` (seed-layout weights, so all
start equal).

``reference``  snn_lab's per-step path: ``tutorial_network(mode="step")`` driven one time
               step at a time, a fresh ``rand < p`` draw per step -- what the tutorial's
               training loop does.
``tutorial_code``  the reference tutorial's per-step class, re-implemented here from its
               description (own ``autograd.Function`` rectangle surrogate, membranes as
               module state, ``torch.bernoulli`` encoding each step).
``engine``     ``tutorial_network(mode="layer")``: the fast multi-step engine.
``engine_kernel_rng``  the same with ``engine.bernoulli=kernel``: the Bernoulli draws are
               hashed inside the first layer's kernel (other random numbers than the
               encoder's ``torch.rand``; the agreement check feeds every contestant the
               same train, so it is unaffected).
``snntorch`` / ``spikingjelly`` / ``norse``
               the peer libraries with the parameters that reproduce the tutorial's spikes
               (``pip install -e ".[bench]"``; skipped when not installed).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import engine
from ..encoders import BernoulliEncoder
from ..models import TUTORIAL_KEYS, SpikingMLP, load_tutorial_state_dict, tutorial_network

SIZES = (784, 512, 512, 10)


def tutorial_layout(state: dict) -> dict:
    """Our model's state dict -> the tutorial's names (``linear_1.weight`` ...)."""
    back = {v: k for k, v in TUTORIAL_KEYS.items()}
    return {back[k]: v for k, v in state.items() if k in back}


class Contestant:
    name = "?"
    description = ""
    module: nn.Module  # the network being raced (set by each subclass)

    def __init__(self, time_steps: int, device: torch.device):
        self.T = time_steps
        self.device = device

    def scores(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def from_train(self, train: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def parameters(self):
        return self.module.parameters()

    def load(self, tutorial_state: dict) -> None:
        raise NotImplementedError

    def state(self) -> dict:
        """The weights every contestant of the race can ``load`` (the MLP: the tutorial's layout)."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)


class Reference(Contestant):
    name = "reference"
    description = "per-step loop: tutorial_network(mode='step'), rand<p each step (the tutorial's order)"
    module: SpikingMLP

    def __init__(self, time_steps, device):
        super().__init__(time_steps, device)
        self.module = tutorial_network(time_steps=time_steps, mode="step").to(device)

    def load(self, tutorial_state):
        load_tutorial_state_dict(self.module, tutorial_state)

    def state(self) -> dict:
        return tutorial_layout(self.module.state_dict())

    def scores(self, images, generator):
        net = self.module
        state = net.init_state(images.shape[0], device=images.device, dtype=images.dtype)
        total = 0
        for _ in range(self.T):
            u = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
            out, state = net.step((u < images).to(images.dtype), state)
            total = total + out
        return total / self.T

    def from_train(self, train):
        return self.module.forward_spikes(train, mode="step")


class _Rect(torch.autograd.Function):
    """Heaviside forward; the tutorial's window derivative (|v - vth| < 0.5, height 1)."""

    @staticmethod
    def forward(ctx, v, vth):
        ctx.save_for_backward(v, vth)
        return v.gt(vth).float()

    @staticmethod
    def backward(ctx, grad):
        v, vth = ctx.saved_tensors
        return grad * ((v - vth).abs() < 0.5).float(), None


class _TutorialNet(nn.Module):
    def __init__(self, vth=0.4, decay=0.8):
        super().__init__()
        self.linear_1 = nn.Linear(784, 512)
        self.linear_2 = nn.Linear(512, 512)
        self.linear_3 = nn.Linear(512, 10)
        self.vth = nn.Parameter(torch.full((1,), vth), requires_grad=False)
        self.decay = nn.Parameter(torch.full((1,), decay), requires_grad=False)
        self.mems: list[torch.Tensor] = []

    def reset(self):
        self.mems = [torch.zeros(1, n, device=self.vth.device) for n in (512, 512, 10)]

    def layer(self, i, op, x):
        mem = self.mems[i]
        last = _Rect.apply(mem, self.vth)
        mem = mem * (1 - last) * self.decay + op(x)
        self.mems[i] = mem
        return _Rect.apply(mem, self.vth)

    def forward(self, images, generator=None, spikes=None):
        x = torch.bernoulli(images, generator=generator) if spikes is None else spikes
        x = x.view(x.shape[0], -1)
        x = self.layer(0, self.linear_1, x)
        x = self.layer(1, self.linear_2, x)
        return self.layer(2, self.linear_3, x)


class TutorialCode(Contestant):
    name = "tutorial_code"
    description = "the reference tutorial's per-step class (re-implemented): module state, torch.bernoulli"
    module: _TutorialNet

    def __init__(self, time_steps, device):
        super().__init__(time_steps, device)
        self.module = _TutorialNet().to(device)

    def load(self, tutorial_state):
        self.module.load_state_dict({k: v for k, v in tutorial_state.items() if k.startswith("linear")}, strict=False)

    def scores(self, images, generator):
        self.module.reset()
        total = 0
        for _ in range(self.T):
            total = total + self.module(images, generator)
        return total / self.T

    def from_train(self, train):
        self.module.reset()
        total = 0
        for t in range(train.shape[0]):
            total = total + self.module(None, spikes=train[t])
        return total / train.shape[0]


class Engine(Contestant):
    name = "engine"
    description = "tutorial_network(mode='layer'): fused LIF scan + spike-aware matmuls (snn_lab.engine)"
    module: SpikingMLP

    def __init__(self, time_steps, device):
        super().__init__(time_steps, device)
        self.module = tutorial_network(time_steps=time_steps, encoder=BernoulliEncoder(), mode="layer").to(device)

    def load(self, tutorial_state):
        load_tutorial_state_dict(self.module, tutorial_state)

    def state(self) -> dict:
        return tutorial_layout(self.module.state_dict())

    def scores(self, images, generator):
        return self.module(images, generator=generator)

    def from_train(self, train):
        return self.module.forward_spikes(train)


class EngineKernelDraws(Engine):
    name = "engine_kernel_rng"
    description = "the engine with engine.bernoulli=kernel: Bernoulli draws hashed in the first layer's kernel"

    def scores(self, images, generator):
        with engine.using(bernoulli="kernel"):
            return self.module(images, generator=generator)


# -- peer libraries (optional) ---------------------------------------------------------
class _PeerMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear_1 = nn.Linear(784, 512)
        self.linear_2 = nn.Linear(512, 512)
        self.linear_3 = nn.Linear(512, 10)
        self.linears = [self.linear_1, self.linear_2, self.linear_3]


class _Peer(Contestant):
    module: Any  # a _PeerMLP holding the peer library's (untyped) neuron modules

    def __init__(self, time_steps, device):
        super().__init__(time_steps, device)
        self.module = self._build().to(device)

    def _build(self) -> nn.Module:
        """The network, built with the peer library (imported here: it is optional)."""
        raise NotImplementedError

    def _run(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, 10]`` for a flattened spike train ``x_seq`` ``[T, B, 784]``."""
        raise NotImplementedError

    def load(self, tutorial_state):
        self.module.load_state_dict({k: v for k, v in tutorial_state.items() if k.startswith("linear")}, strict=False)

    def scores(self, images, generator):
        u = torch.rand((self.T, *images.shape), generator=generator, device=images.device)
        return self.from_train((u < images).float())

    def from_train(self, train):
        return self._run(train.flatten(2))  # [T, B, 784]


class SnnTorch(_Peer):
    name = "snntorch"
    description = "snntorch.Leaky(beta=0.8, threshold=0.4, reset_mechanism='zero'), per step"

    def _build(self):
        import snntorch

        net = _PeerMLP()
        net.lifs = nn.ModuleList(snntorch.Leaky(beta=0.8, threshold=0.4, reset_mechanism="zero") for _ in range(3))
        return net

    def _run(self, x_seq):
        net = self.module
        mems = [lif.init_leaky() for lif in net.lifs]
        total = 0
        for t in range(x_seq.shape[0]):
            x = x_seq[t]
            for i, (fc, lif) in enumerate(zip(net.linears, net.lifs)):
                x, mems[i] = lif(fc(x), mems[i])
            total = total + x
        return total / x_seq.shape[0]


class SpikingJelly(_Peer):
    name = "spikingjelly"
    description = "spikingjelly LIFNode(tau=5, decay_input=False, v_threshold=0.4, v_reset=0), multi-step"

    def _build(self):
        from spikingjelly.activation_based import neuron

        net = _PeerMLP()
        net.lifs = nn.ModuleList(
            neuron.LIFNode(tau=5.0, decay_input=False, v_threshold=0.4, v_reset=0.0, detach_reset=False, step_mode="m")
            for _ in range(3)
        )
        return net

    def _run(self, x):
        from spikingjelly.activation_based import functional

        net = self.module
        functional.reset_net(net)
        T, B = x.shape[:2]
        for fc, lif in zip(net.linears, net.lifs):
            x = lif(fc(x.reshape(T * B, -1)).reshape(T, B, -1))
        return x.mean(0)


class Norse(_Peer):
    name = "norse"
    description = "norse LIFBoxCell (dt 1 ms, tau_mem_inv 200 -> decay 0.8; threshold scaled), per step"

    def _build(self):
        from norse.torch import LIFBoxCell, LIFBoxParameters

        p = LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(200.0),
            v_leak=torch.as_tensor(0.0),
            v_th=torch.as_tensor(0.4 * 0.2),
            v_reset=torch.as_tensor(0.0),
        )
        net = _PeerMLP()
        net.lifs = nn.ModuleList(LIFBoxCell(p) for _ in range(3))
        return net

    def _run(self, x_seq):
        net = self.module
        states = [None, None, None]
        total = 0
        for t in range(x_seq.shape[0]):
            x = x_seq[t]
            for i, (fc, lif) in enumerate(zip(net.linears, net.lifs)):
                x, states[i] = lif(fc(x), states[i])
            total = total + x
        return total / x_seq.shape[0]


BUILTIN = {
    "reference": Reference,
    "tutorial_code": TutorialCode,
    "engine": Engine,
    "engine_kernel_rng": EngineKernelDraws,
}
PEERS = {"snntorch": SnnTorch, "spikingjelly": SpikingJelly, "norse": Norse}
ALL = {**BUILTIN, **PEERS}

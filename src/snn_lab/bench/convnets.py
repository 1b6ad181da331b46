"""The convolutional networks the benchmark races, and their contestants.

``conv``            the network of ``experiment=conv_mnist``: three ``conv3x3 -> BN ->
                    max-pool(2) -> PLIF`` blocks (32, 64, 128 channels, pooling the current),
                    ``Flatten -> Dropout(0.2) -> Linear(256) -> PLIF -> Dropout -> Linear(10)
                    -> LI`` (membrane readout, decay 0.9); PLIF vth 1.0, decay 0.5, atan
                    surrogate (slope 2); direct (analog) input, T=4.
``conv_bernoulli``  the same network on Bernoulli rate-coded input (a fresh draw each
                    step, the tutorial's encoding) at the tutorial's T=20.

Contestants (each builds the network from the same shared weights):

``reference``     snn_lab's per-step path, ``SpikingConvNet(mode="step")``: every layer
                  once per time step on B images.
``engine``        ``SpikingConvNet(mode="layer")``: the multi-step engine (channels-last
                  convs, gather over spikes, fused BatchNorm + max-pool, fused PLIF scan).
``spikingjelly``  SpikingJelly's multi-step layers (``layer.Conv2d/BatchNorm2d/MaxPool2d``,
                  ``neuron.ParametricLIFNode(decay_input=False)``, ``step_mode="m"``): each
                  layer over ``T*B`` images, the first conv + BN + pool once for direct input
                  (SpikingJelly's static-conv idiom), the membrane readout in plain PyTorch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..encoders import BernoulliEncoder, DirectEncoder
from ..models import SpikingConvNet
from ..neurons import PLIF, Surrogate
from ..readouts import reduce_outputs
from .contestants import Contestant

CHANNELS = (32, 64, 128)
FC = 256
VTH, DECAY, SLOPE, OUT_DECAY, DROPOUT = 1.0, 0.5, 2.0, 0.9, 0.2
#: network name -> (time steps, input encoding)
NETWORKS = {"conv": (4, "direct"), "conv_bernoulli": (20, "bernoulli")}


def conv_network(name: str, mode: str) -> SpikingConvNet:
    """The benchmark's conv network ``name`` (a key of :data:`NETWORKS`) in ``mode``."""
    T, encoding = NETWORKS[name]
    return SpikingConvNet(
        lambda: PLIF(vth=VTH, decay=DECAY, surrogate=Surrogate("atan", SLOPE)),
        input_shape=(1, 28, 28),
        channels=CHANNELS,
        fc=FC,
        time_steps=T,
        encoder=DirectEncoder() if encoding == "direct" else BernoulliEncoder(),
        readout="membrane",
        dropout=DROPOUT,
        out_decay=OUT_DECAY,
        mode=mode,
        pool="current",
    )


class _ConvContestant(Contestant):
    """A contestant on one of :data:`NETWORKS`; the shared state is the ``SpikingConvNet``
    state dict."""

    network = "conv"

    def __init__(self, time_steps, device, network: str = "conv"):
        super().__init__(time_steps, device)
        self.network = network
        self.direct = NETWORKS[network][1] == "direct"

    def input_train(self, images: torch.Tensor, generator) -> torch.Tensor:
        """The input train ``[T, B, 1, 28, 28]`` of ``images`` (encoding included)."""
        if self.direct:
            return images.unsqueeze(0).expand(self.T, *images.shape)
        u = torch.rand((self.T, *images.shape), generator=generator, device=images.device, dtype=images.dtype)
        return (u < images).to(images.dtype)


class ConvReference(_ConvContestant):
    name = "reference"
    description = "per-step loop: SpikingConvNet(mode='step'), every layer once per time step"
    module: SpikingConvNet

    def __init__(self, time_steps, device, network="conv"):
        super().__init__(time_steps, device, network)
        self.module = conv_network(network, "step").to(device)

    def state(self) -> dict:
        return self.module.state_dict()

    def load(self, state):
        self.module.load_state_dict(state)

    def scores(self, images, generator):
        return self.module(images, generator=generator)

    def from_train(self, train):
        return self.module.forward_spikes(train, mode="step")


class ConvEngine(ConvReference):
    name = "engine"
    description = "SpikingConvNet(mode='layer'): channels-last convs, gather over spikes, fused BN+pool and PLIF scan"

    def __init__(self, time_steps, device, network="conv"):
        _ConvContestant.__init__(self, time_steps, device, network)
        self.module = conv_network(network, "layer").to(device)

    def from_train(self, train):
        return self.module.forward_spikes(train)


class ConvSpikingJelly(_ConvContestant):
    name = "spikingjelly"
    description = (
        "spikingjelly multi-step layer.Conv2d/BatchNorm2d/MaxPool2d + ParametricLIFNode(decay_input=False), "
        "static first conv for direct input"
    )
    module: Any

    def __init__(self, time_steps, device, network="conv"):
        super().__init__(time_steps, device, network)
        from spikingjelly.activation_based import layer, neuron, surrogate

        def plif():
            # decay_input=False: H = V - V / tau + X = V * (1 - 1/tau) + X; 1/tau = sigmoid(w)
            return neuron.ParametricLIFNode(
                init_tau=1.0 / (1.0 - DECAY),
                decay_input=False,
                v_threshold=VTH,
                v_reset=0.0,
                surrogate_function=surrogate.ATan(alpha=SLOPE),
                detach_reset=False,
                step_mode="m",
            )

        net = nn.Module()
        blocks, c_in = [], 1
        for c in CHANNELS:
            blocks.append(
                nn.ModuleList(
                    [
                        layer.Conv2d(c_in, c, 3, padding=1, bias=False, step_mode="m"),
                        layer.BatchNorm2d(c, step_mode="m"),
                        layer.MaxPool2d(2, step_mode="m"),
                        plif(),
                    ]
                )
            )
            c_in = c
        net.blocks = nn.ModuleList(blocks)
        net.drop1 = layer.Dropout(DROPOUT, step_mode="m")
        net.fc = layer.Linear(CHANNELS[-1] * 3 * 3, FC, step_mode="m")
        net.lif_fc = plif()
        net.drop2 = layer.Dropout(DROPOUT, step_mode="m")
        net.out = layer.Linear(FC, 10, step_mode="m")
        self.module = net.to(device)

    def load(self, state):
        from spikingjelly.activation_based import functional

        net = self.module
        for i, (conv, bn, _, lif) in enumerate(net.blocks):
            p = f"layers.{i}."
            conv.weight.data.copy_(state[p + "synapse.0.weight"])
            bn.load_state_dict(
                {k.split("synapse.1.")[1]: v for k, v in state.items() if k.startswith(p + "synapse.1.")}
            )
            lif.w.data.copy_(-state[p + "neuron.decay_logit"])  # 1/tau = 1 - decay
        n = len(CHANNELS)
        net.fc.weight.data.copy_(state[f"layers.{n}.synapse.2.weight"])
        net.fc.bias.data.copy_(state[f"layers.{n}.synapse.2.bias"])
        net.lif_fc.w.data.copy_(-state[f"layers.{n}.neuron.decay_logit"])
        net.out.weight.data.copy_(state[f"layers.{n + 1}.synapse.1.weight"])
        net.out.bias.data.copy_(state[f"layers.{n + 1}.synapse.1.bias"])
        functional.reset_net(net)

    def _run(self, x: torch.Tensor, static: bool) -> torch.Tensor:
        from spikingjelly.activation_based import functional

        net = self.module
        functional.reset_net(net)
        for i, (conv, bn, pool, lif) in enumerate(net.blocks):
            if i == 0 and static:  # one image per sample: the conv, BN and pool once
                conv.step_mode = bn.step_mode = pool.step_mode = "s"
                try:
                    y = pool(bn(conv(x)))
                finally:
                    conv.step_mode = bn.step_mode = pool.step_mode = "m"
                x = lif(y.unsqueeze(0).repeat(self.T, *([1] * y.dim())))
            else:
                x = lif(pool(bn(conv(x))))
        x = net.lif_fc(net.fc(net.drop1(x.flatten(2))))
        cur = net.out(net.drop2(x))
        v, mem = torch.zeros_like(cur[0]), []
        for t in range(cur.shape[0]):  # the LI readout: V_t = decay * V_{t-1} + I_t
            v = v * OUT_DECAY + cur[t]
            mem.append(v)
        return reduce_outputs(torch.stack(mem))

    def scores(self, images, generator):
        if self.direct:
            return self._run(images, static=True)
        return self._run(self.input_train(images, generator), static=False)

    def from_train(self, train):
        if self.direct:
            return self._run(train[0], static=True)
        return self._run(train, static=False)


CONV_BUILTIN = {"reference": ConvReference, "engine": ConvEngine}
CONV_PEERS = {"spikingjelly": ConvSpikingJelly}

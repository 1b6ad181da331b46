"""The single-time-step graph every backend compiles.

A trained :class:`~snn_lab.models.SNNModel` runs T steps in Python. Deployment compiles
*one* step and lets a runtime loop it, as the KA200 flow does. Two lowerings of the
state (the membranes carried from step to step):

(a) explicit  -- :class:`StepModule`: ``(inputs..., *state) -> (out_t, *new_state)``.
    State is ordinary graph inputs/outputs; the runtime owns the buffers. This is what
    ONNX, TorchScript and ``torch.export`` consume.
(b) load/save -- :class:`LoadSaveStep`: ``(inputs...) -> out_t``. Each state is read
    with ``snn_lab::state_load`` and written with ``snn_lab::state_save`` keyed by a
    stable id (``"layers.0.v"``), the way the chip reads and writes membranes in DDR.
    In eager mode the module keeps the values in :attr:`LoadSaveStep.ddr`, which
    stands in for the device memory.

Inputs depend on where encoding happens (``encode``):

``host``   ``x_t``: the already-encoded input of step t (binary spikes for Bernoulli);
           its dtype may be ``uint8``/``bool`` (exact for 0/1) and is cast in-graph.
``graph``  ``(images, u_t)``: the pixel intensities and this step's uniform draws; the
           graph makes the spikes itself as ``(u_t < images)``, the comparison the
           tutorial's on-chip random op feeds and the one :class:`BernoulliEncoder` makes,
           so equal draws give equal spikes.

The LIF hard reset is emitted fused as ``where(v > vth, I, v * decay + I)``. For finite
membranes this equals the neuron's ``v * (1 - H(v - vth)) * decay + I`` bit for bit
(``v * 1`` is exact; a firing neuron restarts from ``0 + I = I``), but costs three
elementwise ops instead of seven.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeGuard

import torch
from torch import Tensor, nn

from ..encoders import BernoulliEncoder
from ..errors import UnsupportedError
from ..models import SNNModel
from ..neurons import LI, LIF
from . import ops

ENCODINGS = ("host", "graph")


@dataclass(frozen=True)
class StateSlot:
    """One state tensor of the network: layer ``layer``, field ``field`` of its NamedTuple."""

    key: str  # stable id, e.g. "layers.0.v"
    layer: int
    field: str
    shape: tuple[int, ...]  # per sample (without the batch dimension)

    @property
    def onnx_name(self) -> str:
        return "state." + self.key.replace(".", "_")


def state_slots(model: SNNModel) -> list[StateSlot]:
    """The flat list of state tensors, in the order the step graphs take them."""
    init = model.init_state(1)
    slots = []
    for i, layer_state in enumerate(init):
        fields = getattr(layer_state, "_fields", None) or tuple(str(j) for j in range(len(layer_state)))
        for name, t in zip(fields, layer_state):
            slots.append(StateSlot(f"layers.{i}.{name}", i, name, tuple(t.shape[1:])))
    return slots


def flatten_state(state: Sequence) -> list[Tensor]:
    return [t for layer_state in state for t in layer_state]


def fusable_lif(neuron: nn.Module) -> TypeGuard[LIF]:
    """LIF/IF/PLIF with the tutorial's hard reset: eligible for the fused update."""
    return isinstance(neuron, LIF) and neuron.reset == "hard"


def check_encoder(model: SNNModel, encode: str) -> None:
    if encode not in ENCODINGS:
        raise UnsupportedError(f"encode={encode!r} is unknown; accepted: {', '.join(ENCODINGS)}")
    if encode == "graph" and not isinstance(model.encoder, BernoulliEncoder):
        name = type(model.encoder).__name__ if model.encoder is not None else "none"
        raise UnsupportedError(
            f"encode=graph makes Bernoulli spikes in the graph but this network's encoder is {name}; use encode=host"
        )


def check_recurrence(model: SNNModel) -> None:
    """Refuse recurrent layers: the step graphs carry no recurrent synapse (they would
    silently drop ``W_rec s_{t-1}``)."""
    for i, layer in enumerate(model.layers):
        if getattr(layer, "recurrent", False):
            raise UnsupportedError(
                f"layer {i} ({type(layer).__name__}) is recurrent: the deploy step graphs have no "
                "recurrent synapse yet; evaluate this network in PyTorch"
            )


class _StepCore(nn.Module):
    """The per-step math shared by both lowerings (the network itself is not copied)."""

    def __init__(self, model: SNNModel, encode: str = "host"):
        super().__init__()
        check_recurrence(model)
        check_encoder(model, encode)
        self.model = model.eval()
        # the wrapper too: exporters restore the wrapper's mode recursively afterwards, and
        # a training-mode wrapper would leave BatchNorm/dropout of the network training
        self.train(False)
        self.encode = encode
        self.slots = state_slots(model)
        self.input_shape = tuple(model.input_shape)
        self._per_layer = []
        k = 0
        for i in range(len(model.layers)):
            n = sum(1 for s in self.slots if s.layer == i)
            self._per_layer.append((k, n))
            k += n

    @property
    def input_names(self) -> list[str]:
        return ["x"] if self.encode == "host" else ["images", "u"]

    def _inputs_to_x(self, inputs: Sequence[Tensor]) -> Tensor:
        if self.encode == "host":
            (x,) = inputs
            return x if x.dtype == torch.float32 else x.to(torch.float32)
        images, u = inputs
        return (u < images).to(torch.float32)

    def core(self, x: Tensor, flat: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        new_flat: list[Tensor] = []
        for layer, (k, n) in zip(self.model.spiking_layers, self._per_layer):
            cur = layer.synapse(x)
            neuron = layer.neuron
            if fusable_lif(neuron):
                v = flat[k]
                vth = neuron.vth
                v = torch.where(v > vth, cur, v * neuron.leak() + cur)
                x = (v > vth).to(cur.dtype)
                new_flat.append(v)
            elif isinstance(neuron, LI):
                v = flat[k] * neuron.decay + cur
                x = v
                new_flat.append(v)
            else:
                x, st = neuron.step(cur, neuron.State(*flat[k : k + n]))
                new_flat.extend(st)
        return x, new_flat

    def example_inputs(self, batch_size: int, input_dtype: torch.dtype = torch.float32) -> tuple[Tensor, ...]:
        shape = (batch_size, *self.input_shape)
        if self.encode == "host":
            return (torch.zeros(shape, dtype=input_dtype),)
        g = torch.Generator().manual_seed(0)
        return (torch.rand(shape, generator=g), torch.rand(shape, generator=g))


class StepModule(_StepCore):
    """Lowering (a): ``forward(*inputs, *state) -> (out_t, *new_state)``.

    ``inputs`` is ``(x_t,)`` for ``encode="host"`` and ``(images, u_t)`` for
    ``encode="graph"``; ``state`` follows :func:`state_slots`.
    """

    def forward(self, *args: Tensor):
        n_in = 1 if self.encode == "host" else 2
        x = self._inputs_to_x(args[:n_in])
        out, new_flat = self.core(x, args[n_in:])
        return (out, *new_flat)

    def init_state(self, batch_size: int) -> list[Tensor]:
        return flatten_state(self.model.init_state(batch_size))

    def example_inputs(self, batch_size: int, input_dtype: torch.dtype = torch.float32) -> tuple[Tensor, ...]:
        return (*super().example_inputs(batch_size, input_dtype), *self.init_state(batch_size))

    @property
    def output_names(self) -> list[str]:
        return ["out"] + ["new_" + s.onnx_name for s in self.slots]

    @property
    def state_input_names(self) -> list[str]:
        return [s.onnx_name for s in self.slots]


class LoadSaveStep(_StepCore):
    """Lowering (b): ``forward(*inputs) -> out_t``; state via ``state_load``/``state_save``.

    ``batch_size`` is fixed (the chip compiles one batch size per graph). :attr:`ddr`
    maps each state key to its current value; in eager mode a step reads it through
    ``state_load`` and writes the saved values back, so the module runs T steps on CPU
    exactly like the device would. While tracing (:meth:`tracing`) nothing is written
    back and the templates become graph constants, as in the tutorial's compiled graph.
    """

    def __init__(self, model: SNNModel, batch_size: int, encode: str = "host"):
        super().__init__(model, encode)
        self.batch_size = int(batch_size)
        self._writeback = True
        self.ddr: dict[str, Tensor] = {}
        self.reset()

    def reset(self) -> None:
        """Zero every state (start of a new sample batch)."""
        flat = flatten_state(self.model.init_state(self.batch_size))
        self.ddr = {s.key: t for s, t in zip(self.slots, flat)}

    @contextlib.contextmanager
    def tracing(self) -> Iterator[LoadSaveStep]:
        self.reset()
        self._writeback = False
        try:
            yield self
        finally:
            self._writeback = True

    def forward(self, *inputs: Tensor) -> Tensor:
        x = self._inputs_to_x(inputs)
        flat = [ops.state_load(self.ddr[s.key], s.key) for s in self.slots]
        out, new_flat = self.core(x, flat)
        saved = [ops.state_save(v, s.key) for s, v in zip(self.slots, new_flat)]
        if self._writeback:
            for s, v in zip(self.slots, saved):
                self.ddr[s.key] = v
        return ops.state_sink(out, saved)


# -- tracing ------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def trace_torchscript(module: nn.Module, example_inputs: tuple[Tensor, ...]) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` without autograd (surrogates trace to plain ``u > 0``)."""
    ctx = module.tracing() if isinstance(module, LoadSaveStep) else contextlib.nullcontext()
    with ctx, torch.no_grad(), _quiet():
        return torch.jit.trace(module, example_inputs, check_trace=False)


def export_program(module: nn.Module, example_inputs: tuple[Tensor, ...]):
    """``torch.export.export`` of a step (either lowering)."""
    ctx = module.tracing() if isinstance(module, LoadSaveStep) else contextlib.nullcontext()
    with ctx, torch.no_grad(), _quiet():
        return torch.export.export(module, example_inputs)

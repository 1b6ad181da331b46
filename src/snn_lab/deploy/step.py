"""The single-time-step graph every backend compiles.

A trained :class:`~snn_lab.models.SNNModel` runs T steps in Python. Deployment compiles
*one* step and lets a runtime loop it, as the KA200 flow does. Two lowerings of the
state (the membranes carried from step to step):

(a) explicit  -- :class:`StepModule`: ``(inputs..., *state) -> (out_t, *new_state)``.
    State is ordinary graph inputs/outputs; the runtime owns the buffers. This is what
    ``torch.export`` (ONNX, AOTInductor) and TorchScript consume. Every input and state
    tensor has the batch as dimension 0, so the exported graphs take any batch size.
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

State is any neuron's NamedTuple, nested for recurrent layers (``(neuron state, last
spikes)``: the previous step's spikes are state like the membranes), flattened into one
tensor per leaf with a stable key (``layers.0.v``; ``layers.0.neuron.v``,
``layers.0.spikes`` for a recurrent layer).

The LIF hard reset is emitted fused as ``where(v > vth, I, v * decay + I)``. For finite
membranes this equals the neuron's ``v * (1 - H(v - vth)) * decay + I`` bit for bit
(``v * 1`` is exact; a firing neuron restarts from ``0 + I = I``), but costs three
elementwise ops instead of seven.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

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


def _leaves(state: Any, prefix: str) -> Iterator[tuple[str, Tensor]]:
    """``(dotted path, tensor)`` for every tensor of a (nested) state NamedTuple/tuple."""
    if isinstance(state, Tensor):
        yield prefix, state
        return
    fields = getattr(state, "_fields", None) or tuple(str(j) for j in range(len(state)))
    for name, sub in zip(fields, state):
        yield from _leaves(sub, f"{prefix}.{name}")


def _rebuild(template: Any, leaves: Iterator[Tensor]) -> Any:
    """The structure of ``template`` (a layer's state) with its tensors taken from ``leaves``."""
    if isinstance(template, Tensor):
        return next(leaves)
    children = [_rebuild(sub, leaves) for sub in template]
    return type(template)(*children) if hasattr(template, "_fields") else tuple(children)


def state_slots(model: SNNModel) -> list[StateSlot]:
    """The flat list of state tensors, in the order the step graphs take them."""
    slots = []
    for i, layer_state in enumerate(model.init_state(1)):
        for path, t in _leaves(layer_state, f"layers.{i}"):
            slots.append(StateSlot(path, i, path.split(".", 2)[2], tuple(t.shape[1:])))
    return slots


def flatten_state(state: Sequence) -> list[Tensor]:
    return [t for i, layer_state in enumerate(state) for _, t in _leaves(layer_state, str(i))]


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


def recurrent_layers(model: SNNModel) -> list[int]:
    """Indices of the layers that feed their own last spikes back (``model=rsnn``)."""
    return [i for i, layer in enumerate(model.layers) if getattr(layer, "recurrent", False)]


def check_recurrence(model: SNNModel, backend: str, supported: Sequence[str]) -> None:
    """Refuse recurrent layers for a backend that cannot lower ``W_rec s_{t-1}`` (it would
    silently drop the recurrent synapse)."""
    rec = recurrent_layers(model)
    if rec:
        raise UnsupportedError(
            f"backend {backend!r} cannot lower recurrent layers (layer {rec[0]}: "
            f"{type(model.layers[rec[0]]).__name__}, W_in x_t + W_rec s_(t-1)); use {' or '.join(supported)}"
        )


class _StepCore(nn.Module):
    """The per-step math shared by both lowerings (the network itself is not copied)."""

    def __init__(self, model: SNNModel, encode: str = "host"):
        super().__init__()
        check_encoder(model, encode)
        self.model = model.eval()
        # the wrapper too: exporters restore the wrapper's mode recursively afterwards, and
        # a training-mode wrapper would leave BatchNorm/dropout of the network training
        self.train(False)
        self.encode = encode
        self.slots = state_slots(model)
        self.input_shape = tuple(model.input_shape)
        self._templates = model.init_state(1)  # each layer's state structure
        self._recurrent = set(recurrent_layers(model))
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
        for i, (layer, (k, n)) in enumerate(zip(self.model.spiking_layers, self._per_layer)):
            neuron = layer.neuron
            if i in self._recurrent or not (fusable_lif(neuron) or isinstance(neuron, LI)):
                # the layer's own step: any neuron (CubaLIF, ALIF, ...), recurrent layers
                # (their state holds the last spikes, the input of W_rec)
                x, st = layer.step(x, _rebuild(self._templates[i], iter(flat[k : k + n])))
                new_flat.extend(t for _, t in _leaves(st, ""))
                continue
            cur = layer.synapse(x)
            if fusable_lif(neuron):
                v = flat[k]
                vth = neuron.vth
                v = torch.where(v > vth, cur, v * neuron.leak() + cur)
                x = (v > vth).to(cur.dtype)
            else:  # the LI readout
                v = flat[k] * neuron.decay + cur
                x = v
            new_flat.append(v)
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


def trace_torchscript(module: nn.Module, example_inputs: tuple[Tensor, ...]) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` without autograd (surrogates trace to plain ``u > 0``).

    TorchScript is deprecated in PyTorch 2.x (``torch.jit.trace`` warns so) and is kept
    for what needs it: the Lynxi SDK's compiler loads a TorchScript file
    (``model_type="Pytorch"``), and the ``torchscript`` backend is that format itself.
    ONNX and ``.pt2`` go through :func:`export_program` instead."""
    ctx = module.tracing() if isinstance(module, LoadSaveStep) else contextlib.nullcontext()
    with ctx, torch.no_grad():
        return torch.jit.trace(module, example_inputs, check_trace=False)


def batch_dynamic_shapes(example_inputs: Sequence[Tensor]) -> tuple[tuple[dict[int, Any], ...]]:
    """``dynamic_shapes`` for ``torch.export`` of a step: dimension 0 of every input is the
    batch. One named ``Dim`` on the first input and ``Dim.DYNAMIC`` on the others:
    export proves them equal, and the ONNX exporter names the axis ``batch`` once (the
    same ``Dim`` object on every input makes it warn that the name is used only once)."""
    batch = torch.export.Dim("batch", min=1)
    specs = [{0: batch}] + [{0: torch.export.Dim.DYNAMIC} for _ in example_inputs[1:]]
    return (tuple(specs),)  # forward(*args): one entry for the varargs tuple


def exportable_batch(example_inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """The example inputs at batch size 2 when they have batch size 1: ``torch.export``
    specialises a dimension of size 1 to the constant 1, which would fix the batch."""
    if example_inputs[0].shape[0] != 1:
        return tuple(example_inputs)
    return tuple(t.expand(2, *t.shape[1:]).contiguous() for t in example_inputs)


def export_program(module: nn.Module, example_inputs: tuple[Tensor, ...], dynamic_batch: bool = False):
    """``torch.export.export`` of a step (either lowering); ``dynamic_batch``: any batch
    size (the explicit lowering only; the load/save step's state templates fix it)."""
    ctx = module.tracing() if isinstance(module, LoadSaveStep) else contextlib.nullcontext()
    shapes = None
    if dynamic_batch:
        example_inputs = exportable_batch(example_inputs)
        shapes = batch_dynamic_shapes(example_inputs)
    with ctx, torch.no_grad():
        return torch.export.export(module, example_inputs, dynamic_shapes=shapes)

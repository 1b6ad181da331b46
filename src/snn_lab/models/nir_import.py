"""A NIR graph (from snn_lab, snnTorch, Norse, ...) as an :class:`~snn_lab.models.SNNModel`
that trains, evaluates and deploys like a built-in network (``model=nir model.path=...``).

The graph must be a feed-forward chain from its ``Input`` to its ``Output`` node. Each
neuron node (``LIF``, ``IF``, ``CubaLIF``, ``LI``) closes a
:class:`~snn_lab.models.SpikingLayer` whose synapse is the nodes before it:

=================  ===========================================================
``Affine``         ``nn.Linear`` (``Linear``: without bias), weights as stored
``Conv2d``         ``nn.Conv2d``
``SumPool2d``      :class:`~snn_lab.models.synapses.SumPool2d`
``AvgPool2d``      ``nn.AvgPool2d``
``Flatten``        ``nn.Flatten`` (NIR dims exclude the batch; non-negative ones move by 1)
``Scale``          :class:`~snn_lab.models.synapses.Gain`
=================  ===========================================================

Neuron parameters are read by :mod:`snn_lab.models.nir_params` at ``dt`` (the argument,
else the graph's ``metadata["dt"]``, else 1e-4, snnTorch's): a per-layer value when all
neurons share it (the fused engine applies), else per-neuron buffers. Nodes after the
last neuron (a graph that ends in ``Affine``) become a final layer with a pass-through
``LI(decay=0)``: its membrane is that current, and the membrane readout averages it.
Recurrent graphs (cycles, snnTorch's ``RLeaky`` subgraphs) and other node types are
refused with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..encoders import Encoder
from ..errors import ConfigError, UnsupportedError, first_line
from ..neurons import IF, LI, LIF, CubaLIF, Neuron, Surrogate
from .base import SNNModel, SpikingLayer
from .nir_export import import_nir
from .nir_params import DT, read_cuba, read_if, read_li, read_lif
from .synapses import Gain, SumPool2d

__all__ = ["from_nir", "nir_network", "read_graph"]


def read_graph(path: str | os.PathLike) -> Any:
    """``nir.read(path)`` with one-line errors. NIR's own type check is off: graphs written by
    nirtorch-based exporters keep the batch dimension in their Input/Output types (Norse
    1.1) and fail it; the import checks every node's shapes itself."""
    nir = import_nir()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"NIR file {path} does not exist; give the path of a .nir file (model.path=...)")
    try:
        return nir.read(path, type_check=False)
    except Exception as e:  # noqa: BLE001 - h5py and nir raise anything on a file that is not a NIR graph
        raise ConfigError(f"NIR file {path} cannot be read ({first_line(e, True)}); is it a NIR graph?") from None


def _chain(graph: Any) -> list[tuple[str, Any]]:
    """The nodes from the Input to the Output, in order; refuses anything but a chain."""
    nir = import_nir()
    nodes, edges = graph.nodes, [tuple(e) for e in graph.edges]
    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise UnsupportedError(
                f"NIR node {name!r} is a subgraph (a recurrent layer, as snnTorch writes RLeaky/RSynaptic); "
                "snn_lab imports feed-forward graphs only"
            )
    inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedError(
            f"the NIR graph has {len(inputs)} Input and {len(outputs)} Output nodes; snn_lab imports one of each"
        )
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise UnsupportedError(f"the NIR graph has an edge {a!r} -> {b!r} to a node it does not hold")
        succ[a].append(b)
        pred[b].append(a)
    branching = [n for n in nodes if len(succ[n]) > 1 or len(pred[n]) > 1]
    if branching:
        raise UnsupportedError(
            f"NIR node {branching[0]!r} has several inputs or outputs (a recurrent or branching graph); "
            "snn_lab imports feed-forward chains only"
        )
    order, cur, seen = [], inputs[0], set()
    while True:
        if cur in seen:
            raise UnsupportedError(f"the NIR graph has a cycle through {cur!r}; snn_lab imports feed-forward chains")
        seen.add(cur)
        order.append(cur)
        if cur == outputs[0] or not succ[cur]:
            break
        cur = succ[cur][0]
    if order[-1] != outputs[0] or len(order) != len(nodes):
        raise UnsupportedError("the NIR graph is not one chain from its Input to its Output node")
    return [(n, nodes[n]) for n in order[1:-1]]


def _drop_batch(shape: tuple[int, ...], chain: list[tuple[str, Any]], nir: Any) -> tuple[int, ...]:
    """Exporters built on nirtorch's tracer may keep the example's batch dimension in the
    Input type (nirtorch issue 17: Norse 1.1 writes ``[1, 16]`` for 16 inputs); a leading 1
    the first node cannot take is dropped."""
    if len(shape) < 2 or shape[0] != 1 or not chain:
        return shape
    first = chain[0][1]
    if isinstance(first, (nir.Affine, nir.Linear)) and len(shape) == 2:
        return shape[1:]
    if isinstance(first, nir.Conv2d) and len(shape) == 4:
        return shape[1:]
    return shape


def _torch_dim(d: int) -> int:
    """A NIR (batch-free) dim as a torch (batch-first) dim."""
    return int(d) + 1 if int(d) >= 0 else int(d)


def _tensor(a: Any) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float32))


def _tuple(v: Any, n: int = 2) -> Any:
    if isinstance(v, str):
        return v
    arr = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return tuple(arr * n if len(arr) == 1 else arr)


def _synapse(nir: Any, name: str, node: Any, shape: tuple[int, ...]) -> nn.Module:
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight, dtype=np.float32)
        bias = getattr(node, "bias", None) if isinstance(node, nir.Affine) else None
        if w.ndim != 2 or len(shape) != 1 or shape[0] != w.shape[1]:
            raise UnsupportedError(
                f"NIR node {name!r} ({type(node).__name__}, weight {w.shape}) gets input of shape {list(shape)}; "
                "it needs a vector of its input size (a Flatten node before it)"
            )
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        lin.weight = nn.Parameter(_tensor(w))
        if bias is not None:
            lin.bias = nn.Parameter(_tensor(bias))
        return lin
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight, dtype=np.float32)
        bias = getattr(node, "bias", None)
        conv = nn.Conv2d(
            w.shape[1] * int(node.groups),
            w.shape[0],
            tuple(w.shape[2:]),
            stride=_tuple(node.stride),
            padding=_tuple(node.padding),
            dilation=_tuple(node.dilation),
            groups=int(node.groups),
            bias=bias is not None,
        )
        conv.weight = nn.Parameter(_tensor(w))
        if bias is not None:
            conv.bias = nn.Parameter(_tensor(bias))
        return conv
    if isinstance(node, nir.Flatten):
        return nn.Flatten(_torch_dim(node.start_dim), _torch_dim(node.end_dim))
    if isinstance(node, nir.SumPool2d):
        return SumPool2d(_tuple(node.kernel_size), _tuple(node.stride), _tuple(node.padding))
    if isinstance(node, nir.AvgPool2d):
        return nn.AvgPool2d(_tuple(node.kernel_size), _tuple(node.stride), _tuple(node.padding))
    if isinstance(node, nir.Scale):
        return Gain(_tensor(np.broadcast_to(np.asarray(node.scale, dtype=np.float64), shape)))
    raise UnsupportedError(
        f"NIR node {name!r} is a {type(node).__name__}, which snn_lab does not import (it reads Affine, Linear, "
        "Conv2d, SumPool2d, AvgPool2d, Flatten, Scale, LIF, IF, CubaLIF and LI)"
    )


def _per_layer(values: np.ndarray, shape: tuple[int, ...], name: str) -> float | torch.Tensor:
    """One float when every neuron shares the value, else a float32 tensor of ``shape``."""
    try:
        full = np.broadcast_to(np.asarray(values, dtype=np.float64), shape)
    except ValueError:
        raise UnsupportedError(
            f"NIR node {name!r} has parameters of shape {np.shape(values)} for input of shape {list(shape)}"
        ) from None
    if full.size and np.all(full == full.flat[0]):
        return float(full.flat[0])
    return _tensor(full)


def _set(neuron: nn.Module, attr: str, value: float | torch.Tensor) -> None:
    if isinstance(value, torch.Tensor):
        setattr(neuron, attr, value)  # replaces the registered buffer with per-neuron values


def _neuron(nir: Any, name: str, node: Any, shape: tuple[int, ...], dt: float, surrogate: Surrogate) -> Any:
    """``(neuron, gain or None)`` for a neuron node, or None for a synapse node."""
    try:
        if isinstance(node, nir.LIF):
            p = read_lif(node, name, dt)
            decay, vth = _per_layer(p["decay"], shape, name), _per_layer(p["vth"], shape, name)
            n: Neuron = LIF(vth=_first(vth), decay=_first(decay), surrogate=surrogate)
            _set(n, "decay", decay)
            _set(n, "vth", vth)
            return n, None
        if isinstance(node, nir.IF):
            vth = _per_layer(read_if(node, name, dt)["vth"], shape, name)
            n = IF(vth=_first(vth), surrogate=surrogate)
            _set(n, "vth", vth)
            return n, None
        if isinstance(node, nir.CubaLIF):
            p = read_cuba(node, name, dt)
            vals = {k: _per_layer(v, shape, name) for k, v in p.items()}
            n = CubaLIF(
                vth=_first(vals["vth"]), alpha=_first(vals["alpha"]), beta=_first(vals["beta"]), surrogate=surrogate
            )
            for k, v in vals.items():
                _set(n, k, v)
            return n, None
        if isinstance(node, nir.LI):
            p = read_li(node, name, dt)
            decay = _per_layer(p["decay"], shape, name)
            n = LI(decay=_first(decay))
            _set(n, "decay", decay)
            gain = p["gain"]
            return n, (None if np.all(gain == 1.0) else _tensor(np.broadcast_to(gain, shape)))
    except ValueError as e:
        if isinstance(e, UnsupportedError):
            raise
        raise UnsupportedError(f"NIR node {name!r} ({type(node).__name__}): {first_line(e)}") from None
    return None


def _first(v: float | torch.Tensor) -> float:
    """A valid constructor value (the per-neuron tensor, if any, replaces it after)."""
    return float(v.reshape(-1)[0]) if isinstance(v, torch.Tensor) else v


def _shape_after(module: nn.Module, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    try:
        with torch.no_grad():
            return tuple(module(torch.zeros(1, *shape)).shape[1:])
    except RuntimeError as e:
        raise UnsupportedError(
            f"NIR node {name!r} does not fit its input shape {list(shape)}: {first_line(e)}"
        ) from None


def from_nir(
    source: Any,
    *,
    time_steps: int | None = None,
    encoder: Encoder | None = None,
    readout: str | None = None,
    surrogate: Surrogate | None = None,
    dt: float | None = None,
    mode: str = "layer",
) -> SNNModel:
    """The network a NIR graph (a ``nir.NIRGraph`` or the path of a ``.nir`` file) describes.

    ``time_steps``: default the graph's ``metadata["time_steps"]`` (snn_lab writes it);
    ``readout``: must fit the graph (``membrane`` when it ends in ``LI``, else ``rate``),
    default what fits; ``surrogate``: the spike function's surrogate for training.
    """
    nir = import_nir()
    graph = read_graph(source) if isinstance(source, (str, os.PathLike)) else source
    meta = dict(getattr(graph, "metadata", None) or {})
    dt = float(dt if dt is not None else meta.get("dt", DT))
    if time_steps is None:
        if "time_steps" not in meta:
            raise ConfigError("the NIR graph does not say its number of time steps; pass time_steps=")
        time_steps = int(meta["time_steps"])
    surrogate = surrogate if surrogate is not None else Surrogate()
    chain = _chain(graph)  # checks there is exactly one Input
    inp = next(v for v in graph.nodes.values() if isinstance(v, nir.Input))
    shape = tuple(int(d) for d in np.asarray(next(iter(inp.input_type.values()))).reshape(-1))
    shape = _drop_batch(shape, chain, nir)
    input_shape = shape
    layers: list[SpikingLayer] = []
    pending: list[nn.Module] = []
    for name, node in chain:
        made = _neuron(nir, name, node, shape, dt, surrogate)
        if made is None:
            module = _synapse(nir, name, node, shape)
            shape = _shape_after(module, shape, name)
            pending.append(module)
            continue
        neuron, gain = made
        if gain is not None:
            pending.append(Gain(gain))
        layers.append(SpikingLayer(nn.Sequential(*pending), neuron))
        pending = []
    if pending:  # a graph ending in synapse nodes: its output per step is their current
        layers.append(SpikingLayer(nn.Sequential(*pending), LI(decay=0.0)))
    if not layers:
        raise UnsupportedError("the NIR graph has no layers between its Input and Output")
    fits = "membrane" if isinstance(layers[-1].neuron, LI) else "rate"
    if readout is not None and readout != fits:
        raise ConfigError(
            f"readout={readout!r} does not fit the NIR graph: its output layer is "
            f"{type(layers[-1].neuron).__name__}, which needs readout={fits}"
        )
    return SNNModel(layers, input_shape, int(time_steps), encoder, fits, mode).eval()


def nir_network(
    make_neuron: Callable[[], Neuron],
    input_shape: Sequence[int],
    time_steps: int,
    encoder: Encoder | None = None,
    readout: str = "rate",
    out_decay: float = 0.8,
    *,
    path: str,
    dt: float | None = None,
    num_classes: int = 10,
    mode: str = "layer",
) -> SNNModel:
    """The ``model=nir`` builder (the models registry's contract): the graph at ``path``.

    The neuron group's surrogate is used for training; its other parameters, and
    ``out_decay``, are the graph's. ``input_shape`` must hold as many values as the
    graph's input (the graph's shape is used); ``num_classes`` must equal its output size.
    """
    del out_decay  # the readout layer's leak is the graph's
    if not path or path == "???":  # "???": the schema's MISSING, as plain data
        raise ConfigError("model=nir needs the graph's file: model.path=<file.nir>")
    surrogate = getattr(make_neuron(), "spike", None)
    net = from_nir(
        path,
        time_steps=time_steps,
        encoder=encoder,
        readout=readout,
        surrogate=surrogate if isinstance(surrogate, Surrogate) else None,
        dt=dt,
        mode=mode,
    )
    n_in = int(np.prod([int(d) for d in input_shape]))
    if n_in != net.in_features:
        raise ConfigError(
            f"model.input_shape={list(input_shape)} has {n_in} values, the NIR graph's input "
            f"{list(net.input_shape)} has {net.in_features}; set model.input_shape={list(net.input_shape)}"
        )
    n_out = int(np.prod(net.state_shapes[-1]))
    if int(num_classes) != n_out:
        raise ConfigError(f"model.num_classes={num_classes} but the NIR graph has {n_out} outputs; set it to {n_out}")
    return net

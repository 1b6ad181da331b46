"""An :class:`~snn_lab.models.SNNModel` as a NIR graph (``nir.NIRGraph``) that snnTorch
and Norse load as they are (docs/INTEROP.md).

The graph is a chain ``Input -> (synapse nodes -> neuron node)* -> Output``, one
neuron node per :class:`~snn_lab.models.SpikingLayer`, parameters mapped by
:mod:`snn_lab.models.nir_params`. What the synapse becomes:

* ``Linear`` -> ``Affine`` (``Linear`` without bias), float32, unchanged;
* ``Conv2d`` -> ``Conv2d`` with a bias (zeros if it has none: both clients need one);
* ``BatchNorm1d/2d`` (eval statistics) is folded into the ``Linear``/``Conv2d`` before
  it (NIR has no normalisation node): ``W' = W s``, ``b' = (b - mean) s + beta`` with
  ``s = gamma / sqrt(var + eps)``, in float64, rounded once to float32. The folded
  affine is not bit-identical to PyTorch's BatchNorm, so a membrane within rounding
  of the threshold may spike differently (docs/INTEROP.md gives the measured rate);
* ``AvgPool2d`` (kernel area a power of two, no padding) -> ``SumPool2d`` with ``1/area``
  folded into the adjacent affine (the one before it in the layer: weight and bias; else
  the one after it: weight): the same numbers, since scaling by a power of two is exact,
  and the one pooling node both clients read (snnTorch has no ``SumPool2d`` mapping of
  its own but nirtorch's default; Norse has no ``AvgPool2d``). Otherwise ``AvgPool2d``;
* ``Flatten`` -> ``Flatten`` with *negative* ``start_dim``/``end_dim``: NIR shapes have no
  batch dimension, PyTorch's have, and both clients pass the two numbers to
  ``torch.nn.Flatten`` unchanged; counted from the end they mean the same in both;
* ``Dropout`` (identity in eval) is left out; ``MaxPool2d`` is refused (NIR has no
  max-pool node: train the conv model with ``model.pool_kind=avg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedError
from ..neurons import LI, LIF, CubaLIF
from .base import SNNModel
from .nir_params import DT, cuba_params, f64, if_params, li_params, lif_params
from .synapses import Gain, SumPool2d

__all__ = ["READOUT_NODES", "import_nir", "to_nir", "write_nir"]

#: ``li``: the membrane readout's LI output layer is a NIR ``LI`` node (neither snnTorch
#: 1.0 nor Norse 1.1 reads one); ``current``: the graph ends at that layer's input
#: current (its ``Affine``), for clients without LI (apply ``v = decay v + I`` outside)
READOUT_NODES = ("li", "current")


def import_nir() -> Any:
    """The ``nir`` package, or a one-line error saying how to install it."""
    try:
        import nir
    except ImportError as e:
        raise UnsupportedError(
            f"NIR export/import needs the package 'nir' ({e}); pip install -e '.[interop]'"
        ) from None
    return nir


@dataclass
class _Op:
    """One synapse operation on its way to a NIR node (arrays float32 unless noted)."""

    kind: str  # affine | conv | bn | flatten | sumpool | avgpool | scale
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    p: dict[str, Any] = field(default_factory=dict)


def _modules(synapse: nn.Module) -> list[nn.Module]:
    if isinstance(synapse, nn.Sequential):
        return [m for child in synapse for m in _modules(child)]
    return [synapse]


def _np32(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().to(torch.float32).numpy().copy()


def _neg_dim(d: int, ndim: int, where: str) -> int:
    """A ``torch.nn.Flatten`` dim (batch first) as a NIR dim counted from the end."""
    if d == 0 or d < -(ndim + 1) or d > ndim:
        raise UnsupportedError(f"NIR export: {where} flattens the batch dimension ({d}); NIR shapes have none")
    return d if d < 0 else d - 1 - ndim


def _ops(layer_index: int, synapse: nn.Module, shape: tuple[int, ...]) -> list[_Op]:
    ops: list[_Op] = []
    where = f"layer {layer_index}"
    x = torch.zeros(1, *shape)
    for m in _modules(synapse):
        if isinstance(m, (nn.Identity, nn.modules.dropout._DropoutNd)):
            continue
        with torch.no_grad():
            y = m(x)
        in_shape, out_shape = tuple(x.shape[1:]), tuple(y.shape[1:])
        x = y
        if isinstance(m, nn.Linear):
            ops.append(_Op("affine", in_shape, out_shape, {"w": _np32(m.weight), "b": _np32(m.bias)}))
        elif isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise UnsupportedError(
                    f"NIR export: {where} has Conv2d padding_mode={m.padding_mode!r}; NIR pads zeros"
                )
            ops.append(
                _Op(
                    "conv",
                    in_shape,
                    out_shape,
                    {
                        "w": _np32(m.weight),
                        "b": _np32(m.bias),
                        "stride": tuple(m.stride),
                        "padding": m.padding if isinstance(m.padding, str) else tuple(m.padding),
                        "dilation": tuple(m.dilation),
                        "groups": int(m.groups),
                    },
                )
            )
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.training or m.running_mean is None or m.running_var is None:
                raise UnsupportedError(
                    f"NIR export: {where} has {type(m).__name__} without running statistics (or in training "
                    "mode); NIR has no normalisation node, so it is folded into the affine before it, which "
                    "needs eval statistics: call model.eval()"
                )
            s = (f64(m.weight) if m.weight is not None else 1.0) / np.sqrt(f64(m.running_var) + float(m.eps))
            t = (f64(m.bias) if m.bias is not None else 0.0) - f64(m.running_mean) * s
            ops.append(_Op("bn", in_shape, out_shape, {"s": s, "t": t, "name": type(m).__name__}))
        elif isinstance(m, nn.Flatten):
            nd = len(in_shape)
            start = _neg_dim(int(m.start_dim), nd, where)
            end = _neg_dim(int(m.end_dim), nd, where)
            ops.append(_Op("flatten", in_shape, out_shape, {"start_dim": start, "end_dim": end}))
        elif isinstance(m, SumPool2d):
            ops.append(_Op("sumpool", in_shape, out_shape, {"k": m.kernel_size, "s": m.stride, "pad": m.padding}))
        elif isinstance(m, nn.AvgPool2d):
            k, s, pad = (nn.modules.utils._pair(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding))
            if m.ceil_mode or m.divisor_override is not None or (any(pad) and not m.count_include_pad):
                raise UnsupportedError(
                    f"NIR export: {where} has an AvgPool2d with ceil_mode/divisor_override/count_include_pad=False, "
                    "which NIR's AvgPool2d cannot express"
                )
            ops.append(_Op("avgpool", in_shape, out_shape, {"k": k, "s": s, "pad": pad}))
        elif isinstance(m, Gain):
            ops.append(_Op("scale", in_shape, out_shape, {"scale": f64(m.scale)}))
        elif isinstance(m, (nn.MaxPool2d, nn.MaxPool1d, nn.AdaptiveMaxPool2d)):
            raise UnsupportedError(
                f"NIR export: {where} has {type(m).__name__}; NIR has no max-pool node (only SumPool2d and "
                "AvgPool2d), so this network has no exact NIR graph; train the conv model with "
                "model.pool_kind=avg (exported as SumPool2d), or deploy it with onnxruntime or torchscript"
            )
        else:
            raise UnsupportedError(
                f"NIR export: {where} has {type(m).__name__}, which has no NIR node here (Linear, Conv2d, "
                "BatchNorm, AvgPool2d, Flatten and Dropout do); deploy it with onnxruntime or torchscript"
            )
    return ops


def _fold(layer_index: int, ops: list[_Op]) -> list[_Op]:
    """Fold BatchNorm into the affine before it and average pools into sum pools."""
    out: list[_Op] = []
    for op in ops:
        if op.kind == "bn":
            prev = out[-1] if out else None
            if prev is None or prev.kind not in ("affine", "conv"):
                raise UnsupportedError(
                    f"NIR export: layer {layer_index} has {op.p['name']} that does not follow a Linear or Conv2d; "
                    "NIR has no normalisation node and there is no affine to fold it into"
                )
            w, b = f64(prev.p["w"]), prev.p["b"]
            s, t = op.p["s"], op.p["t"]
            per_out = s.reshape(-1, *([1] * (w.ndim - 1)))
            prev.p["w"] = (w * per_out).astype(np.float32)
            prev.p["b"] = ((f64(b) if b is not None else 0.0) * s + t).astype(np.float32)
            prev.out_shape = op.out_shape
        else:
            out.append(op)
    for i, op in enumerate(out):
        if op.kind != "avgpool" or any(op.p["pad"]):
            continue
        area = op.p["k"][0] * op.p["k"][1]
        if area & (area - 1):  # not a power of two: 1/area is not exact, keep the AvgPool2d node
            continue
        before = out[i - 1] if i > 0 and out[i - 1].kind in ("affine", "conv") else None
        after = next((o for o in out[i + 1 :] if o.kind != "flatten"), None)
        if before is not None:
            before.p["w"] = (before.p["w"] / np.float32(area)).astype(np.float32)
            if before.p["b"] is not None:
                before.p["b"] = (before.p["b"] / np.float32(area)).astype(np.float32)
        elif after is not None and after.kind in ("affine", "conv"):
            after.p["w"] = (after.p["w"] / np.float32(area)).astype(np.float32)
        else:
            continue
        op.kind = "sumpool"
        op.p["s"] = tuple(op.p["s"])
    return out


def _synapse_node(nir: Any, op: _Op) -> Any:
    p = op.p
    if op.kind == "affine":
        return nir.Linear(weight=p["w"]) if p["b"] is None else nir.Affine(weight=p["w"], bias=p["b"])
    if op.kind == "conv":
        bias = p["b"] if p["b"] is not None else np.zeros(p["w"].shape[0], dtype=np.float32)
        return nir.Conv2d(
            input_shape=tuple(op.in_shape[1:]),
            weight=p["w"],
            stride=p["stride"],
            padding=p["padding"],
            dilation=p["dilation"],
            groups=p["groups"],
            bias=bias,
        )
    if op.kind == "flatten":
        return nir.Flatten(input_type={"input": np.array(op.in_shape)}, start_dim=p["start_dim"], end_dim=p["end_dim"])
    if op.kind in ("sumpool", "avgpool"):
        cls = nir.SumPool2d if op.kind == "sumpool" else nir.AvgPool2d
        node = cls(kernel_size=np.array(p["k"]), stride=np.array(p["s"]), padding=np.array(p["pad"]))
        node.input_type = {"input": np.array(op.in_shape)}
        node.output_type = {"output": np.array(op.out_shape)}
        return node
    if op.kind == "scale":
        return nir.Scale(scale=np.broadcast_to(p["scale"], op.in_shape).astype(np.float64))
    raise AssertionError(op.kind)


def _neuron_node(nir: Any, layer_index: int, neuron: nn.Module, shape: tuple[int, ...], dt: float, gain: Any) -> Any:
    name = type(neuron).__name__
    if isinstance(neuron, LI):
        p = li_params(neuron.decay, shape, dt)
        if gain is not None:
            p["r"] = p["r"] * np.broadcast_to(gain, shape)
        return "li", nir.LI(**p)
    if isinstance(neuron, (LIF, CubaLIF)) and neuron.reset != "hard":
        raise UnsupportedError(
            f"NIR export: layer {layer_index} ({name}) uses reset={neuron.reset!r}; NIR's neurons reset to "
            "v_reset (hard reset) only; train with neuron.reset=hard, or deploy with onnxruntime or torchscript"
        )
    if isinstance(neuron, LIF):
        decay = f64(neuron.leak())
        if np.all(decay == 1.0):
            return "if", nir.IF(**if_params(neuron.vth, shape, dt))
        return "lif", nir.LIF(**lif_params(decay, neuron.vth, shape, dt))
    if isinstance(neuron, CubaLIF):
        return "cuba", nir.CubaLIF(**cuba_params(neuron.alpha, neuron.beta, neuron.vth, shape, dt))
    raise UnsupportedError(
        f"NIR export: layer {layer_index} has neuron {name}; NIR nodes exist for LIF/PLIF/IF (hard reset), "
        "CubaLIF and the LI readout; deploy this network with onnxruntime or torchscript"
    )


def to_nir(model: SNNModel, dt: float = DT, readout_node: str = "li") -> Any:
    """The ``nir.NIRGraph`` of ``model`` (eval mode: BatchNorm running statistics).

    ``dt`` is written to ``metadata["dt"]`` and sets the time constants (see
    :mod:`~snn_lab.models.nir_params`); ``readout_node``: see :data:`READOUT_NODES`.
    Raises :class:`~snn_lab.errors.UnsupportedError` naming the layer and the reason
    for what NIR (or this mapping) cannot express.
    """
    nir = import_nir()
    if readout_node not in READOUT_NODES:
        raise UnsupportedError(f"readout_node={readout_node!r} is unknown; accepted: {', '.join(READOUT_NODES)}")
    was_training = model.training
    model.eval()
    try:
        nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(model.input_shape)})}
        chain = ["input"]
        shape = tuple(model.input_shape)
        layers = list(model.spiking_layers)
        for i, layer in enumerate(layers):
            if getattr(layer, "recurrent", False):
                raise UnsupportedError(
                    f"NIR export: layer {i} ({type(layer).__name__}) is recurrent; this exporter writes "
                    "feed-forward graphs only"
                )
            ops = _fold(i, _ops(i, layer.synapse, shape))
            gain = None
            if ops and ops[-1].kind == "scale" and isinstance(layer.neuron, LI):
                gain = ops.pop().p["scale"]
            counts: dict[str, int] = {}
            for op in ops:
                kind = "linear" if op.kind == "affine" and op.p["b"] is None else op.kind
                n = counts.get(kind, 0)
                counts[kind] = n + 1
                name = f"layer{i}_{kind}" + (f"{n}" if n else "")
                nodes[name] = _synapse_node(nir, op)
                chain.append(name)
                shape = op.out_shape
            if tuple(model.state_shapes[i]) != shape:
                raise UnsupportedError(f"NIR export: layer {i}: synapse output {shape} != neuron shape")
            if i == len(layers) - 1 and readout_node == "current" and isinstance(layer.neuron, LI):
                if gain is not None:
                    nodes[f"layer{i}_scale"] = nir.Scale(scale=np.broadcast_to(gain, shape).astype(np.float64))
                    chain.append(f"layer{i}_scale")
                break
            kind, node = _neuron_node(nir, i, layer.neuron, shape, dt, gain)
            nodes[f"layer{i}_{kind}"] = node
            chain.append(f"layer{i}_{kind}")
        nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
        chain.append("output")
        edges = list(pairwise(chain))
        meta = {
            "dt": float(dt),
            "producer": "snn_lab",
            "time_steps": int(model.time_steps),
            "readout": model.readout if readout_node == "li" else "current",
            "encoder": type(model.encoder).__name__ if model.encoder is not None else "none",
        }
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    finally:
        model.train(was_training)


def write_nir(model: SNNModel, path: str, dt: float = DT, readout_node: str = "li") -> Any:
    """Write :func:`to_nir`'s graph to ``path`` (HDF5, ``nir.write``); returns the graph."""
    nir = import_nir()
    graph = to_nir(model, dt, readout_node)
    nir.write(path, graph)
    return graph

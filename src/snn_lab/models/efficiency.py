"""Efficiency metrics of a spiking network, with NeuroBench's definitions.

Yik et al., "NeuroBench: A Framework for Benchmarking Neuromorphic Computing Algorithms
and Systems" (arXiv:2304.04640; Nature Communications 2025, doi:10.1038/s41467-025-56739-4),
and the metric definitions of its harness (docs/EFFICIENCY.md has the details):

* **activation sparsity**: zero activations / all activations, over every spiking
  neuron, time step and sample (per layer, and overall weighted by neuron count);
* **synaptic operations** per sample: for every weighted connection (``Linear``,
  ``Conv*``, the recurrent ``Linear``), the weight-input pairs that are both nonzero,
  at every time step. A connection whose input holds only values in {-1, 0, 1}
  (spikes) does effective *accumulates* (ACs), any other input effective
  *multiply-accumulates* (MACs). *Dense* counts every pair, zero or not. Biases,
  normalisation, pooling and neuron updates are not synaptic operations;
* **footprint**: bytes of parameters + buffers; also the bytes of neuron state one
  sample holds across time steps;
* **connection sparsity**: zero weights / all weights of the connections.

Counts come from what a forward pass recorded (the input train and each layer's output
sequence, :class:`~snn_lab.models.Record`): nothing is re-run through the connections.
Each connection's *fan-out* (for each input element, the nonzero weights it meets: for a
``Conv2d`` with padding, a border pixel reaches fewer output positions) is computed once
per :class:`EfficiencyMeter`; the effective operations of a batch are then the count of
nonzero inputs per element dotted with it, which equals NeuroBench's "binarised layer on
binarised input, summed".
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import Record, SNNModel, SpikingLayer
from .recurrent import RecurrentSpikingLayer

__all__ = [
    "CONNECTIONS",
    "DEFINITIONS",
    "ENERGY_SCOPE",
    "ENERGY_SOURCE",
    "Connection",
    "EfficiencyMeter",
    "EnergyModel",
    "connection_sparsity",
    "footprint",
    "state_bytes",
]

#: the modules whose weights are synapses (NeuroBench's stateless connection layers)
CONNECTIONS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

DEFINITIONS = (
    "NeuroBench (Yik et al., Nature Communications 2025, doi:10.1038/s41467-025-56739-4): activation sparsity, "
    "synaptic operations (effective ACs/MACs, dense), footprint, connection sparsity; see docs/EFFICIENCY.md"
)
ENERGY_SOURCE = (
    "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm: "
    "32-bit float add 0.9 pJ, 32-bit float multiply 3.7 pJ (AC = add, MAC = multiply + add)"
)
ENERGY_SCOPE = (
    "an estimate of synaptic arithmetic energy only (effective ACs and MACs x energy per operation); "
    "memory access, data movement, neuron updates and control are not included"
)


@dataclass(frozen=True)
class EnergyModel:
    """Energy per synaptic operation, in picojoules (defaults: :data:`ENERGY_SOURCE`)."""

    ac_pj: float = 0.9
    mac_pj: float = 4.6

    def __post_init__(self) -> None:
        for name in ("ac_pj", "mac_pj"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r} is invalid: must be a finite number of picojoules >= 0")

    def describe(self) -> dict[str, Any]:
        return {
            "ac_pj": float(self.ac_pj),
            "mac_pj": float(self.mac_pj),
            "source": ENERGY_SOURCE,
            "scope": ENERGY_SCOPE,
        }


# -- static metrics -----------------------------------------------------------------------
def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def state_bytes(model: SNNModel) -> int:
    """Bytes of the state one sample carries from step to step (every layer's neuron
    state, and a recurrent layer's last spikes), in the model's parameter dtype."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    state = model.init_state(1, device="cpu", dtype=dtype)
    return sum(t.numel() * t.element_size() for t in _tensors(state))


def footprint(model: nn.Module) -> dict[str, int]:
    """NeuroBench's model footprint (parameters + buffers, zero weights included), and,
    for an :class:`SNNModel`, the per-sample state bytes."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    out = {"parameter_bytes": params, "buffer_bytes": buffers, "total_bytes": params + buffers}
    if isinstance(model, SNNModel):
        out["state_bytes_per_sample"] = state_bytes(model)
    return out


def _weight(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """A connection's ``weight`` (or ``bias``) tensor; None when it has none."""
    t = getattr(module, name, None)
    return t if isinstance(t, torch.Tensor) else None


def _weights(module: nn.Module) -> torch.Tensor:
    w = _weight(module)
    if w is None:
        raise ValueError(f"{type(module).__name__} has no weight tensor: not a connection")
    return w


def connection_sparsity(model: nn.Module) -> float:
    """Zero weights / all weights over the connection modules (biases excluded, as in
    NeuroBench); 0.0 for a model without connections."""
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, CONNECTIONS):
            w = _weights(m)
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / total if total else 0.0


# -- connections and their fan-out ---------------------------------------------------------
def _leaves(module: nn.Module) -> list[nn.Module] | None:
    """The modules a ``Sequential`` (nested ones flattened) applies in order; a lone
    connection as a one-item list; None for any other container."""
    if isinstance(module, CONNECTIONS):
        return [module]
    if not isinstance(module, nn.Sequential):
        return None
    out: list[nn.Module] = []
    for m in module:
        inner = _leaves(m) if isinstance(m, nn.Sequential) else [m]
        if inner is None:
            return None
        out.extend(inner)
    return out


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def fanout(module: nn.Module, in_shape: Sequence[int], dense: bool = False) -> torch.Tensor:
    """For each input element of ``module`` (per sample, shape ``in_shape``): how many
    weights it multiplies in one call, counting only nonzero weights (or all of them:
    ``dense``). It is the transpose of the module's linear map with binarised weights
    (no bias) applied to ones: the gradient of ``sum(module_bin(x))`` by ``x``."""
    w = _weights(module).detach()
    bias = _weight(module, "bias")
    # validation runs under inference mode; a fresh autograd graph needs it off here
    with torch.inference_mode(False), torch.enable_grad():
        w_bin = torch.ones_like(w) if dense else (w != 0).to(w.dtype)
        params = {"weight": w_bin}
        if bias is not None:
            params["bias"] = torch.zeros_like(bias.detach())
        x = torch.zeros((1, *in_shape), dtype=w.dtype, device=w.device, requires_grad=True)
        y = torch.func.functional_call(module, params, (x,))
        (grad,) = torch.autograd.grad(y.sum(), x)
    return grad[0].detach()


@dataclass
class Connection:
    """One weighted connection of layer ``layer``: its module, the per-sample shape of
    the module's input, its fan-out maps and whether it is fed by the layer's input
    (``feedforward``) or the layer's own spikes of the previous step (``recurrent``)."""

    layer: int
    name: str
    module: nn.Module
    kind: str  # feedforward | recurrent
    in_shape: tuple[int, ...]
    fanout: torch.Tensor  # [*in_shape], nonzero weights met by each input element
    dense_per_step: int  # all weights met by all input elements, zero or not: dense ops per step

    def describe(self) -> dict[str, Any]:
        w = _weights(self.module)
        return {
            "name": self.name,
            "type": type(self.module).__name__,
            "kind": self.kind,
            "input_shape": list(self.in_shape),
            "weights": int(w.numel()),
            "zero_weights": int((w == 0).sum()),
        }


#: modules that keep a binary input binary (in eval mode: dropout is the identity)
_KEEP_BINARY: tuple[type[nn.Module], ...] = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
)


def _is_integral(rows: torch.Tensor) -> bool:
    """True when every value of ``rows`` is a whole number. On the CPU in chunks that stay
    in cache (one full-size temporary costs more than the check itself)."""
    if rows.device.type != "cpu":
        return torch.equal(rows, torch.round(rows))
    step = max(1, (1 << 20) // max(1, rows.shape[1]))
    buf = torch.empty((min(step, rows.shape[0]), rows.shape[1]), dtype=rows.dtype)
    for start in range(0, rows.shape[0], step):
        chunk = rows[start : start + step]
        rounded = buf[: chunk.shape[0]]
        torch.round(chunk, out=rounded)
        if not torch.equal(chunk, rounded):
            return False
    return True


def _nonzero_ops(z: torch.Tensor, fan: torch.Tensor, binary: bool | None) -> tuple[torch.Tensor, bool]:
    """``(operations, spikes)`` for inputs ``z`` ``[N, *in_shape]``: the nonzero input
    elements weighted by their fan-out, summed over the N rows, and whether the inputs
    are spikes (NeuroBench's test: every value in {-1, 0, 1}; accumulates, else MACs).

    ``binary``: True when ``z`` is known to hold only 0 and 1 (a spiking neuron's output,
    by the neuron contract, as the engine's spike-aware matmul also takes it); None: the
    data decides. A 0/1 input is its own nonzero mask: one matrix-vector product counts."""
    rows = z.reshape(z.shape[0], -1)
    if rows.dtype != fan.dtype:
        rows = rows.to(fan.dtype)
    total = torch.float64 if fan.device.type != "mps" else torch.float32
    if rows.numel() == 0:
        return torch.zeros((), dtype=total, device=fan.device), True
    signed = False
    if not binary:
        lo, hi = (float(v) for v in torch.aminmax(rows))
        spikes = lo >= -1 and hi <= 1 and _is_integral(rows)
        if not spikes:
            return ((rows != 0).to(fan.dtype) @ fan).sum(dtype=total), False
        signed = lo < 0
    return ((rows.abs() if signed else rows) @ fan).sum(dtype=total), True


def _looks_binary(x: torch.Tensor, n: int = 1 << 16) -> bool:
    """True when the first ``n`` values of ``x`` are all 0 or 1: a cheap guard on a train
    declared binary (a wrongly declared analog encoder fails it at its first pixels)."""
    head = x.reshape(-1)[:n]
    if head.numel() == 0:
        return True
    lo, hi = (float(v) for v in torch.aminmax(head))
    return lo >= 0 and hi <= 1 and torch.equal(head, torch.round(head))


def _nonzero_count(spikes: torch.Tensor) -> torch.Tensor:
    """Nonzero entries of a 0/1 spike tensor (a spiking neuron's output, binary by the
    neuron contract): a matrix-vector product with ones, cheaper than ``count_nonzero``."""
    rows = spikes.reshape(-1, spikes.shape[-1])
    if not rows.is_floating_point():
        return torch.count_nonzero(rows)
    # row sums are whole numbers <= the row length: exact in the tensor's float type
    return (rows @ torch.ones(rows.shape[1], dtype=rows.dtype, device=rows.device)).sum(
        dtype=torch.float64 if rows.device.type != "mps" else torch.float32
    )


class EfficiencyMeter:
    """Accumulates NeuroBench's workload metrics over batches.

    ``update(input_train, record)`` after each forward pass (``record`` from
    ``forward_spikes(input_train, return_record=True)``); ``summary()`` gives the
    per-sample figures. Fan-out maps are taken from the weights at construction: build a
    new meter when the weights change (once per validation epoch). The counters live in
    one tensor (:attr:`counts`) on the model's device, so a distributed run reduces
    them with one sum (:meth:`set_counts`).
    """

    def __init__(self, model: SNNModel, energy: EnergyModel | None = None):
        self.model = model
        self.energy = energy or EnergyModel()
        self.layers: list[SpikingLayer] = list(model.spiking_layers)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        in_shapes = [tuple(model.input_shape), *model.state_shapes[:-1]]
        self.connections: list[Connection] = []
        # per layer: the flattened synapse (None: a container of another kind, counted
        # through hooks), the leaf positions of its connections, and the connections'
        # indices (feedforward ones in call order; the recurrent one or None)
        self._plans: list[tuple[list[nn.Module] | None, list[int]]] = []
        self._feedforward: list[list[int]] = []
        self._recurrent: list[int | None] = []
        names = {id(m): n for n, m in model.named_modules()}
        with _eval(model), torch.no_grad():
            for i, (layer, shape) in enumerate(zip(self.layers, in_shapes)):
                self._plan_layer(i, layer, shape, names, device)
        n_conn, n_layers = len(self.connections), len(self.layers)
        # [effective ACs per connection, effective MACs per connection, zero activations
        # per layer, activations per layer, samples]
        self._acs = 0
        self._macs = n_conn
        self._zeros = 2 * n_conn
        self._total = 2 * n_conn + n_layers
        self._samples = 2 * n_conn + 2 * n_layers
        self.counts = torch.zeros(self._samples + 1, dtype=self.dtype, device=device)
        self.time_steps = 0

    def _plan_layer(
        self, i: int, layer: SpikingLayer, shape: tuple[int, ...], names: dict[int, str], device: torch.device
    ) -> None:
        leaves = _leaves(layer.synapse)
        seen: list[tuple[nn.Module, tuple[int, ...]]] = []
        hooks = [
            m.register_forward_pre_hook(lambda mod, args: seen.append((mod, tuple(args[0].shape[1:]))))
            for m in layer.synapse.modules()
            if isinstance(m, CONNECTIONS)
        ]
        try:  # a dry run (eval mode, 2 samples for BatchNorm) gives each connection's input shape
            layer.synapse(torch.zeros((2, *shape), device=device))
        finally:
            for h in hooks:
                h.remove()
        first = len(self.connections)
        for mod, in_shape in seen:
            self.connections.append(self._connection(i, mod, "feedforward", in_shape, names))
        self._feedforward.append(list(range(first, len(self.connections))))
        self._plans.append((leaves, [k for k, m in enumerate(leaves or []) if isinstance(m, CONNECTIONS)]))
        if isinstance(layer, RecurrentSpikingLayer):
            rec = layer.recurrent_synapse
            self._recurrent.append(len(self.connections))
            self.connections.append(self._connection(i, rec, "recurrent", (rec.in_features,), names))
        else:
            self._recurrent.append(None)

    def _connection(
        self, i: int, mod: nn.Module, kind: str, in_shape: tuple[int, ...], names: dict[int, str]
    ) -> Connection:
        fan = fanout(mod, in_shape).flatten()
        # one row's operations are an integer <= the fan-out sum: exact in float32 below
        # 2**24, where the matrix-vector product is cheapest; float64 beyond (not on MPS)
        if float(fan.sum()) >= 2**24 and self.dtype == torch.float64:
            fan = fan.to(torch.float64)
        dense = int(fanout(mod, in_shape, dense=True).sum().item())
        return Connection(i, names.get(id(mod), type(mod).__name__), mod, kind, in_shape, fan, dense)

    # -- counting ---------------------------------------------------------------------
    def reset(self) -> None:
        self.counts.zero_()

    def set_counts(self, counts: torch.Tensor) -> None:
        """Replace the counters (e.g. by their sum over distributed ranks)."""
        self.counts = counts.to(self.counts)

    @torch.no_grad()
    def update(self, input_train: torch.Tensor, record: Record, input_binary: bool | None = None) -> None:
        """Count one batch: ``input_train`` ``[T, B, ...]`` (what the first layer read)
        and the ``record`` of ``forward_spikes(input_train, return_record=True)``.

        ``input_binary``: True when the caller knows the train holds only 0 and 1 (an
        encoder that declares binary output): its first values are still checked, and a
        train that fails the check is counted from its data. Otherwise (None, False) the
        data decides, value by value, as NeuroBench's counter does."""
        if len(record.spikes) != len(self.layers):
            raise ValueError(
                f"the record holds {len(record.spikes)} layer outputs but the network has {len(self.layers)} "
                "layers; pass the Record of forward_spikes(..., return_record=True)"
            )
        if input_train.dim() < 3:
            raise ValueError(f"input train of shape {tuple(input_train.shape)}: expected [T, B, ...]")
        T, B = int(input_train.shape[0]), int(input_train.shape[1])
        x = input_train.reshape(T, B, *self.model.input_shape)
        c = self.counts
        with _eval(self.model):
            for i, layer in enumerate(self.layers):
                out = record.spikes[i]
                # the input train is checked (an encoder may be analog); a spiking
                # layer's output is binary by the neuron contract
                if i == 0:
                    spikes_in = True if input_binary and _looks_binary(x) else None
                else:
                    spikes_in = bool(self.layers[i - 1].neuron.spiking) or None
                self._count_feedforward(i, x if i == 0 else record.spikes[i - 1], spikes_in, c)
                k = self._recurrent[i]
                if k is not None:  # s_{t-1} feeds step t; step 0 reads the zero initial state
                    own = bool(layer.neuron.spiking) or None
                    self._add(k, out[:-1].reshape(-1, *self.connections[k].in_shape), 1, own, c)
                if layer.neuron.spiking:
                    c[self._zeros + i] += out.numel() - _nonzero_count(out).to(self.dtype)
                    c[self._total + i] += out.numel()
        c[self._samples] += B
        self.time_steps = T

    def _count_feedforward(self, i: int, feed: torch.Tensor, binary: bool | None, c: torch.Tensor) -> None:
        """Count layer ``i``'s feedforward connections on the layer's input ``feed``
        ``[T, B, ...]`` (``binary``: True when it is known to be spikes)."""
        T = feed.shape[0]
        # the direct encoder repeats one input at every step (stride 0 in time): count
        # one step, T times (each step's synapse call does these operations)
        repeat = T if feed.stride(0) == 0 and T > 1 else 1
        z = feed[0] if repeat > 1 else feed.reshape(-1, *feed.shape[2:])
        mine = self._feedforward[i]
        leaves, positions = self._plans[i]
        if leaves is None:  # another kind of container: its connections' inputs via hooks
            pending = iter(mine)
            synapse = self.layers[i].synapse
            hooks = [
                m.register_forward_pre_hook(lambda mod, args: self._add(next(pending), args[0], repeat, None, c))
                for m in synapse.modules()
                if isinstance(m, CONNECTIONS)
            ]
            try:
                synapse(z)
            finally:
                for h in hooks:
                    h.remove()
            return
        ks = iter(mine)
        last = positions[-1] if positions else -1
        for pos, m in enumerate(leaves[: last + 1]):
            if pos in positions:
                self._add(next(ks), z, repeat, binary, c)
            if pos < last:  # only what feeds a later connection is run
                z = m(z)
                binary = binary if isinstance(m, _KEEP_BINARY) else None

    def _add(self, k: int, z: torch.Tensor, repeat: int, binary: bool | None, c: torch.Tensor) -> None:
        """Add connection ``k``'s effective operations for inputs ``z`` ``[N, *in_shape]``
        (N = steps x samples), each row counted ``repeat`` times."""
        ops, is_binary = _nonzero_ops(z, self.connections[k].fanout, binary)
        c[(self._acs if is_binary else self._macs) + k] += ops.to(self.dtype) * repeat

    # -- results ------------------------------------------------------------------------
    @property
    def samples(self) -> int:
        return int(self.counts[self._samples].item())

    def summary(self) -> dict[str, Any]:
        """Per-sample figures over every batch counted so far (plain Python values)."""
        counts = self.counts.detach().cpu().to(torch.float64).tolist()
        n_conn, n_layers = len(self.connections), len(self.layers)
        acs = counts[self._acs : self._acs + n_conn]
        macs = counts[self._macs : self._macs + n_conn]
        zeros = counts[self._zeros : self._zeros + n_layers]
        total = counts[self._total : self._total + n_layers]
        samples = int(counts[self._samples])
        if samples == 0:
            raise ValueError("no batch was counted: call update() before summary()")
        n = samples
        T = self.time_steps
        layers = []
        for i, layer in enumerate(self.layers):
            ks = [k for k, conn in enumerate(self.connections) if conn.layer == i]
            spiking = bool(layer.neuron.spiking)
            layers.append(
                {
                    "layer": i,
                    "neurons": math.prod(self.model.state_shapes[i]),
                    "spiking": spiking,
                    "activation_sparsity": zeros[i] / total[i] if spiking and total[i] else None,
                    "synops": sum(acs[k] + macs[k] for k in ks) / n,
                    "effective_acs": sum(acs[k] for k in ks) / n,
                    "effective_macs": sum(macs[k] for k in ks) / n,
                    "dense_synops": T * sum(self.connections[k].dense_per_step for k in ks),
                    "connections": [self.connections[k].describe() for k in ks],
                }
            )
        eff_acs, eff_macs = sum(acs) / n, sum(macs) / n
        dense = T * sum(conn.dense_per_step for conn in self.connections)
        all_total = sum(total)
        return {
            "definitions": DEFINITIONS,
            "samples": samples,
            "time_steps": T,
            "synops": eff_acs + eff_macs,
            "effective_acs": eff_acs,
            "effective_macs": eff_macs,
            "dense_synops": dense,
            "activation_sparsity": sum(zeros) / all_total if all_total else None,
            "connection_sparsity": connection_sparsity(self.model),
            "footprint": footprint(self.model),
            "energy": {
                "pj_per_sample": eff_acs * self.energy.ac_pj + eff_macs * self.energy.mac_pj,
                "dense_mac_pj_per_sample": dense * self.energy.mac_pj,
                **self.energy.describe(),
            },
            "layers": layers,
        }

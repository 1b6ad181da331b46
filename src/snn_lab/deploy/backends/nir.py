"""``nir``: export to the Neuromorphic Intermediate Representation, read it back, run it.

Export (``step.nir``, HDF5): ``Input -> Flatten -> (Affine -> LIF)* -> Output`` with the
mapping of the tutorial's *discrete* LIF (``V = V (1 - o) decay + W s``, ``o = V > vth``,
reset one step late) onto NIR's continuous one
(``tau dv/dt = (v_leak - v) + r I``, spike when ``v > v_threshold``, then ``v = v_reset``)
that reproduces the tutorial's spikes in NIR clients that use this discretisation::

    Affine(W, b)                      float32, unscaled
    LIF(tau = dt / (1 - decay), r = 1, v_leak = 0,
        v_threshold = vth * (1 - decay), v_reset = 0)
    dt = 1e-4 in the graph metadata   (Norse users: from_nir(graph, dt=1e-4))

Parameters are float64 arrays of shape ``(n,)`` computed from the float32 ``decay``/``vth``.
Euler at ``dt`` gives ``v' = decay v + (1 - decay) I``: NIR's membrane is the tutorial's
scaled by ``(1 - decay)``, and its threshold is scaled the same way, so spikes agree. The
the tutorial's delayed hard reset needs no extra node: NIR's immediate reset to 0 followed by
the leak is the same thing (only the stored membrane differs: post- vs pre-reset).
The non-spiking ``LI`` output layer of the membrane readout maps to
``LI(tau = dt / (1 - decay), r = 1 / (1 - decay), v_leak = 0)`` (membrane unscaled).

Read-back (checked): the file is read with ``nir.read`` and turned into a
``torch.fx.GraphModule`` by ``nirtorch.nir_to_torch`` with the node map below. Each LIF
recovers the discrete ``decay = 1 - dt / tau`` and ``vth = v_threshold / (r dt / tau)``
(the discretisation snnTorch's ``import_from_nir`` uses) and must give back the exact
float32 values of the trained network, or the compile fails. Not representable in this
mapping (compile fails with a clear error): subtract reset, IF (``decay = 1``), ALIF,
Izhikevich, BatchNorm/conv layers, ``encode=graph`` (NIR has no random op).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import DeployError, UnsupportedError
from ...neurons import LI, LIF
from ..registry import register_backend
from .base import Backend, CompiledStep

DT = 1e-4


def _f64(x) -> float:
    x = x.detach() if isinstance(x, torch.Tensor) else x
    return float(np.float64(np.float32(float(x))))


def _lowerable(model):
    """Yield ``(kind, module_or_neuron)`` for the layers of ``model`` or raise UnsupportedError."""
    for i, layer in enumerate(model.layers):
        mods = list(layer.synapse) if isinstance(layer.synapse, nn.Sequential) else [layer.synapse]
        for m in mods:
            if isinstance(m, nn.Flatten):
                yield "flatten", m
            elif isinstance(m, nn.Linear):
                yield "linear", m
            elif isinstance(m, nn.Dropout):
                continue  # identity in eval mode
            else:
                raise UnsupportedError(
                    f"nir backend: layer {i} has {type(m).__name__}, which this exporter "
                    "does not map (Linear/Flatten/Dropout only); use onnxruntime or torchscript"
                )
        n = layer.neuron
        if isinstance(n, LIF):
            if n.reset != "hard":
                raise UnsupportedError(
                    f"nir backend: layer {i} uses reset={n.reset!r}; NIR's LIF resets to "
                    "v_reset (hard) only; use onnxruntime or torchscript"
                )
            if not float(n.leak().detach()) < 1.0:
                raise UnsupportedError(
                    f"nir backend: layer {i} has decay=1 (IF), which has no finite NIR "
                    "tau; use onnxruntime or torchscript"
                )
            yield "lif", n
        elif isinstance(n, LI):
            yield "li", n
        else:
            raise UnsupportedError(
                f"nir backend: layer {i} has neuron {type(n).__name__}; only LIF/PLIF "
                "(hard reset) and the LI readout map to NIR; use onnxruntime or torchscript"
            )


def to_nir(model, dt: float = DT):
    """Build the ``nir.NIRGraph`` of a (Linear + LIF) network."""
    import nir

    shape = np.array(model.input_shape, dtype=np.int64)
    nodes = {"input": nir.Input(input_type={"input": shape})}
    edges, prev = [], "input"
    cur_shape = shape
    counts = {"flatten": 0, "linear": 0, "lif": 0, "li": 0}
    for kind, m in _lowerable(model):
        idx = counts[kind]
        counts[kind] += 1
        name = f"{kind}{idx}"
        if kind == "flatten":
            node = nir.Flatten(input_type={"input": cur_shape}, start_dim=0, end_dim=-1)
            cur_shape = np.array([int(np.prod(cur_shape))], dtype=np.int64)
        elif kind == "linear":
            w = m.weight.detach().to(torch.float32).numpy().copy()
            if m.bias is not None:
                node = nir.Affine(weight=w, bias=m.bias.detach().to(torch.float32).numpy().copy())
            else:
                node = nir.Linear(weight=w)
            cur_shape = np.array([w.shape[0]], dtype=np.int64)
        elif kind == "lif":
            n = int(cur_shape[0])
            decay, vth = _f64(m.leak()), _f64(m.vth)
            node = nir.LIF(
                tau=np.full(n, dt / (1.0 - decay)),
                r=np.ones(n),
                v_leak=np.zeros(n),
                v_threshold=np.full(n, vth * (1.0 - decay)),
                v_reset=np.zeros(n),
            )
        else:  # li
            n = int(cur_shape[0])
            decay = _f64(m.decay)
            node = nir.LI(tau=np.full(n, dt / (1.0 - decay)), r=np.full(n, 1.0 / (1.0 - decay)), v_leak=np.zeros(n))
        nodes[name] = node
        edges.append((prev, name))
        prev = name
    nodes["output"] = nir.Output(output_type={"output": cur_shape})
    edges.append((prev, "output"))
    meta = {
        "dt": dt,
        "producer": "snn_lab",
        "time_steps": int(model.time_steps),
        "readout": model.readout,
        "lif_mapping": "tau=dt/(1-decay), r=1, v_leak=0, v_threshold=vth*(1-decay), v_reset=0",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


# -- read-back ------------------------------------------------------------------------------


class NirLIF(nn.Module):
    """A NIR LIF node discretised at ``dt`` (snnTorch's reading), run as the tutorial's recurrence.

    State is the pre-reset membrane in discrete units (NIR's ``v / (r dt / tau)``)."""

    decay: torch.Tensor  # buffers
    vth: torch.Tensor
    gain: torch.Tensor

    def __init__(self, node, dt: float):
        super().__init__()
        tau, r = np.asarray(node.tau, np.float64), np.asarray(node.r, np.float64)
        if np.any(np.asarray(node.v_leak) != 0) or (node.v_reset is not None and np.any(np.asarray(node.v_reset) != 0)):
            raise UnsupportedError("nir backend: LIF with v_leak != 0 or v_reset != 0 has no tutorial-LIF reading")
        gain = r * dt / tau
        self.register_buffer("decay", torch.from_numpy((1.0 - dt / tau).astype(np.float32)))
        self.register_buffer(
            "vth", torch.from_numpy((np.asarray(node.v_threshold, np.float64) / gain).astype(np.float32))
        )
        self.register_buffer("gain", torch.from_numpy(gain.astype(np.float32)))

    def forward(self, x, state=None):
        # NIR's membrane u = gain * V with V' = decay V + I: run V, compare to v_threshold / gain.
        v = torch.zeros_like(x) if state is None else state
        v = torch.where(v > self.vth, x, v * self.decay + x)
        return (v > self.vth).to(x.dtype), v


class NirLI(nn.Module):
    decay: torch.Tensor  # buffers
    gain: torch.Tensor

    def __init__(self, node, dt: float):
        super().__init__()
        tau, r = np.asarray(node.tau, np.float64), np.asarray(node.r, np.float64)
        self.register_buffer("decay", torch.from_numpy((1.0 - dt / tau).astype(np.float32)))
        self.register_buffer("gain", torch.from_numpy((r * dt / tau).astype(np.float32)))

    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        if not torch.all(self.gain == 1.0):
            x = x * self.gain
        v = v * self.decay + x
        return v, v


def _affine(node) -> nn.Module:
    w = np.asarray(node.weight, dtype=np.float32)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=hasattr(node, "bias"))
    lin.weight.data = torch.from_numpy(w.copy())
    if hasattr(node, "bias"):
        lin.bias.data = torch.from_numpy(np.asarray(node.bias, dtype=np.float32).copy())
    return lin


def node_map(dt: float) -> dict:
    import nir

    return {
        nir.Affine: _affine,
        nir.Linear: _affine,
        # NIR shapes exclude the batch dimension; torch's include it.
        nir.Flatten: lambda n: nn.Flatten(
            start_dim=int(n.start_dim) + 1, end_dim=int(n.end_dim) + 1 if int(n.end_dim) >= 0 else int(n.end_dim)
        ),
        nir.LIF: lambda n: NirLIF(n, dt),
        nir.LI: lambda n: NirLI(n, dt),
    }


def read_nir(path: str):
    """Read a NIR file and return ``(graph_module, graph)`` via nirtorch."""
    import nir
    import nirtorch

    graph = nir.read(path)
    dt = float(graph.metadata.get("dt", DT)) if getattr(graph, "metadata", None) else DT
    module = nirtorch.nir_to_torch(graph, node_map(dt))
    return module.eval(), graph


def check_readback(model, module) -> dict:
    """Compare the read-back parameters with the trained network's, exactly."""
    ours = [m for kind, m in _lowerable(model) if kind in ("linear", "lif", "li")]
    theirs = [m for m in module.modules() if isinstance(m, (nn.Linear, NirLIF, NirLI))]
    if len(ours) != len(theirs):
        raise DeployError(f"nir read-back has {len(theirs)} layers, the network {len(ours)}; the export is broken")
    checked = 0
    for a, b in zip(ours, theirs):
        if isinstance(a, nn.Linear):
            same = (
                isinstance(b, nn.Linear)
                and torch.equal(a.weight.detach(), b.weight)
                and (a.bias is None or torch.equal(a.bias.detach(), b.bias))
            )
        elif isinstance(a, LI):
            same = (
                isinstance(b, NirLI) and bool(torch.all(b.decay == a.decay.detach())) and bool(torch.all(b.gain == 1.0))
            )
        else:
            same = (
                isinstance(b, NirLIF)
                and bool(torch.all(b.decay == a.leak().detach()))
                and bool(torch.all(b.vth == a.vth.detach()))
            )
        if not same:
            raise DeployError(
                f"nir read-back of {type(a).__name__} does not reproduce the trained parameters "
                "exactly; the dt/tau mapping lost precision"
            )
        checked += 1
    return {"layers_checked": checked}


class NirStep(CompiledStep):
    backend = "nir"
    readback: dict[str, Any]  # check_readback's summary, set by NirBackend.compile

    def __init__(self, module, step, batch_size, artifacts, state_keys):
        super().__init__(step, batch_size, artifacts, torch.float32)
        self.module = module
        self.state_keys = state_keys  # nirtorch state dict keys of the stateful nodes, in layer order

    def __call__(self, x, *flat):
        state = None
        if flat and flat[0] is not None:
            state = self._fresh_state()
            for k, v in zip(self.state_keys, flat):
                state[k] = v
        with torch.no_grad():
            out, state = self.module(x.to(torch.float32), state)
        return (out, *[state[k] for k in self.state_keys])

    def _fresh_state(self) -> dict:
        _, st = self.module(torch.zeros(self.batch_size, *self.step_module.input_shape))
        return st

    def reset(self, images=None, keys=None) -> None:
        self._nstate = None

    def step(self, t, x=None):
        x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        with torch.no_grad():
            out, self._nstate = self.module(x.to(torch.float32), self._nstate)
        return out.numpy()


@register_backend("nir")
class NirBackend(Backend):
    description = "NIR export (Affine + LIF, exact tutorial-LIF mapping), read back with nirtorch"
    requires = ("nir", "nirtorch", "h5py")
    install_hint = "pip install nir nirtorch h5py (or: pip install -e '.[deploy]')"
    encodings = ("host",)
    default_options: ClassVar[dict[str, Any]] = {"dt": DT}

    def check_model(self, model) -> None:
        list(_lowerable(model))

    def compile(self, step, example_inputs, out_dir, **options):
        import nir

        opts = self.options(options)
        if step.encode != "host":
            raise UnsupportedError(
                "nir backend: NIR has no random op, so encoding cannot be in the graph; use encode=host"
            )
        model = step.model
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "step.nir")
        nir.write(path, to_nir(model, float(opts["dt"])))
        module, graph = read_nir(path)
        info = check_readback(model, module)
        # Stateful nodes, in graph (= layer) order: their names are the nirtorch state keys.
        keys = [name.replace(".", "_") for name, node in graph.nodes.items() if isinstance(node, (nir.LIF, nir.LI))]
        compiled = NirStep(module, step, example_inputs[0].shape[0], {"nir": path}, keys)
        compiled.readback = info
        return compiled

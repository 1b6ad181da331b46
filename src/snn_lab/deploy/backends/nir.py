"""``nir``: the network written as a NIR graph (``step.nir``), read back, run from the file.

Export and import are :func:`snn_lab.models.to_nir` / :func:`snn_lab.models.from_nir`
(the parameter mapping: :mod:`snn_lab.models.nir_params`, docs/INTEROP.md). ``compile``

1. writes ``step.nir`` (HDF5) for the network (BatchNorm folded, average pools as sum
   pools; max-pools, subtract reset, ALIF, Izhikevich and recurrent layers are refused
   with the reason);
2. reads the file and imports it, and fails unless the import written again is the
   very same graph (every array bit for bit) and every neuron parameter read back is
   the trained float32 value exactly;
3. runs the file's network: with ``client=snn_lab`` (default) the imported network's
   step module; with ``client=snntorch`` / ``client=norse`` the graph loaded by that
   library as its users load it (``snntorch.import_nir.import_from_nir(graph)``,
   ``norse.torch.from_nir(graph, dt=...)``), state kept inside the client.

The runtime then compares the outputs with eager PyTorch on the same input spikes like
for every backend, so ``agreement`` measures the whole path, the BatchNorm fold and the
client's arithmetic included. The membrane readout's ``LI`` node is read by neither
snnTorch 1.0 nor Norse 1.1; those clients get the graph that ends at the readout layer's
current and the runtime applies the LI (``v = decay v + I``) to their outputs.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import DeployError, UnsupportedError
from ...models import from_nir, to_nir
from ...models.nir_params import DT, f64
from ...neurons import LI, LIF, CubaLIF
from ..registry import register_backend
from ..step import StepModule
from .base import Backend, CompiledStep

CLIENTS = ("snn_lab", "snntorch", "norse")


def _params(node: Any) -> dict[str, np.ndarray]:
    """A node's parameters as arrays (types and metadata left out: a graph read back
    holds as arrays what a fresh one holds as tuples)."""
    skip = ("input_type", "output_type", "metadata")
    return {k: np.asarray(v) for k, v in vars(node).items() if k not in skip and v is not None}


def graph_diff(a: Any, b: Any) -> list[str]:
    """Where two NIR graphs differ (node names, types, edges, any parameter bit): empty when equal."""
    out = []
    if sorted(a.nodes) != sorted(b.nodes):  # nir.read orders nodes by name
        return [f"nodes {sorted(a.nodes)} != {sorted(b.nodes)}"]
    if sorted(map(tuple, a.edges)) != sorted(map(tuple, b.edges)):
        out.append("edges")
    for name in a.nodes:
        na, nb = a.nodes[name], b.nodes[name]
        if type(na) is not type(nb):
            out.append(f"{name}: {type(na).__name__} != {type(nb).__name__}")
            continue
        xa, xb = _params(na), _params(nb)
        for k in sorted(set(xa) | set(xb)):
            va, vb = xa.get(k), xb.get(k)
            if va is None or vb is None or va.shape != vb.shape or not np.array_equal(va, vb):
                out.append(f"{name}.{k}")
    return out


def check_neurons(model, imported) -> int:
    """Every neuron parameter of ``imported`` equals ``model``'s float32 value exactly."""
    checked = 0
    for i, (a, b) in enumerate(zip(model.spiking_layers, imported.spiking_layers)):
        na, nb = a.neuron, b.neuron
        if isinstance(na, LI):
            pairs = [("decay", na.decay, getattr(nb, "decay", None))]
        elif isinstance(na, CubaLIF):
            pairs = [(k, getattr(na, k), getattr(nb, k, None)) for k in ("alpha", "beta", "vth")]
        elif isinstance(na, LIF):
            leak = nb.leak() if isinstance(nb, LIF) else None
            pairs = [("decay", na.leak(), leak), ("vth", na.vth, getattr(nb, "vth", None))]
        else:
            raise UnsupportedError(f"nir backend: layer {i} has neuron {type(na).__name__}")
        for key, x, y in pairs:
            if y is None or not np.array_equal(np.broadcast_to(f64(x), np.shape(f64(y))), f64(y)):
                raise DeployError(
                    f"nir backend: layer {i} {key} read back from the file is not the trained float32 value "
                    "exactly; the dt/tau mapping lost precision (try another backend.options.dt)"
                )
            checked += 1
    return checked


class NirStep(CompiledStep):
    """The imported network's step module (client ``snn_lab``): state explicit."""

    backend = "nir"
    readback: dict[str, Any]  # what compile checked, for the report

    def __init__(self, step, batch_size, artifacts, imported_step: StepModule):
        super().__init__(step, batch_size, artifacts, torch.float32)
        self.imported_step = imported_step

    def __call__(self, *args):
        with torch.no_grad():
            return self.imported_step(*(a.to(torch.float32) if i == 0 else a for i, a in enumerate(args)))

    def init_state(self):
        return self.imported_step.init_state(self.batch_size)

    def rebatch(self, batch_size: int) -> NirStep:
        other = NirStep(self.step_module, batch_size, self.artifacts, self.imported_step)
        other.readback = self.readback
        return other

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "client": "snn_lab", **self.readback}


class ClientStep(CompiledStep):
    """The graph run by snnTorch or Norse; the client keeps the state (session API only).

    ``li_decay``: the readout layer's leak when the client got the graph without its
    ``LI`` node (its output is then that layer's current)."""

    backend = "nir"
    readback: dict[str, Any]

    def __init__(self, step, batch_size, artifacts, client: str, module, li_decay: torch.Tensor | None):
        super().__init__(step, batch_size, artifacts, torch.float32)
        self.client, self.module, self.li_decay = client, module, li_decay
        self._cstate: Any = None
        self._v: torch.Tensor | None = None
        self._started = False

    def __call__(self, *args):
        raise DeployError(f"nir backend: client={self.client} keeps its state inside; drive it with reset()/step()")

    def reset(self, images=None, keys=None) -> None:
        self._cstate, self._v, self._started = None, None, True
        for m in self.module.modules():  # snnTorch neurons hold their membranes (init_hidden=True)
            if m is not self.module and hasattr(m, "reset_mem"):
                m.reset_mem()

    def step(self, t, x=None) -> np.ndarray:
        if not self._started:
            raise DeployError("step() before reset(): reset() starts each sample batch")
        x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        with torch.no_grad():
            x = x.to(torch.float32)
            if self.client == "norse":
                out, self._cstate = self.module(x, self._cstate)
            else:
                out, _ = self.module(x)
            if self.li_decay is not None:
                self._v = out if self._v is None else self._v * self.li_decay + out
                out = self._v
        return out.detach().numpy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "client": self.client, **self.readback}


def client_limits(client: str, graph: Any) -> None:
    """Refuse nodes the client would crash on or silently misread (docs/INTEROP.md)."""
    import nir

    known = {
        "snntorch": {
            nir.IF: "reads IF only with r = 1 and then as a leaky neuron (beta 0.9) that returns (spikes, "
            "membrane), which the next node cannot take",
            nir.Scale: "has no Scale node",
        },
        "norse": {
            nir.AvgPool2d: "has no AvgPool2d node (its graph executor drops it silently)",
            nir.Scale: "has no Scale node (its graph executor drops it silently)",
        },
    }[client]
    for name, node in graph.nodes.items():
        why = known.get(type(node))
        if why:
            raise UnsupportedError(
                f"nir backend: client={client}: the graph has {type(node).__name__} node {name!r} and "
                f"{client} {why}; run it with client=snn_lab"
                + (" or client=norse" if client == "snntorch" and isinstance(node, nir.IF) else "")
            )


def load_client(client: str, graph: Any, dt: float):
    """The graph as ``client`` loads it (its print-outs swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        if client == "snntorch":
            from snntorch.import_nir import import_from_nir

            return import_from_nir(graph)
        import norse.torch

        return norse.torch.from_nir(graph, dt=dt)


@register_backend("nir")
class NirBackend(Backend):
    description = "NIR graph (step.nir) read back and run by snn_lab, snnTorch or Norse"
    requires = ("nir", "h5py")
    install_hint = "pip install nir h5py (or: pip install -e '.[interop]')"
    encodings = ("host",)
    default_options: ClassVar[dict[str, Any]] = {"dt": DT, "client": "snn_lab"}

    def check_model(self, model) -> None:
        to_nir(model)

    def compile(self, step, example_inputs, out_dir, **options):
        import nir

        opts = self.options(options)
        client, dt = str(opts["client"]), float(opts["dt"])
        if client not in CLIENTS:
            raise UnsupportedError(f"nir backend: client={client!r} is unknown; accepted: {', '.join(CLIENTS)}")
        if step.encode != "host":
            raise UnsupportedError(
                "nir backend: NIR has no random op, so encoding cannot be in the graph; use encode=host"
            )
        model = step.model
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "step.nir")
        written = to_nir(model, dt)
        nir.write(path, written)
        graph = nir.read(path)
        imported = from_nir(graph, time_steps=model.time_steps, encoder=model.encoder, mode="step")
        diff = graph_diff(graph, to_nir(imported, dt))
        if diff:
            raise DeployError(
                f"nir backend: the graph read back from {path} does not write back identically ({', '.join(diff[:4])})"
            )
        readback = {"nir_nodes": len(graph.nodes), "neuron_parameters_checked": check_neurons(model, imported)}
        batch = example_inputs[0].shape[0]
        compiled: NirStep | ClientStep
        if client == "snn_lab":
            compiled = NirStep(step, batch, {"nir": path}, StepModule(imported, "host"))
        else:
            self._need(client)
            li = imported.layers[-1].neuron if isinstance(imported.layers[-1].neuron, LI) else None
            artifacts = {"nir": path}
            if li is not None:  # neither client reads LI: give it the graph up to the readout's current
                path_c = os.path.join(out_dir, "step_current.nir")
                nir.write(path_c, to_nir(model, dt, readout_node="current"))
                graph, artifacts = nir.read(path_c), {**artifacts, "nir_client": path_c}
            client_limits(client, graph)
            module = load_client(client, graph, dt)
            compiled = ClientStep(step, batch, artifacts, client, module, None if li is None else li.decay.clone())
        compiled.readback = readback
        return compiled

    @staticmethod
    def _need(client: str) -> None:
        try:
            __import__("snntorch" if client == "snntorch" else "norse")
        except ImportError as e:
            raise UnsupportedError(
                f"nir backend: client={client} needs the package {client!r} ({e}); pip install -e '.[interop]'"
            ) from None

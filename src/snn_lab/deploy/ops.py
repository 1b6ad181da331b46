"""Load/save operators for the state lowering of memory-mapped accelerators.

On the Lynxi KA200 (and similar chips) the compiled graph is *one* time step; the
membrane potentials live in device DDR between steps and the graph reads and writes
them with dedicated operators. We register the same operators with ``torch.library``
so that any tracer (``torch.jit.trace``, ``torch.export``) records them as opaque nodes:

``snn_lab::state_load(Tensor template, str key) -> Tensor``
    read the state named ``key``; ``template`` carries shape, dtype and initial value.
``snn_lab::state_save(Tensor value, str key) -> Tensor``
    write ``value`` as the new state ``key``; returns it so the write stays in the graph.
``snn_lab::state_sink(Tensor out, Tensor[] saved) -> Tensor``
    returns ``out``; taking the saves as inputs keeps dead-code elimination from dropping
    them (the chip's compiler does the same with a virtual output op).

On CPU every one of them is an identity (a copy, as custom ops may not alias their
inputs). ``key`` is stable across runs and processes (``"layers.<i>.<field>"``), so a
vendor compiler can map each key to one DDR buffer. Which values flow through them is
the job of :class:`~snn_lab.deploy.step.LoadSaveStep`, not of the operators.
"""

from __future__ import annotations

import torch
from torch import Tensor

NAMESPACE = "snn_lab"
LOAD = f"{NAMESPACE}::state_load"
SAVE = f"{NAMESPACE}::state_save"
SINK = f"{NAMESPACE}::state_sink"


@torch.library.custom_op(LOAD, mutates_args=())
def state_load(template: Tensor, key: str) -> Tensor:
    return template.clone()


@state_load.register_fake
def _state_load_fake(template: Tensor, key: str) -> Tensor:
    return torch.empty_like(template)


@torch.library.custom_op(SAVE, mutates_args=())
def state_save(value: Tensor, key: str) -> Tensor:
    return value.clone()


@state_save.register_fake
def _state_save_fake(value: Tensor, key: str) -> Tensor:
    return torch.empty_like(value)


@torch.library.custom_op(SINK, mutates_args=())
def state_sink(out: Tensor, saved: list[Tensor]) -> Tensor:
    return out.clone()


@state_sink.register_fake
def _state_sink_fake(out: Tensor, saved: list[Tensor]) -> Tensor:
    return torch.empty_like(out)


def graph_ops(graph_text: str) -> dict[str, int]:
    """Count the load/save/sink nodes in a printed TorchScript or FX graph."""
    return {
        name: graph_text.count(f"{NAMESPACE}::{name}") + graph_text.count(f"{NAMESPACE}.{name}")
        for name in ("state_load", "state_save", "state_sink")
    }

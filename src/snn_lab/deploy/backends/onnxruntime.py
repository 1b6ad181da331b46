"""``onnxruntime``: ONNX export of the explicit-state step + an ORT ``InferenceSession``.

Export: the ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``,
onnxscript), opset 18, with a dynamic batch axis named ``batch`` on every input and
output (``x_t`` or ``images``/``u_t``, and every state tensor): one ``step.onnx`` runs at
any batch size, so the runtime's batch-1 latency run reuses it. The TorchScript-based
exporter is not used; TorchScript stays only where a target needs it (the Lynxi SDK
compiles a TorchScript trace, see ``lynxi.py``).

Execution providers: ``providers`` (an ordered list, as ORT takes it); by default the
accelerated ones that ``onnxruntime.get_available_providers()`` offers (TensorRT, CUDA)
before CPU. A provider asked for that this ORT build does not have fails in one line
that lists the ones it has.

The runtime path keeps everything in place between steps: the state lives in two sets
of preallocated buffers bound with ``io_binding`` (step t reads set A and writes set B,
step t+1 the reverse), the images of a batch are bound once, and each step only re-points
the input at that step's slice of the draws (or spikes). No tensor is allocated or copied
per step on CPU (with a GPU provider ORT copies the host-bound buffers to and from the
device each step). With ``encode=host`` binary spikes are fed as ``uint8`` (exact for
0/1) and cast in-graph, a quarter of the float32 bytes; analog inputs (direct encoding)
as float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ...errors import BackendUnavailableError, UnsupportedError
from ..registry import register_backend
from ..step import batch_dynamic_shapes, exportable_batch
from .base import Backend, CompiledStep, resolve_input_dtype, with_input_dtype

_LEVELS = ("disable", "basic", "extended", "all")
#: providers chosen by default, in this order, when this ORT build has them (then CPU)
ACCELERATED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"


#: the exporter's graph passes log each rewrite at INFO (dozens of lines per export), which
#: a CLI whose root logger is at INFO would print; their warnings and errors still show
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir")


@contextlib.contextmanager
def _exporter_info_muted() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(step, example_inputs, path: str, opset: int = 18) -> str:
    """Export the explicit-state step to ``path`` with the ``torch.export``-based ONNX
    exporter, batch dimension dynamic; checked with ``onnx.checker``."""
    import onnx

    example_inputs = exportable_batch(example_inputs)
    with torch.no_grad(), _exporter_info_muted():
        program = torch.onnx.export(
            step,
            example_inputs,
            dynamo=True,
            dynamic_shapes=batch_dynamic_shapes(example_inputs),
            input_names=step.input_names + step.state_input_names,
            output_names=step.output_names,
            opset_version=int(opset),
            verbose=False,
        )
        if program is None:  # only the TorchScript exporter returns nothing
            raise UnsupportedError("torch.onnx.export(dynamo=True) returned no ONNX program")
        program.model.doc_string = "snn_lab single time step: (inputs, *state) -> (out, *new_state); dim 0 = batch"
        program.save(path)
    onnx.checker.check_model(path)
    return path


def resolve_providers(requested: Sequence[str] | str | None, available: Sequence[str]) -> list[str]:
    """The execution providers to create the session with (see the module docstring)."""
    if requested is None or (not isinstance(requested, str) and len(requested) == 0):
        return [p for p in ACCELERATED_PROVIDERS if p in available] + [CPU_PROVIDER]
    wanted = [requested] if isinstance(requested, str) else [str(p) for p in requested]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise BackendUnavailableError(
            f"onnxruntime: execution provider(s) {', '.join(missing)} not available in this onnxruntime build; "
            f"available: {', '.join(available)} (CUDA/TensorRT need the onnxruntime-gpu package and a GPU)"
        )
    return wanted


class OrtStep(CompiledStep):
    backend = "onnxruntime"

    def __init__(self, session, step, batch_size, artifacts, input_dtype, io_binding=True, info=None):
        super().__init__(step, batch_size, artifacts, input_dtype)
        self.session = session
        self.io_binding = io_binding
        self.info = dict(info or {})
        self.input_names = step.input_names
        self.state_in = step.state_input_names
        self.state_out = step.output_names[1:]
        # the graph's batch axis is symbolic: the bound buffers have this step's batch size
        out_shape = [self.batch_size, *session.get_outputs()[0].shape[1:]]
        self._out = np.zeros(out_shape, dtype=np.float32)
        zeros = [t.numpy() for t in self.init_state()]
        self._bufs = ([np.zeros_like(z) for z in zeros], [np.zeros_like(z) for z in zeros])
        self._img = None
        self._bindings = [self._make_binding(0, 1), self._make_binding(1, 0)]
        self._phase = 0

    # -- functional form ------------------------------------------------------------------
    def __call__(self, *args):
        names = self.input_names + self.state_in
        feeds = {n: _np(a) for n, a in zip(names, args)}
        outs = self.session.run(None, feeds)
        return tuple(torch.from_numpy(o) for o in outs)

    # -- io-bound session ---------------------------------------------------------------
    def _make_binding(self, src: int, dst: int):
        b = self.session.io_binding()
        for name, arr in zip(self.state_in, self._bufs[src]):
            b.bind_input(name, "cpu", 0, np.float32, arr.shape, arr.ctypes.data)
        for name, arr in zip(self.state_out, self._bufs[dst]):
            b.bind_output(name, "cpu", 0, np.float32, arr.shape, arr.ctypes.data)
        b.bind_output(self.step_module.output_names[0], "cpu", 0, np.float32, self._out.shape, self._out.ctypes.data)
        return b

    def reset(self, images=None, keys=None) -> None:
        if not self.io_binding:
            return super().reset(images, keys)
        for arr in self._bufs[0]:
            arr.fill(0.0)
        self._phase = 0
        if self.encode == "graph":
            self._img = np.ascontiguousarray(_np(images), dtype=np.float32)
            for b in self._bindings:
                b.bind_input("images", "cpu", 0, np.float32, self._img.shape, self._img.ctypes.data)

    def step(self, t, x=None) -> np.ndarray:
        if not self.io_binding:
            return super().step(t, x)
        arr = _np(x)
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        b = self._bindings[self._phase]
        b.bind_input(self.input_names[-1], "cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
        self.session.run_with_iobinding(b)
        self._keep = arr  # the bound memory must outlive the run
        self._phase ^= 1
        return self._out

    def rebatch(self, batch_size: int) -> OrtStep:
        return OrtStep(
            self.session, self.step_module, batch_size, self.artifacts, self.input_dtype, self.io_binding, self.info
        )

    def close(self) -> None:
        self._bindings = []
        self.session = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info}


def _np(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backend):
    description = "ONNX (torch.export-based exporter, dynamic batch) + ONNX Runtime session, state bound in place"
    requires = ("onnx", "onnxscript", "onnxruntime")
    install_hint = "pip install onnx onnxscript onnxruntime (or: pip install -e '.[deploy]')"
    supports_recurrent = True
    default_options: ClassVar[dict[str, Any]] = {
        "threads": 2,
        "opset": 18,
        "optimization": "all",
        "io_binding": True,
        "spinning": True,
        "input_dtype": "auto",
        "save_optimized": False,
        "providers": None,
    }

    def session_options(self, opts):
        import onnxruntime as ort

        if opts["optimization"] not in _LEVELS:
            raise UnsupportedError(f"optimization={opts['optimization']!r} is unknown; accepted: {', '.join(_LEVELS)}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(opts["threads"] or 0)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opts["optimization"]]
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts["spinning"] else "0")
        return so

    def compile(self, step, example_inputs, out_dir, **options):
        import onnxruntime as ort

        opts = self.options(options)
        providers = resolve_providers(opts["providers"], ort.get_available_providers())
        so = self.session_options(opts)
        opts["input_dtype"] = resolve_input_dtype(step.model, opts["input_dtype"])
        batch = example_inputs[0].shape[0]
        example_inputs = with_input_dtype(step, example_inputs, opts["input_dtype"])
        os.makedirs(out_dir, exist_ok=True)
        path = export_onnx(step, example_inputs, os.path.join(out_dir, "step.onnx"), opts["opset"])
        artifacts = {"onnx": path}
        if opts["save_optimized"]:
            so.optimized_model_filepath = artifacts["onnx_optimized"] = os.path.join(out_dir, "step.ort.onnx")
        session = ort.InferenceSession(path, so, providers=providers)
        info = {
            "exporter": "torch.onnx.export(dynamo=True)",
            "opset": int(opts["opset"]),
            "dynamic_batch": True,
            "providers": session.get_providers(),
            "threads": int(opts["threads"] or 0),
        }
        return OrtStep(session, step, batch, artifacts, example_inputs[0].dtype, bool(opts["io_binding"]), info)

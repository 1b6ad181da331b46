"""``torchscript``: ``torch.jit.trace`` of the explicit-state step, frozen and saved as
``step.torchscript.pt`` (loadable with ``torch.jit.load`` from C++ or Python).

TorchScript is deprecated in PyTorch 2.x: ``torch.jit.trace``/``freeze``/``load`` emit
``FutureWarning`` s, which are left to show. For a new deployment prefer ``aoti`` (the
``torch.export`` successor: a ``.pt2`` package, also loadable from C++) or ``onnxruntime``.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch

from ..registry import register_backend
from ..step import trace_torchscript
from .base import Backend, CompiledStep


class TorchScriptStep(CompiledStep):
    backend = "torchscript"

    def __init__(self, module, step, batch_size, artifacts, input_dtype):
        super().__init__(step, batch_size, artifacts, input_dtype)
        self.module = module

    def __call__(self, *args):
        with torch.no_grad():
            return self.module(*args)


@register_backend("torchscript")
class TorchScriptBackend(Backend):
    description = "torch.jit.trace + freeze of the single step (explicit state)"
    supports_recurrent = True
    default_options: ClassVar[dict[str, Any]] = {"freeze": True, "threads": None}

    def compile(self, step, example_inputs, out_dir, **options):
        opts = self.options(options)
        if opts["threads"]:
            torch.set_num_threads(int(opts["threads"]))
        traced = trace_torchscript(step, example_inputs)
        if opts["freeze"]:
            traced = torch.jit.freeze(traced.eval())
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "step.torchscript.pt")
        traced.save(path)
        loaded = torch.jit.load(path)  # run what was saved, not the in-memory object
        return TorchScriptStep(loaded, step, example_inputs[0].shape[0], {"torchscript": path}, example_inputs[0].dtype)

"""``eager``: the step module run by PyTorch as is -- the reference every backend is
compared with (same math as training's per-step path, fused LIF update)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..registry import register_backend
from .base import Backend, CompiledStep


class EagerStep(CompiledStep):
    backend = "eager"

    def __call__(self, *args):
        with torch.no_grad():
            return self.step_module(*args)


@register_backend("eager")
class EagerBackend(Backend):
    description = "PyTorch eager execution of the step module (reference)"
    supports_recurrent = True
    default_options: ClassVar[dict[str, Any]] = {"threads": None}

    def compile(self, step, example_inputs, out_dir, **options):
        opts = self.options(options)
        if opts["threads"]:
            torch.set_num_threads(int(opts["threads"]))
        return EagerStep(step, example_inputs[0].shape[0], input_dtype=example_inputs[0].dtype)

"""``aoti``: ``torch.export`` + AOTInductor: the explicit-state step compiled ahead of
time into a shared library, packaged as ``step.pt2``, and run from that file.

``torch.export`` captures the step with a dynamic batch axis (dimension 0 of ``x_t`` or
``images``/``u_t`` and of every state tensor), ``torch._inductor.aoti_compile_and_package``
generates and compiles C++ for the CPU with the system C++ compiler, and
``torch._inductor.aoti_load_package`` loads the package back: the run uses the file,
not the in-memory program. One package serves every batch size (the runtime's batch-1
latency run reuses it). Floating-point contraction stays off (Inductor's default), so
the elementwise LIF update is the same float32 operation sequence as eager.

Compiling takes tens of seconds (Inductor caches kernels under ``$TORCHINDUCTOR_CACHE_DIR``,
default ``/tmp/torchinductor_<user>``; a second compile of the same graph is faster).
A ``.pt2`` loads in C++ too (``torch::inductor::AOTIModelPackageLoader``), without Python.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch

from ...errors import BackendUnavailableError
from ..registry import register_backend
from ..step import export_program
from .base import Backend, CompiledStep, resolve_input_dtype, with_input_dtype


def cxx_compiler(cxx: str | None = None) -> str:
    """The C++ compiler Inductor will use (``cxx`` if given, else Inductor's default,
    ``g++``), or :class:`BackendUnavailableError` saying what to install."""
    from torch._inductor import config
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        with config.patch({"cpp.cxx": (cxx,)} if cxx else {}):
            return get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 - Inductor raises its own InvalidCxxCompiler (and OSErrors)
        raise BackendUnavailableError(
            f"backend 'aoti' needs a C++ compiler ({cxx or 'g++'}), which cannot be run ({type(e).__name__}); "
            "install one (apt-get install g++) or name it with backend.options.cxx=<compiler>"
        ) from None


class AotiStep(CompiledStep):
    backend = "aoti"

    def __init__(self, runner, step, batch_size, artifacts, input_dtype, info):
        super().__init__(step, batch_size, artifacts, input_dtype)
        self.runner = runner
        self.info = dict(info)

    def __call__(self, *args):
        with torch.no_grad():
            return tuple(self.runner(*args))

    def rebatch(self, batch_size: int) -> AotiStep:
        return AotiStep(self.runner, self.step_module, batch_size, self.artifacts, self.input_dtype, self.info)

    def close(self) -> None:
        self.runner = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.info}


@register_backend("aoti")
class AotInductorBackend(Backend):
    description = "torch.export + AOTInductor: the step compiled to a shared library in step.pt2 (CPU)"
    install_hint = "install a C++ compiler (apt-get install g++)"
    supports_recurrent = True
    default_options: ClassVar[dict[str, Any]] = {"threads": None, "input_dtype": "auto", "cxx": None}

    def check_available(self) -> None:
        cxx_compiler()

    def compile(self, step, example_inputs, out_dir, **options):
        from torch._inductor import aoti_compile_and_package, aoti_load_package, config

        opts = self.options(options)
        cxx = cxx_compiler(opts["cxx"])
        if opts["threads"]:
            torch.set_num_threads(int(opts["threads"]))
        opts["input_dtype"] = resolve_input_dtype(step.model, opts["input_dtype"])
        batch = example_inputs[0].shape[0]
        example_inputs = with_input_dtype(step, example_inputs, opts["input_dtype"])
        program = export_program(step, example_inputs, dynamic_batch=True)
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "step.pt2")
        with config.patch({"cpp.cxx": (cxx,)}):
            aoti_compile_and_package(program, package_path=path)
        runner = aoti_load_package(path)  # run what was written, not the in-memory program
        info = {"compiler": cxx, "dynamic_batch": True, "threads": torch.get_num_threads()}
        return AotiStep(runner, step, batch, {"pt2": path}, example_inputs[0].dtype, info)

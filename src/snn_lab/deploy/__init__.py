"""Deploy stage: compile the single-time-step graph with a pluggable backend, run it over
T steps in a threaded runtime, and verify it against eager PyTorch.

    python -m snn_lab.deploy ckpt_path=<run>/checkpoints/best.ckpt backend=onnxruntime batch_size=28

From Python::

    from snn_lab.deploy import run_deploy
    report = run_deploy("best.ckpt", backend="sparse", batch_size=28, out_dir="deploy")

Backends: :func:`list_backends`, :func:`register_backend`, :func:`get_backend` (plug-ins
through the ``snn_lab.backends`` entry-point group). See docs/DEPLOY.md.
"""

from __future__ import annotations

from ..errors import BackendUnavailableError, DeployError, UnknownBackendError, UnsupportedError
from . import backends  # noqa: F401 - registers the built-in backends (eager, torchscript, onnxruntime, ...)
from .api import run_deploy
from .registry import (
    ENTRY_POINT_GROUP,
    create_backend,
    get_backend,
    list_backends,
    register_backend,
    unregister_backend,
)
from .step import LoadSaveStep, StepModule, state_slots

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendUnavailableError",
    "DeployError",
    "LoadSaveStep",
    "StepModule",
    "UnknownBackendError",
    "UnsupportedError",
    "create_backend",
    "get_backend",
    "list_backends",
    "register_backend",
    "run_deploy",
    "state_slots",
    "unregister_backend",
]

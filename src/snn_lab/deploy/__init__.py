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

from .errors import (BackendUnavailableError, DeployError, ParityError, UnknownBackendError,
                     UnsupportedError)
from .registry import ENTRY_POINT_GROUP, create_backend, get_backend, list_backends, register_backend
from .step import LoadSaveStep, StepModule, state_slots


def run_deploy(network_or_ckpt, backend: str = "onnxruntime", batch_size: int = 28, out_dir="deploy",
               **options) -> dict:
    """See :func:`snn_lab.deploy.api.run_deploy`."""
    from .api import run_deploy as _run

    return _run(network_or_ckpt, backend=backend, batch_size=batch_size, out_dir=out_dir, **options)


__all__ = [
    "BackendUnavailableError", "DeployError", "ENTRY_POINT_GROUP", "LoadSaveStep", "ParityError", "StepModule",
    "UnknownBackendError", "UnsupportedError", "create_backend", "get_backend", "list_backends",
    "register_backend", "run_deploy", "state_slots",
]

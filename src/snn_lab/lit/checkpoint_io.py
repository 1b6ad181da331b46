"""Checkpoints written atomically: serialise to a temp file in the same directory, fsync,
then rename over the target. A run killed mid-save keeps its previous ``last.ckpt``, and
a save that fails (disk full, read-only directory) removes its temp file, keeps the
previous checkpoint and stops the run with one line (:class:`~snn_lab.errors.RunError`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from ..errors import RunError


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = os.fspath(path)
        directory = os.path.dirname(path) or "."
        tmp: str | None = None
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".ckpt")
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(e, OSError):
                kept = "the previous checkpoint is kept" if os.path.exists(path) else "no checkpoint was written"
                raise RunError(
                    f"checkpoint {path} cannot be written ({e.strerror or e}); {kept}; "
                    "free disk space or make the run dir writable, then resume with ckpt_path=last"
                ) from None
            raise

"""An on-disk cache of binned event frames: one ``.npy`` per sample, in a directory
named by a hash of everything the frames depend on (data set, split, binning
parameters, and the size and modification time of every source file). Other
parameters or changed sources give another directory, so a cache is never reused for
frames it does not hold. Each file is written to a temporary name and renamed, so a
killed run leaves no half-written frame; a file that does not load as expected is
rebuilt."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("snn_lab.data")

FORMAT = 1  # bump when the frames of the same parameters change meaning


def fingerprint(files: Iterable[str | os.PathLike], base: str | os.PathLike) -> str:
    """A hash of the files' paths (relative to ``base``), sizes and modification times."""
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, base)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _write_atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class FrameCache:
    """``get(i)`` / ``put(i, frames)`` for one split of one data set under ``root``."""

    def __init__(self, root: str | os.PathLike, label: str, params: Mapping[str, Any], shape: tuple[int, ...]):
        record = {"format": FORMAT, **params}
        key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{label}-{key}"
        self.params = record
        self.shape = tuple(shape)
        self.enabled = True

    def _path(self, index: int) -> Path:
        return self.dir / f"{index}.npy"

    def get(self, index: int) -> np.ndarray | None:
        path = self._path(index)
        if not self.enabled or not path.is_file():
            return None
        try:
            frames = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # rebuilt and rewritten by the caller
        if frames.shape != self.shape or frames.dtype != np.int16:
            return None
        return frames

    def put(self, index: int, frames: np.ndarray) -> None:
        if not self.enabled:
            return
        try:
            if not self.dir.is_dir():
                self.dir.mkdir(parents=True, exist_ok=True)
                text = json.dumps(self.params, indent=2, sort_keys=True) + "\n"
                _write_atomic(self.dir / "params.json", lambda f: f.write(text.encode()))
            _write_atomic(self._path(index), lambda f: np.save(f, frames, allow_pickle=False))
        except OSError as e:  # a full or read-only disk: train on, without the cache
            self.enabled = False
            log.warning("frame cache %s cannot be written (%s); frames are binned every epoch", self.dir, e.strerror)

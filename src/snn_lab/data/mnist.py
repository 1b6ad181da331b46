"""MNIST from IDX files: the copy bundled in this package, a directory, or torchvision.

The bundled files are SHA-256-verified (on their decompressed content) the first time a
process loads them, so a corrupt install fails with a clear message instead of
training on garbage.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .idx import find_idx, parse_idx, read_bytes

BUNDLED_DIR = Path(__file__).resolve().parent / "mnist"

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
SOURCES = ("bundled", "dir", "download")

_verified: set[tuple[str, float]] = set()


def _read(path: Path) -> bytes:
    found = find_idx(path)
    if found is None:
        raise DataError(
            f"MNIST file {path}(.gz) is missing; reinstall snn_lab or point data.root "
            "at a directory holding the four IDX files"
        )
    return read_bytes(found, "MNIST file", "restore it or reinstall snn_lab (pip install -e .)")


def _verify(name: str, raw: bytes, path: Path) -> None:
    key = (str(path), path.stat().st_mtime if path.exists() else 0.0)
    if key in _verified:
        return
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256[name]:
        raise DataError(
            f"MNIST file {path} is corrupt: sha256 {digest[:12]}... != expected "
            f"{SHA256[name][:12]}...; reinstall snn_lab or use data.source=download"
        )
    _verified.add(key)


def load_mnist_arrays(
    split: str, root: str | os.PathLike | None = None, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` for ``split`` in train/test.

    ``root=None`` reads the bundled copy; otherwise a directory holding the IDX files
    (plain or ``.gz``, optionally under ``MNIST/raw/`` as torchvision lays them out).
    """
    if split not in FILES:
        raise DataError(f"split={split!r} is unknown; accepted: train, test")
    base = BUNDLED_DIR if root is None else Path(root)
    if root is not None and (base / "MNIST" / "raw").is_dir():
        base = base / "MNIST" / "raw"
    img_name, lbl_name, _ = FILES[split]
    arrays = []
    for name, ndim in ((img_name, 3), (lbl_name, 1)):
        path = base / name
        raw = _read(path)
        if verify:
            _verify(name, raw, path if path.exists() else path.with_name(name + ".gz"))
        arrays.append(parse_idx(raw, f"MNIST file {name}", ndim, uint8=True))
    images, labels = arrays
    if len(images) != len(labels):
        raise DataError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def download_mnist(root: str | os.PathLike) -> Path:
    """Fetch MNIST with torchvision's downloader (needs network) into ``root``."""
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(root), train=train, download=True)
    return Path(root)

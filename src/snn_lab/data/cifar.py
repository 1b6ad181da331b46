"""CIFAR-10 from its python batches (``cifar-10-batches-py/``), read without trusting them.

The batches are pickles (Python 2, protocol 2): a dict whose ``data`` is a uint8 numpy
array ``[10000, 3072]`` (channel-first 32x32 RGB) and ``labels`` a list of ints. A plain
``pickle.load`` (what torchvision's ``CIFAR10`` does) runs whatever code a file names, so
these are read by :class:`SafeUnpickler`, which resolves only the three globals numpy
needs to rebuild an array and refuses every other with a DataError. torchvision is used
for what is safe: the download and the MD5 sums it publishes for each batch file.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, first_line
from .integrity import check_md5

CIFAR_DIR = "cifar-10-batches-py"
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
META = "batches.meta"
GET = "data.download=true (torchvision downloads it)"


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    # files written by numpy 1.x name numpy.core, by numpy 2 numpy._core: the same function
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for numpy arrays inside plain containers: dicts, lists, strings and
    numbers are opcodes; the only globals it resolves rebuild an ndarray. Anything else
    (``os.system``, ``builtins.eval``...) is refused before it is called."""

    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file, encoding="latin1")  # Python 2 str -> str, as torchvision reads them
        self.source = source
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.source} refers to {module}.{name}, which a CIFAR-10 batch never does; not loaded "
                "(it may be malicious); delete it and rerun with " + GET
            ) from None


def safe_load(path: Path) -> Any:
    """The object a CIFAR python batch holds, through :class:`SafeUnpickler`."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, f"CIFAR-10 file {path}").load()
    except DataError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(
            f"CIFAR-10 file {path} cannot be read ({first_line(e, with_type=True)}); delete it and rerun with {GET}"
        ) from None


def cifar10_dir(root: str | os.PathLike) -> Path:
    return Path(root, CIFAR_DIR)


def _md5s() -> dict[str, str]:
    from torchvision.datasets import CIFAR10

    return {name: md5 for name, md5 in [*CIFAR10.train_list, *CIFAR10.test_list]} | {
        CIFAR10.meta["filename"]: CIFAR10.meta["md5"]
    }


def _batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_load(path)
    fix = f"delete it and rerun with {GET}"
    if not isinstance(obj, dict) or "data" not in obj or "labels" not in obj:
        raise DataError(f"CIFAR-10 file {path} is not a CIFAR-10 batch (no data/labels); {fix}")
    data, labels = obj["data"], obj["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(f"CIFAR-10 file {path}: data is {shape}, not uint8 [N, 3072]; {fix}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"CIFAR-10 file {path}: labels are not integers; {fix}") from None
    if y.shape != (len(data),) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"CIFAR-10 file {path}: {len(data)} images but labels {y.shape} outside 0..9; {fix}")
    return data.reshape(-1, 3, 32, 32), y


def load_cifar10(split: str, root: str | os.PathLike, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 [N, 3, 32, 32], int64 [N])`` of ``split`` (train: ``data_batch_1..5``;
    test: ``test_batch``) from ``<root>/cifar-10-batches-py/``. ``verify``: check each
    file against torchvision's MD5 first (once per file version per process)."""
    if split not in SPLITS:
        raise DataError(f"split={split!r} is unknown; accepted: train, test")
    base = cifar10_dir(root)
    md5s = _md5s() if verify else {}
    xs, ys = [], []
    for name in [META, *SPLITS[split]]:
        path = base / name
        if not path.is_file():
            raise DataError(
                f"CIFAR-10 file {path} is missing; rerun with data.download=true (torchvision downloads it into {root})"
            )
        if verify:
            check_md5(path, md5s[name], "CIFAR-10", f"delete {base} and rerun with {GET}")
        if name == META:
            meta = safe_load(path)
            names = meta.get("label_names") if isinstance(meta, dict) else None
            if not isinstance(names, list) or len(names) != 10:
                raise DataError(f"CIFAR-10 file {path} has no 10 label_names; delete it and rerun with {GET}")
            continue
        x, y = _batch(path)
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def download_cifar10(root: str | os.PathLike) -> None:
    """Fetch and extract CIFAR-10 with torchvision's downloader (the archive's MD5 is
    checked) unless every batch file already passes its MD5 check."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    base = cifar10_dir(root)
    if all(check_integrity(str(base / name), md5) for name, md5 in _md5s().items()):
        return
    try:
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
        raise DataError(
            f"downloading CIFAR-10 from {CIFAR10.url} into {root} failed ({first_line(e)}); check the network, "
            f"or extract {CIFAR10.filename} there yourself"
        ) from None

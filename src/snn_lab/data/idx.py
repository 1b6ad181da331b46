"""IDX files (LeCun's MNIST format), plain or gzip-compressed.

A header of two zero bytes, a type code, the number of dimensions, one big-endian uint32
per dimension, then the values in C order. Every reader of an IDX data set here (the
bundled MNIST, Fashion-MNIST, a user's own files) parses through :func:`parse_idx`, which
checks the header against the body, so a truncated file fails naming the file.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

#: IDX type code -> numpy dtype (big-endian where it matters, as the format stores them)
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def find_idx(path: Path) -> Path | None:
    """``path`` or ``path.gz``, whichever exists (the plain file first)."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def read_bytes(path: Path, what: str, fix: str) -> bytes:
    """The (decompressed) content of ``path``; ``what`` names it and ``fix`` says what to
    do in the one-line error when it cannot be read."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{what} {path} cannot be read ({e}); {fix}") from None


def parse_idx(raw: bytes, name: str, ndim: int | tuple[int, ...] | None = None, uint8: bool = False) -> np.ndarray:
    """The array an IDX file holds. ``ndim``: the accepted numbers of dimensions;
    ``uint8``: refuse other value types. Raises DataError naming ``name``."""
    if len(raw) < 4:
        raise DataError(f"{name} is truncated ({len(raw)} bytes)")
    zero, code, dims = struct.unpack(">HBB", raw[:4])
    accepted = (ndim,) if isinstance(ndim, int) else ndim
    if zero != 0 or code not in DTYPES or (accepted is not None and dims not in accepted):
        dims_text = "" if accepted is None else f" with {' or '.join(map(str, accepted))} dims"
        raise DataError(f"{name} is not an IDX {'uint8 ' if uint8 else ''}file{dims_text}")
    if uint8 and code != 0x08:
        raise DataError(f"{name} is not an IDX uint8 file with {dims} dims (type code {code:#04x})")
    if len(raw) < 4 + 4 * dims:
        raise DataError(f"{name} is truncated ({len(raw)} bytes)")
    shape = struct.unpack(f">{dims}I", raw[4 : 4 + 4 * dims])
    dtype = DTYPES[code]
    count = int(np.prod(shape))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != count * dtype.itemsize:
        raise DataError(f"{name} is truncated: {body.size // dtype.itemsize} of {count} values")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * dims).reshape(shape)


def read_idx_header(path: Path, what: str, fix: str) -> tuple[int, tuple[int, ...]]:
    """``(type code, shape)`` from the header alone (a few bytes, also of a ``.gz``)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) == 4 and head[:2] == b"\0\0":
                head += f.read(4 * head[3])
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{what} {path} cannot be read ({e}); {fix}") from None
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in DTYPES or len(head) < 4 + 4 * head[3]:
        raise DataError(f"{what} {path} is not an IDX file; {fix}")
    return head[2], struct.unpack(f">{head[3]}I", head[4:])


def images_and_labels(
    images: np.ndarray, labels: np.ndarray, name: str, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [N, C, H, W], int64 [N])`` from the arrays of an image and a label file:
    3-dim images are ``[N, H, W]`` (one channel), 4-dim ones ``[N, C, H, W]``; labels
    must be integers in ``[0, num_classes)`` and as many as the images."""
    if images.ndim == 3:
        images = images[:, None]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name}: the labels are not a 1-dim integer IDX file")
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(f"{name}: label {bad} is outside [0, {num_classes}) (data.num_classes)")
    return images, labels

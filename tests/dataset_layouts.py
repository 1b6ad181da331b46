"""Small data sets written in the real on-disk layouts the readers meet after a download,
so every reader runs through the same code as with the real files (no network here).

* Fashion-MNIST: IDX ``.gz`` files plus their extracted copies in ``FashionMNIST/raw/``
  (what torchvision's downloader leaves);
* CIFAR-10: ``cifar-10-batches-py/`` with ``data_batch_1..5``, ``test_batch``,
  ``batches.meta`` as Python-2 protocol-2 pickles (opcodes written here byte by byte, as
  cPickle wrote them: ``numpy.core.multiarray._reconstruct``, byte strings);
* N-MNIST: ``NMNIST/{train,test}.zip`` and the extracted ``Train/<digit>/*.bin`` /
  ``Test/...`` 5-byte-per-event files (tonic's presence check wants the archive and at
  least 10000 ``.bin`` files per split);
* DVS Gesture: ``DVSGesture/ibmGesture{Train,Test}.tar.gz`` and the extracted
  ``ibmGesture*/userNN_<lighting>/<label>.npy`` files (``[N, 4]``: x, y, p, t in ms;
  tonic wants at least 100 per split);
* SHD: ``SHD/shd_{train,test}.h5.zip`` and the extracted HDF5 files (``spikes/times``,
  ``spikes/units``, ``labels``, ``extra/keys``, ``extra/speaker``).

Each sample of class ``c`` is made from a class-dependent pattern, so a tiny run can learn.
"""

from __future__ import annotations

import gzip
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np


# -- IDX ----------------------------------------------------------------------------------------
def idx_bytes(a: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[a.dtype]
    return struct.pack(">HBB", 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx(path: Path, a: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(a)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def image_set(n: int, shape: tuple[int, ...], classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose mean brightness and a bright square depend on the label."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % classes).astype(np.uint8)
    rng.shuffle(labels)
    x = rng.integers(0, 60, size=(n, *shape), dtype=np.uint8)
    h, w = shape[-2:]
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 4)
        x[i, ..., r * h // 4 : (r + 1) * h // 4, q * w // 4 : (q + 1) * w // 4] = 255
    return x, labels


MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx_set(base: Path, n_train: int, n_test: int, gz: bool, extracted: bool = False, shape=(28, 28)) -> None:
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = image_set(n, shape, seed=1 if split == "train" else 2)
        for name, a in zip(MNIST_NAMES[split], (x, y)):
            write_idx(base / name, a, gz=gz)
            if gz and extracted:
                write_idx(base / name, a, gz=False)


def write_fashion_mnist(root: Path, n_train: int = 300, n_test: int = 100) -> Path:
    base = root / "FashionMNIST" / "raw"
    write_idx_set(base, n_train, n_test, gz=True, extracted=True)
    return base


# -- CIFAR-10: Python 2 protocol-2 pickles ---------------------------------------------------------
def _p2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` (bytes) as cPickle writes it: SHORT_BINSTRING / BINSTRING."""
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b


def _p2_int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def _p2_ndarray(a: np.ndarray) -> bytes:
    """numpy 1.x under Python 2: _reconstruct(ndarray, (0,), 'b') then BUILD with
    (1, shape, dtype(code, 0, 1) + its state, False, raw bytes)."""
    out = b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
    out += _p2_int(0) + b"\x85" + _p2_str(b"b") + b"\x87" + b"R"  # TUPLE1, TUPLE3, REDUCE
    code, order = a.dtype.str[1:].encode(), b"|" if a.dtype.itemsize == 1 else b"<"
    dtype = b"cnumpy\ndtype\n" + _p2_str(code) + _p2_int(0) + _p2_int(1) + b"\x87" + b"R"
    dtype += b"(" + _p2_int(3) + _p2_str(order) + b"N" + b"N" + b"N" + b"J\xff\xff\xff\xff" * 2 + _p2_int(0) + b"t"
    dtype += b"b"  # BUILD the dtype's state
    shape = b"(" + b"".join(_p2_int(d) for d in a.shape) + b"t"
    state = b"(" + _p2_int(1) + shape + dtype + b"\x89" + _p2_str(a.astype(a.dtype.newbyteorder("<")).tobytes()) + b"t"
    return out + state + b"b"


def _p2_dict(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_p2_str(k) + v for k, v in items)
    return b"\x80\x02}(" + body + b"u."  # PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP


def cifar_batch_bytes(x: np.ndarray, y: np.ndarray, label: bytes) -> bytes:
    labels = b"](" + b"".join(_p2_int(int(v)) for v in y) + b"e"  # EMPTY_LIST, MARK ... APPENDS
    names = b"](" + b"".join(_p2_str(f"img_{i}.png".encode()) for i in range(len(y))) + b"e"
    return _p2_dict(
        [
            (b"batch_label", _p2_str(label)),
            (b"labels", labels),
            (b"data", _p2_ndarray(x.reshape(len(x), -1))),
            (b"filenames", names),
        ]
    )


CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar10(root: Path, per_batch: int = 60, n_test: int = 100) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        x, y = image_set(per_batch, (3, 32, 32), seed=10 + i)
        (base / f"data_batch_{i}").write_bytes(cifar_batch_bytes(x, y, f"training batch {i} of 5".encode()))
    x, y = image_set(n_test, (3, 32, 32), seed=20)
    (base / "test_batch").write_bytes(cifar_batch_bytes(x, y, b"testing batch 1 of 1"))
    names = b"](" + b"".join(_p2_str(n) for n in CIFAR_NAMES) + b"e"
    meta = [
        (b"num_cases_per_batch", b"J" + struct.pack("<i", 10000)),
        (b"label_names", names),
        (b"num_vis", b"M\x00\x0c"),
    ]
    (base / "batches.meta").write_bytes(_p2_dict(meta))
    return base


# -- events --------------------------------------------------------------------------------------
def _events(label: int, n: int, size: int, rng: np.random.Generator, duration_us: int = 300_000):
    """Events around a class-dependent spot of a ``size x size`` sensor, times sorted."""
    cx, cy = (label % 4 + 1) * size // 5, (label // 4 + 1) * size // 4
    x = np.clip(cx + rng.integers(-3, 4, n), 0, size - 1)
    y = np.clip(cy + rng.integers(-3, 4, n), 0, size - 1)
    p = rng.integers(0, 2, n)
    t = np.sort(rng.integers(0, duration_us, n))
    return x, y, p, t


def nmnist_bin(x, y, p, t) -> bytes:
    """N-MNIST's 40-bit events: x, y, then polarity (bit 7) and a 23-bit time in us."""
    out = np.empty((len(x), 5), dtype=np.uint8)
    out[:, 0], out[:, 1] = x, y
    out[:, 2] = (p.astype(np.uint32) << 7) | ((t >> 16) & 0x7F)
    out[:, 3], out[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    return out.tobytes()


def _empty_archive(path: Path) -> None:
    """The archive a download leaves next to the extracted files (tonic checks it is there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w"):
            pass
    else:
        with tarfile.open(path, "w:gz"):
            pass


def write_nmnist(root: Path, per_split: int = 10_000, distinct: int = 100, events: int = 40, seed: int = 0) -> Path:
    """``per_split`` samples per split, of which ``distinct`` are written and the rest are
    hard links to them (tonic's check wants 10000 files; writing them all takes seconds)."""
    base = root / "NMNIST"
    rng = np.random.default_rng(seed)
    for archive, folder in (("train.zip", "Train"), ("test.zip", "Test")):
        _empty_archive(base / archive)
        for d in range(10):
            (base / folder / str(d)).mkdir(parents=True, exist_ok=True)
        for i in range(per_split):
            label = i % 10
            path = base / folder / str(label) / f"{i:05d}.bin"
            if i < distinct:
                path.write_bytes(nmnist_bin(*_events(label, events, 34, rng)))
            else:
                path.hardlink_to(base / folder / str(label) / f"{i % distinct:05d}.bin")
    return base


def write_dvs_gesture(root: Path, users: int = 10, events: int = 200, seed: int = 0) -> Path:
    base = root / "DVSGesture"
    rng = np.random.default_rng(seed)
    for split, first_user in (("Train", 1), ("Test", 24)):
        _empty_archive(base / f"ibmGesture{split}.tar.gz")
        for u in range(first_user, first_user + users):
            d = base / f"ibmGesture{split}" / f"user{u:02d}_{'fluorescent' if u % 2 else 'led'}"
            d.mkdir(parents=True, exist_ok=True)
            for label in range(11):
                x, y, p, t = _events(label, events, 128, rng, duration_us=6_000_000)
                np.save(d / f"{label}.npy", np.stack([x, y, p, t // 1000], axis=1).astype(np.int64))
    return base


def write_shd(root: Path, n_train: int = 120, n_test: int = 60, spikes: int = 150, seed: int = 0) -> Path:
    import h5py

    base = root / "SHD"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        _empty_archive(base / f"shd_{split}.h5.zip")
        labels = (np.arange(n) % 20).astype(np.uint16)
        with h5py.File(base / f"shd_{split}.h5", "w") as f:
            times = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float32))
            units = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
            for i, c in enumerate(labels):
                units[i] = np.clip(int(c) * 35 + rng.integers(0, 35, spikes), 0, 699).astype(np.uint16)
                times[i] = np.sort(rng.uniform(0, 0.8, spikes)).astype(np.float32)
            f["labels"] = labels
            f["extra/keys"] = np.array([f"digit-{i}".encode() for i in range(20)])
            f["extra/speaker"] = rng.integers(0, 12, n).astype(np.uint16)
    return base


def write_image_folder(root: Path, per_class: int = 6, classes=("cat", "dog", "fox"), size=(20, 24)) -> Path:
    from PIL import Image

    for split, seed in (("train", 3), ("test", 4)):
        x, y = image_set(per_class * len(classes), (3, *size), classes=len(classes), seed=seed)
        for i, (img, c) in enumerate(zip(x, y)):
            d = root / split / classes[int(c)]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i:03d}.png")
    return root


def malicious_pickle(command: str = "echo pwned > pwned.txt") -> bytes:
    """A pickle that calls ``os.system(command)`` when unpickled."""
    return b"\x80\x02cos\nsystem\n" + _p2_str(command.encode()) + b"\x85R."

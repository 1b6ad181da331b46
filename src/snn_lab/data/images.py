"""Static image sets as ``(images uint8 [N, C, H, W], labels int64 [N])``: Fashion-MNIST
(torchvision's layout and checksums), a user's own IDX files, and a torchvision
``ImageFolder`` tree. CIFAR-10 has its own reader (:mod:`.cifar`).

The arrays stay uint8; scaling, normalisation and augmentation happen after the batch
reaches the model's device (``snn_lab.lit.datamodule``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, first_line
from .idx import find_idx, images_and_labels, parse_idx, read_bytes, read_idx_header
from .integrity import check_md5

log = logging.getLogger("snn_lab.data")

#: the IDX file names of MNIST-style sets (train, test): images, labels
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _split(split: str) -> None:
    if split not in IDX_NAMES:
        raise DataError(f"split={split!r} is unknown; accepted: train, test")


# -- Fashion-MNIST ----------------------------------------------------------------------------
FASHION_DIR = ("FashionMNIST", "raw")  # where torchvision's FashionMNIST puts its files


def fashion_mnist_dir(root: str | os.PathLike) -> Path:
    return Path(root, *FASHION_DIR)


def _fashion_md5() -> dict[str, str]:
    from torchvision.datasets import FashionMNIST

    return dict(FashionMNIST.resources)  # "<name>.gz" -> md5 of the archive torchvision downloads


def load_fashion_mnist(split: str, root: str | os.PathLike, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` from ``<root>/FashionMNIST/raw/`` (where torchvision's
    downloader puts it). ``verify``: read the ``.gz`` files torchvision downloaded and
    check them against the MD5 sums torchvision publishes; otherwise read the plain or
    ``.gz`` files unverified (parsed and shape-checked only)."""
    _split(split)
    base = fashion_mnist_dir(root)
    get = "data.download=true (torchvision downloads it)"
    arrays = []
    for name, ndim in zip(IDX_NAMES[split], (3, 1)):
        path = base / (name + ".gz") if verify else find_idx(base / name)
        if path is None or not path.is_file():
            missing = f"{base / name}.gz" if verify else f"{base / name}(.gz)"
            raise DataError(
                f"Fashion-MNIST file {missing} is missing; rerun with data.download=true (torchvision downloads it "
                f"into {root})"
            )
        if verify:
            check_md5(path, _fashion_md5()[path.name], "Fashion-MNIST", f"delete it and rerun with {get}")
        raw = read_bytes(path, "Fashion-MNIST file", f"delete it and rerun with {get}")
        arrays.append(parse_idx(raw, f"Fashion-MNIST file {path}", ndim, uint8=True))
    images, labels = arrays
    if images.shape[1:] != (28, 28):
        raise DataError(f"Fashion-MNIST file {base / IDX_NAMES[split][0]} holds {images.shape[1:]} images, not 28x28")
    x, y = images_and_labels(images, labels, f"Fashion-MNIST {split} ({base})", 10)
    return torch.from_numpy(x.copy()), torch.from_numpy(y)


def download_fashion_mnist(root: str | os.PathLike) -> None:
    """Fetch the Fashion-MNIST ``.gz`` files torchvision's class lists (MD5-checked by
    torchvision's downloader, which also extracts them) into ``<root>/FashionMNIST/raw``;
    files that already pass the check are kept."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    base = fashion_mnist_dir(root)
    for filename, md5 in FashionMNIST.resources:
        if check_integrity(str(base / filename), md5):
            continue
        errors = []
        for mirror in FashionMNIST.mirrors:
            try:
                download_and_extract_archive(f"{mirror}{filename}", str(base), filename=filename, md5=md5)
                break
            except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
                errors.append(first_line(e))
        else:
            raise DataError(
                f"downloading Fashion-MNIST {filename} into {base} failed ({'; '.join(errors)}); "
                "check the network, or place the four IDX .gz files there"
            )


# -- a user's own IDX files -------------------------------------------------------------------
def _idx_file(root: Path, name: str) -> Path:
    found = find_idx(root / name)
    if found is None:
        raise DataError(
            f"IDX file {root / name}(.gz) is missing; put it there or name your files with "
            "data.train_images/train_labels/test_images/test_labels"
        )
    return found


def idx_sample_shape(root: str | os.PathLike, images: str) -> tuple[int, ...]:
    """``(C, H, W)`` of the images in an IDX file, from its header alone."""
    path = _idx_file(Path(root), images)
    code, shape = read_idx_header(path, "IDX file", "check the file")
    if code != 0x08 or len(shape) not in (3, 4):
        raise DataError(f"IDX file {path} does not hold uint8 images [N, H, W] or [N, C, H, W]")
    return (1, *shape[1:]) if len(shape) == 3 else tuple(shape[1:])


def load_idx_images(
    root: str | os.PathLike, images: str, labels: str, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 IDX ``[N, H, W]`` or ``[N, C, H, W]``) and labels (any integer IDX
    ``[N]``) from a directory; parsed and shape-checked, not hash-checked (the bundled
    MNIST's hashes verify that copy alone)."""
    root = Path(root)
    arrays = []
    for name, ndim, uint8 in ((images, (3, 4), True), (labels, 1, False)):
        path = _idx_file(root, name)
        raw = read_bytes(path, "IDX file", "restore it")
        arrays.append(parse_idx(raw, f"IDX file {path}", ndim, uint8=uint8))
    x, y = images_and_labels(arrays[0], arrays[1], f"IDX files {root / images}, {root / labels}", num_classes)
    return torch.from_numpy(x.copy()), torch.from_numpy(y)


def idx_num_classes(root: str | os.PathLike, labels: str) -> int:
    """``max label + 1`` of a label file (what ``data.num_classes=null`` means)."""
    path = _idx_file(Path(root), labels)
    y = parse_idx(read_bytes(path, "IDX file", "restore it"), f"IDX file {path}", 1)
    if not len(y) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(f"IDX file {path} holds no labels in [0, ...); set data.num_classes or fix the file")
    return int(y.max()) + 1


# -- a torchvision ImageFolder tree -----------------------------------------------------------
def folder_classes(root: str | os.PathLike, split_dir: str) -> list[str]:
    """The class folders of ``<root>/<split_dir>`` (sorted, as torchvision's ImageFolder)."""
    from torchvision.datasets.folder import find_classes

    base = Path(root, split_dir)
    if not base.is_dir():
        raise DataError(
            f"image folder {base} is missing; it needs one subfolder of images per class "
            "(torchvision ImageFolder layout: <root>/train/<class>/*.png, <root>/test/<class>/*.png)"
        )
    try:
        return find_classes(str(base))[0]
    except FileNotFoundError as e:
        raise DataError(f"image folder {base}: {first_line(e)}; put the images in one subfolder per class") from None


def _folder_samples(root: str | os.PathLike, split_dir: str, classes: Sequence[str]) -> list[tuple[str, int]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    base = Path(root, split_dir)
    extra = sorted(set(folder_classes(root, split_dir)) - set(classes))
    if extra:
        raise DataError(f"image folder {base} has classes the training folder lacks: {', '.join(extra[:5])}")
    samples = make_dataset(
        str(base), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS, allow_empty=True
    )
    if not samples:
        raise DataError(f"image folder {base} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return samples


def _decode(path: str, grayscale: bool, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if grayscale else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            a = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"image {path} cannot be read ({first_line(e)}); replace or remove it") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def folder_sample_shape(
    root: str | os.PathLike, split_dir: str, grayscale: bool, size: Sequence[int] | None
) -> tuple[int, int, int]:
    """``(C, H, W)`` the folder's samples have: ``size`` when given, else the first image's."""
    channels = 1 if grayscale else 3
    if size is not None:
        return (channels, int(size[0]), int(size[1]))
    first = _folder_samples(root, split_dir, folder_classes(root, split_dir))[0][0]
    c, h, w = _decode(first, grayscale, None).shape
    return (c, h, w)


def load_image_folder(
    root: str | os.PathLike,
    split_dir: str,
    classes: Sequence[str],
    grayscale: bool = False,
    size: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``<root>/<split_dir>/<class>/`` decoded once into memory (uint8, in
    one fixed shuffled order), converted to one (``grayscale``) or three channels and
    resized to ``size`` ``[H, W]`` (bilinear) when given; without ``size`` all images must
    share one size."""
    # sorted by class, then one fixed shuffle: a subset of the first images
    # (data.eval_subset) holds every class
    sorted_samples = _folder_samples(root, split_dir, classes)
    order = torch.randperm(len(sorted_samples), generator=torch.Generator().manual_seed(0)).tolist()
    samples = [sorted_samples[i] for i in order]
    hw = (int(size[0]), int(size[1])) if size is not None else None
    first = _decode(samples[0][0], grayscale, hw)
    out = np.empty((len(samples), *first.shape), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        a = first if i == 0 else _decode(path, grayscale, hw)
        if a.shape != first.shape:
            raise DataError(
                f"image {path} is {a.shape[2]}x{a.shape[1]}, the first image {samples[0][0]} "
                f"{first.shape[2]}x{first.shape[1]}; set data.size=[H,W] to resize them all"
            )
        out[i] = a
    log.info("image folder %s: %d images of %s, %d classes", Path(root, split_dir), len(out), first.shape, len(classes))
    labels = torch.tensor([c for _, c in samples], dtype=torch.int64)
    return torch.from_numpy(out), labels

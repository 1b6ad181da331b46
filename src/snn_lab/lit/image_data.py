"""Static image sets as data modules: MNIST, Fashion-MNIST, CIFAR-10, a user's IDX files
and an ImageFolder tree.

The loaders yield uint8 images ``[B, C, H, W]`` and labels; on the model's device each
batch is scaled to float [0, 1] (uint8 / 255, as torchvision's ``ToTensor``), augmented
while training (``augment``), then normalised (``normalize``). Spike encoding happens in
the model, never in the DataLoader.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch.utils.data import Dataset, TensorDataset

from ..data import cifar, images
from ..data.mnist import SOURCES, download_mnist, load_mnist_arrays
from ..errors import ConfigError, DataError
from .split_data import SplitDataModule

log = logging.getLogger("snn_lab.data")

#: ``shift``: random translation by up to ``max_shift`` px (zero padding) -- a random crop
#: of the zero-padded image; ``flip``: random horizontal flip; ``crop_flip``: both;
#: ``affine``: random rotation (up to ``max_rotate`` degrees), scaling (by up to
#: ``max_scale``) and translation (up to ``max_shift`` px), bilinear, zero padding;
#: ``elastic``: ``affine`` plus an elastic distortion (a smooth random displacement field of
#: ``elastic_sigma`` px correlation length and ``elastic_alpha`` px scale), as in Simard et
#: al., "Best practices for convolutional neural networks applied to visual document
#: analysis" (ICDAR 2003)
AUGMENTS = ("none", "shift", "flip", "crop_flip", "affine", "elastic")


class ImageDataModule(SplitDataModule):
    """uint8 images in memory; scaling, augmentation and normalisation on the device.

    ``normalize``: subtract ``mean`` and divide by ``std`` per channel (after scaling to
    [0, 1]); with ``mean``/``std`` null they are measured on the training split (after
    the validation split is held out) at setup and logged."""

    noun = "images"

    def __init__(
        self,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 5000,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
        augment: str = "none",
        max_shift: int = 2,
        normalize: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_rotate: float = 10.0,
        max_scale: float = 0.1,
        elastic_alpha: float = 34.0,
        elastic_sigma: float = 4.0,
    ):
        super().__init__(batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed)
        if augment not in AUGMENTS:
            raise ConfigError(f"data.augment={augment!r} is invalid: accepted: {', '.join(AUGMENTS)}")
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ConfigError(f"data.max_shift={max_shift!r} is invalid: must be an integer >= 0 (pixels)")
        if isinstance(max_rotate, bool) or not isinstance(max_rotate, (int, float)) or not 0 <= max_rotate <= 180:
            raise ConfigError(f"data.max_rotate={max_rotate!r} is invalid: must be in [0, 180] (degrees)")
        if isinstance(max_scale, bool) or not isinstance(max_scale, (int, float)) or not 0 <= max_scale < 1:
            raise ConfigError(f"data.max_scale={max_scale!r} is invalid: must be in [0, 1) (0.1: 90% to 110%)")
        for key, value in (("elastic_alpha", elastic_alpha), ("elastic_sigma", elastic_sigma)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"data.{key}={value!r} is invalid: must be a number >= 0 (pixels)")
        for key, values in (("mean", mean), ("std", std)):
            if values is not None and (len(values) < 1 or (key == "std" and any(float(v) <= 0 for v in values))):
                raise ConfigError(
                    f"data.{key}={list(values)} is invalid: one value per channel{', > 0' * (key == 'std')}"
                )
        self.augment, self.max_shift, self.normalize = augment, max_shift, normalize
        self.max_rotate, self.max_scale = float(max_rotate), float(max_scale)
        self.elastic_alpha, self.elastic_sigma = float(elastic_alpha), float(elastic_sigma)
        self.mean = None if mean is None else torch.tensor([float(v) for v in mean])
        self.std = None if std is None else torch.tensor([float(v) for v in std])

    def arrays(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uint8 [N, C, H, W], int64 [N])`` of ``split`` (train or test)."""
        raise NotImplementedError

    def read_split(self, split: str) -> Dataset:
        return TensorDataset(*self.arrays(split))

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.normalize:
            self._normalization()

    def _normalization(self) -> None:
        channels = self.input_shape[0]
        if self.mean is None or self.std is None:
            train = cast(TensorDataset, self._ready(self.train_set)).tensors[0]
            mean, std = channel_stats(train)
            self.mean = mean if self.mean is None else self.mean
            self.std = std if self.std is None else self.std
            log.info(
                "%s: normalize with mean %s, std %s (measured on the %d training images)",
                self.describe(),
                [round(float(v), 4) for v in self.mean],
                [round(float(v), 4) for v in self.std],
                len(train),
            )
        for key, t in (("mean", self.mean), ("std", self.std)):
            if len(t) not in (1, channels):
                raise ConfigError(f"data.{key} has {len(t)} values; the images have {channels} channels")
        if bool((self.std <= 0).any()):
            raise DataError(f"{self.describe()}: a channel is constant over the training images; set data.std")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        # Same values as torchvision's ToTensor: uint8 / 255 in float32.
        images = images.float().div_(255)
        if self.augment != "none" and self.trainer is not None and self.trainer.training:
            if self.augment in ("shift", "crop_flip") and self.max_shift > 0:
                images = _random_shift(images, self.max_shift)
            if self.augment in ("flip", "crop_flip"):
                images = _random_flip(images)
            if self.augment in ("affine", "elastic"):
                elastic = (self.elastic_alpha, self.elastic_sigma) if self.augment == "elastic" else None
                images = _random_affine(images, self.max_rotate, self.max_scale, self.max_shift, elastic)
        if self.normalize and self.mean is not None and self.std is not None:
            shape = (1, -1) + (1,) * (images.dim() - 2)
            mean = self.mean.to(images.device).view(shape)
            std = self.std.to(images.device).view(shape)
            images = (images - mean) / std
        return images, labels


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images ``[N, C, ...]`` scaled to
    [0, 1] (float64 sums over chunks: no float copy of the whole set)."""
    C = images.shape[1]
    s = torch.zeros(C, dtype=torch.float64)
    s2 = torch.zeros(C, dtype=torch.float64)
    for part in images.split(chunk):
        x = part.transpose(0, 1).reshape(C, -1).double().div_(255)
        s += x.sum(1)
        s2 += (x * x).sum(1)
    n = images.numel() // C
    mean = s / n
    var = (s2 / n - mean * mean).clamp_min(0)
    return mean.float(), var.sqrt().float()


def _random_shift(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding)."""
    B, _, H, W = images.shape
    C = images.shape[1]
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), device=images.device)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), device=images.device)
    rows = (dy.view(B, 1) + torch.arange(H, device=images.device)).view(B, 1, H, 1).expand(B, C, H, W + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx.view(B, 1) + torch.arange(W, device=images.device)).view(B, 1, 1, W).expand(B, C, H, W)
    return out.gather(3, cols)


def _random_affine(
    images: torch.Tensor,
    max_rotate: float,
    max_scale: float,
    max_shift: int,
    elastic: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Rotate each image by up to ``max_rotate`` degrees about its centre, scale it by a
    factor in ``[1 - max_scale, 1 + max_scale]`` and translate it by up to ``max_shift``
    pixels (uniform draws per image; bilinear resampling, zeros outside). With ``elastic``
    ``(alpha, sigma)`` the sampling grid is also displaced by :func:`_elastic_field`: both
    in one resampling, so the image is interpolated once."""
    B, _, H, W = images.shape
    dev = images.device

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(B, device=dev) * 2 - 1) * bound

    angle = uniform(max_rotate) * (math.pi / 180)
    # The grid maps output to input coordinates: the inverse of the transform drawn.
    inv_scale = 1 / (1 + uniform(max_scale))
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    # affine_grid's coordinates run over [-1, 1]: one pixel is 2 / size.
    tx, ty = uniform(max_shift) * (2 / W), uniform(max_shift) * (2 / H)
    theta = torch.stack([torch.stack([cos, -sin * H / W, tx], 1), torch.stack([sin * W / H, cos, ty], 1)], 1).to(
        images.dtype
    )
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    if elastic is not None and elastic[0] > 0:
        field = _elastic_field(B, H, W, *elastic, device=dev, dtype=grid.dtype)  # [B, 2, H, W] px
        scale = torch.tensor([2 / W, 2 / H], device=dev, dtype=grid.dtype)
        grid = grid + field.permute(0, 2, 3, 1) * scale
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _elastic_field(
    B: int, H: int, W: int, alpha: float, sigma: float, *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Random displacements ``[B, 2, H, W]`` in pixels (x then y): uniform noise in
    [-1, 1] per pixel, smoothed by a normalised Gaussian of standard deviation ``sigma``
    pixels (separable, reflected at the border), times ``alpha``. ``sigma`` 0: unsmoothed."""
    noise = torch.rand(B, 2, H, W, device=device, dtype=dtype) * 2 - 1
    if sigma > 0:
        # Smoothing along a side is one small matrix (the Gaussian with the border
        # reflections folded in): two batched matmuls, ~10x faster than 1-channel convs.
        rows, cols = _gaussian_matrix(H, sigma), _gaussian_matrix(W, sigma)
        noise = rows.to(device=device, dtype=dtype) @ noise @ cols.to(device=device, dtype=dtype).T
    return noise * alpha


@functools.lru_cache(maxsize=8)
def _gaussian_matrix(n: int, sigma: float) -> torch.Tensor:
    """``[n, n]`` float64, built once per side and sigma: row i holds the normalised
    Gaussian taps (radius ``ceil(3 sigma)``) that output i takes from the inputs, indices
    past either end reflected (``reflect`` padding: -1 -> 1, n -> n - 2)."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps /= taps.sum()
    m = torch.zeros(n, n, dtype=torch.float64)
    if n == 1:
        m[0, 0] = 1.0
        return m
    period = 2 * (n - 1)
    for i in range(n):
        for k, w in zip(range(-radius, radius + 1), taps.tolist(), strict=True):
            j = (i + k) % period  # reflection is periodic with period 2(n - 1)
            m[i, period - j if j >= n else j] += w
    return m


def _random_flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)


# -- the data sets ------------------------------------------------------------------------------
class MNISTDataModule(ImageDataModule):
    """MNIST: the copy bundled in the package (SHA-256-verified), a directory of IDX files
    (``source=dir``), or torchvision's download (``source=download``)."""

    name = "mnist"

    def __init__(
        self,
        source: str = "bundled",
        root: str | None = None,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 5000,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        augment: str = "none",
        split_seed: int = 0,
        max_shift: int = 2,
        normalize: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_rotate: float = 10.0,
        max_scale: float = 0.1,
        elastic_alpha: float = 34.0,
        elastic_sigma: float = 4.0,
    ):
        super().__init__(
            batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed,
            augment, max_shift, normalize, mean, std, max_rotate, max_scale, elastic_alpha, elastic_sigma,
        )  # fmt: skip
        if source not in SOURCES:
            raise DataError(f"data.source={source!r} is unknown; accepted: {', '.join(SOURCES)}")
        if source in ("dir", "download") and not root:
            raise DataError(f"data.source={source} needs data.root=<directory>")
        self.source, self.root = source, root

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, 28, 28)

    @property
    def num_classes(self) -> int:
        return 10

    def prepare_data(self) -> None:
        if self.source == "download":
            assert self.root is not None  # __init__ requires data.root for source=download
            download_mnist(self.root)

    def arrays(self, split: str):
        root = None if self.source == "bundled" else self.root
        images, labels = load_mnist_arrays(split, root)
        return images.unsqueeze(1), labels


class FashionMNISTDataModule(ImageDataModule):
    """Fashion-MNIST (Zalando; 10 classes of 28x28 grey clothing images) from
    ``<root>/FashionMNIST/raw/``, torchvision's layout; ``download=true`` fetches it there
    with torchvision, ``verify`` checks the files against torchvision's MD5 sums."""

    name = "fashion_mnist"

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        verify: bool = True,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 5000,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
        augment: str = "none",
        max_shift: int = 2,
        normalize: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_rotate: float = 10.0,
        max_scale: float = 0.1,
        elastic_alpha: float = 34.0,
        elastic_sigma: float = 4.0,
    ):
        super().__init__(
            batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed,
            augment, max_shift, normalize, mean, std, max_rotate, max_scale, elastic_alpha, elastic_sigma,
        )  # fmt: skip
        self.root, self.download, self.verify = root, download, verify

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, 28, 28)

    @property
    def num_classes(self) -> int:
        return 10

    def prepare_data(self) -> None:
        if self.download:
            images.download_fashion_mnist(self.root)

    def arrays(self, split: str):
        return images.load_fashion_mnist(split, self.root, self.verify)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (10 classes of 32x32 RGB images) from ``<root>/cifar-10-batches-py/``,
    read by a restricted unpickler (:mod:`snn_lab.data.cifar`); ``download=true`` fetches
    it with torchvision, ``verify`` checks each batch file against torchvision's MD5."""

    name = "cifar10"

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        verify: bool = True,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 5000,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
        augment: str = "crop_flip",
        max_shift: int = 4,
        normalize: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_rotate: float = 10.0,
        max_scale: float = 0.1,
        elastic_alpha: float = 34.0,
        elastic_sigma: float = 4.0,
    ):
        super().__init__(
            batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed,
            augment, max_shift, normalize, mean, std, max_rotate, max_scale, elastic_alpha, elastic_sigma,
        )  # fmt: skip
        self.root, self.download, self.verify = root, download, verify

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, 32, 32)

    @property
    def num_classes(self) -> int:
        return 10

    def prepare_data(self) -> None:
        if self.download:
            cifar.download_cifar10(self.root)

    def arrays(self, split: str):
        return cifar.load_cifar10(split, self.root, self.verify)


class IDXDataModule(ImageDataModule):
    """A user's own IDX files in ``root`` (plain or ``.gz``): uint8 images ``[N, H, W]``
    or ``[N, C, H, W]`` and integer labels, MNIST's file names unless given. Parsed and
    shape-checked, not hash-checked."""

    name = "idx"

    def __init__(
        self,
        root: str = "data",
        train_images: str = images.IDX_NAMES["train"][0],
        train_labels: str = images.IDX_NAMES["train"][1],
        test_images: str = images.IDX_NAMES["test"][0],
        test_labels: str = images.IDX_NAMES["test"][1],
        num_classes: int | None = None,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 0,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
        augment: str = "none",
        max_shift: int = 2,
        normalize: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_rotate: float = 10.0,
        max_scale: float = 0.1,
        elastic_alpha: float = 34.0,
        elastic_sigma: float = 4.0,
    ):
        super().__init__(
            batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed,
            augment, max_shift, normalize, mean, std, max_rotate, max_scale, elastic_alpha, elastic_sigma,
        )  # fmt: skip
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"data.num_classes={num_classes!r} is invalid: must be null (max label + 1) or >= 2")
        self.root = root
        self.files = {"train": (train_images, train_labels), "test": (test_images, test_labels)}
        self._classes = num_classes
        self._shape: tuple[int, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._shape = images.idx_sample_shape(self.root, self.files["train"][0])
        return self._shape

    @property
    def num_classes(self) -> int:
        if self._classes is None:
            self._classes = images.idx_num_classes(self.root, self.files["train"][1])
        return self._classes

    def arrays(self, split: str):
        x, y = images.load_idx_images(self.root, *self.files[split], num_classes=self.num_classes)
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"IDX file {self.files[split][0]} in {self.root} holds {list(x.shape[1:])} images, "
                f"the training file {list(self.input_shape)}"
            )
        return x, y


class ImageFolderDataModule(ImageDataModule):
    """Images in torchvision's ImageFolder layout, ``<root>/<train_dir>/<class>/*.png`` and
    ``<root>/<test_dir>/<class>/*``, decoded once into memory at setup: one channel
    (``grayscale``) or RGB, resized to ``size`` ``[H, W]`` when given."""

    name = "image_folder"

    def __init__(
        self,
        root: str = "data",
        train_dir: str = "train",
        test_dir: str = "test",
        grayscale: bool = False,
        size: Sequence[int] | None = None,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 0,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
        augment: str = "none",
        max_shift: int = 2,
        normalize: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        max_rotate: float = 10.0,
        max_scale: float = 0.1,
        elastic_alpha: float = 34.0,
        elastic_sigma: float = 4.0,
    ):
        super().__init__(
            batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed,
            augment, max_shift, normalize, mean, std, max_rotate, max_scale, elastic_alpha, elastic_sigma,
        )  # fmt: skip
        if size is not None and (len(size) != 2 or any(int(s) < 1 for s in size)):
            raise ConfigError(f"data.size={list(size)} is invalid: [H, W] with H, W >= 1, or null (keep the size)")
        self.root, self.dirs, self.grayscale = root, {"train": train_dir, "test": test_dir}, grayscale
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self._classes: list[str] | None = None
        self._shape: tuple[int, ...] | None = None

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self._classes = images.folder_classes(self.root, self.dirs["train"])
        return self._classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._shape = images.folder_sample_shape(self.root, self.dirs["train"], self.grayscale, self.size)
        return self._shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def arrays(self, split: str):
        x, y = images.load_image_folder(self.root, self.dirs[split], self.classes, self.grayscale, self.size)
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"the images of {self.root}/{self.dirs[split]} are {list(x.shape[1:])}, those of the training "
                f"folder {list(self.input_shape)}; set data.size=[H,W] to resize them all"
            )
        return x, y


IMAGE_DATAMODULES: dict[str, Any] = {
    m.name: m
    for m in (MNISTDataModule, FashionMNISTDataModule, CIFAR10DataModule, IDXDataModule, ImageFolderDataModule)
}

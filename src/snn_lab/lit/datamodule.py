"""MNIST as a LightningDataModule.

The loaders yield static images (uint8 ``[B, 1, 28, 28]``, scaled to float [0, 1]
after the transfer to the model's device) and labels; spike encoding happens in the
model, per run on its device, never in the DataLoader.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from ..data.mnist import SOURCES, download_mnist, load_mnist_arrays
from ..errors import DataError
from ..registry import Registry


class MNISTDataModule(pl.LightningDataModule):
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
    ):
        super().__init__()
        if source not in SOURCES:
            raise DataError(f"data.source={source!r} is unknown; accepted: {', '.join(SOURCES)}")
        if source in ("dir", "download") and not root:
            raise DataError(f"data.source={source} needs data.root=<directory>")
        self.source, self.root = source, root
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_split, self.split_seed = val_split, split_seed
        self.train_subset, self.eval_subset = train_subset, eval_subset
        self.num_workers, self.augment = num_workers, augment
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def prepare_data(self) -> None:
        if self.source == "download":
            assert self.root is not None  # __init__ requires data.root for source=download
            download_mnist(self.root)

    def _arrays(self, split: str):
        root = None if self.source == "bundled" else self.root
        images, labels = load_mnist_arrays(split, root)
        return images.unsqueeze(1), labels

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        x, y = self._arrays("train")
        xt, yt = self._arrays("test")
        if self.val_split > 0:
            if self.val_split >= len(x):
                raise DataError(f"data.val_split={self.val_split} leaves no training images (of {len(x)})")
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
            val_idx, train_idx = perm[: self.val_split], perm[self.val_split :].sort().values
            self.val_set = TensorDataset(x[val_idx.sort().values], y[val_idx.sort().values])
            x, y = x[train_idx], y[train_idx]
        if self.train_subset:
            x, y = x[: self.train_subset], y[: self.train_subset]
        if self.eval_subset:
            xt, yt = xt[: self.eval_subset], yt[: self.eval_subset]
            if self.val_set is not None:
                self.val_set = TensorDataset(*(t[: self.eval_subset] for t in self.val_set.tensors))
        self.train_set = TensorDataset(x, y)
        self.test_set = TensorDataset(xt, yt)
        if self.val_set is None:  # val_split=0: validate on the test set, as the tutorial does
            self.val_set = self.test_set

    @staticmethod
    def _ready(ds: TensorDataset | None) -> TensorDataset:
        if ds is None:
            raise RuntimeError("MNISTDataModule: setup() has not run")
        return ds

    def _loader(self, ds: Dataset, batch_size: int, sampler: Sampler[int] | None = None) -> DataLoader:
        # Its own generator: iterating a loader must not consume the global RNG, so a
        # resumed run's random streams line up with an uninterrupted one.
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator(),
        )

    def train_dataloader(self) -> DataLoader:
        train_set = self._ready(self.train_set)
        sampler = ResumableShuffleSampler(
            len(train_set), self.batch_size, seed=self.split_seed + 1, trainer=self.trainer
        )
        return self._loader(train_set, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._ready(self.val_set), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._ready(self.test_set), self.eval_batch_size)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        # Same values as torchvision's ToTensor: uint8 / 255 in float32.
        images = images.float().div_(255)
        if self.augment == "shift" and self.trainer is not None and self.trainer.training:
            images = _random_shift(images, 2)
        return images, labels


class ResumableShuffleSampler(Sampler[int]):
    """Shuffles with a permutation that depends only on ``(seed, epoch)``, and on the
    first pass after a mid-epoch resume skips the batches the checkpoint already
    trained on, so a killed-and-resumed run sees exactly the data of an uninterrupted
    one. (Lightning restores the loop counters but restarts a plain loader's epoch.)"""

    def __init__(self, n: int, batch_size: int, seed: int = 0, trainer=None):
        self.n, self.batch_size, self.seed, self.trainer = n, batch_size, seed, trainer
        self.epoch = 0
        self._first = True

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def _resume_offset(self) -> int:
        t = self.trainer
        if t is None or getattr(t, "global_step", 0) == 0:
            return 0
        per_epoch = math.ceil(self.n / self.batch_size) // max(1, t.accumulate_grad_batches)
        done = t.global_step - t.current_epoch * per_epoch
        return done * self.batch_size * t.accumulate_grad_batches if 0 < done < per_epoch else 0

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        skip = self._resume_offset() if self._first else 0
        self._first = False
        return iter(order[skip:].tolist())


def _random_shift(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding)."""
    B, _, H, W = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), device=images.device)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), device=images.device)
    rows = (dy.view(B, 1) + torch.arange(H, device=images.device)).view(B, 1, H, 1).expand(B, 1, H, W + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx.view(B, 1) + torch.arange(W, device=images.device)).view(B, 1, 1, W).expand(B, 1, H, W)
    return out.gather(3, cols)


#: built-in data modules by ``data.name``; ``DATAMODULES.register("mine", MyDataModule)``
#: adds one, or a config section picks any LightningDataModule by ``_target_``
DATAMODULES: Registry[type[pl.LightningDataModule]] = Registry("data", {"mnist": MNISTDataModule})

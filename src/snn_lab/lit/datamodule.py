"""MNIST as a LightningDataModule.

The loaders yield static images (uint8 ``[B, 1, 28, 28]``, scaled to float [0, 1]
after the transfer to the model's device) and labels; spike encoding happens in the
model, per run on its device, never in the DataLoader.
"""

from __future__ import annotations

import math
from typing import cast

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, TensorDataset

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
        t = self.trainer
        world, rank = (t.world_size, t.global_rank) if t is not None else (1, 0)
        sampler = ResumableShuffleSampler(
            len(train_set), self.batch_size, seed=self.split_seed + 1, trainer=t, num_replicas=world, rank=rank
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


def steps_into_epoch(trainer, batches_per_epoch: float) -> int:
    """How many optimizer steps of the current epoch a run resumed from a mid-epoch
    checkpoint had already taken (``0`` at an epoch boundary, in a fresh run, and without
    a trainer). Derived from the restored loop counters alone (``global_step``,
    ``current_epoch``), so every rank of a DDP run computes the same value."""
    if trainer is None or getattr(trainer, "global_step", 0) == 0:
        return 0
    batches = getattr(trainer, "num_training_batches", math.inf)
    batches_per_epoch = min(batches_per_epoch, batches)  # limit_train_batches
    if not 0 < batches_per_epoch < math.inf:
        return 0
    # Lightning steps on the last batch of an epoch even when it does not fill an accumulation
    per_epoch = math.ceil(int(batches_per_epoch) / max(1, trainer.accumulate_grad_batches))
    done = trainer.global_step - trainer.current_epoch * per_epoch
    return done if 0 < done < per_epoch else 0


class ResumableShuffleSampler(DistributedSampler):
    """Shuffles with a permutation that depends only on ``(seed, epoch)``; under DDP each
    rank takes its shard of it; on the first pass after a mid-epoch resume it skips the
    batches the checkpoint already trained on. A killed-and-resumed run -- single-process
    or DDP -- sees exactly the data of an uninterrupted one. (Lightning restores the loop
    counters but restarts a plain loader's epoch.)

    Sharding is :class:`~torch.utils.data.DistributedSampler`'s: the permutation is padded
    by repeating its start to a multiple of ``num_replicas`` and rank ``r`` takes every
    ``num_replicas``-th index from ``r``. It *is* a ``DistributedSampler``, so Lightning
    neither wraps it (its ``DistributedSamplerWrapper`` would not forward ``set_epoch`` or
    the resume position) nor replaces it, and calls its ``set_epoch`` each epoch. With
    ``num_replicas=1`` the order is the plain permutation."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, trainer=None, num_replicas: int = 1, rank: int = 0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"ResumableShuffleSampler: rank {rank} of {num_replicas} replicas")
        dataset = cast(Dataset, range(n))  # DistributedSampler uses only its len()
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.n, self.batch_size, self.trainer = n, batch_size, trainer
        self._first = True

    def shard(self, epoch: int, skip_batches: int = 0) -> list[int]:
        """This rank's indices for ``epoch``, less its first ``skip_batches`` batches."""
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch)).tolist()
        if self.num_replicas > 1:
            pad = self.total_size - self.n
            order += (order * math.ceil(pad / max(1, self.n)))[:pad]
            order = order[self.rank : self.total_size : self.num_replicas]
        return order[skip_batches * self.batch_size :]

    def _resume_batches(self) -> int:
        t = self.trainer
        steps = steps_into_epoch(t, math.ceil(self.num_samples / self.batch_size))
        return steps * max(1, t.accumulate_grad_batches) if steps else 0

    def __iter__(self):
        skip = self._resume_batches() if self._first else 0
        self._first = False
        return iter(self.shard(self.epoch, skip))


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

"""What every built-in data module shares: the held-out validation split, subsets, the
resumable shuffling sampler, the loaders, and the check that the model fits the data.

A subclass says how to read a split (:meth:`SplitDataModule.read_split`: ``"train"`` or
``"test"`` -> a Dataset of ``(sample, label)``), the shape of one sample
(``input_shape``) and the number of classes (``num_classes``), and what happens to a
batch on the model's device (``on_after_batch_transfer``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset

from ..errors import ConfigError, DataError

PASSTHROUGH = "passthrough"  # the encoder that feeds a data set's frames as they are


def take(ds: Dataset, index: torch.Tensor | slice) -> Dataset:
    """The samples ``index`` of ``ds``: a TensorDataset stays one (indexed tensors)."""
    if isinstance(ds, TensorDataset):
        return TensorDataset(*(t[index] for t in ds.tensors))
    n = len(cast(Any, ds))
    idx = range(n)[index] if isinstance(index, slice) else index.tolist()
    return Subset(ds, list(idx))


class SplitDataModule(pl.LightningDataModule):
    """A train split (less ``val_split`` samples held out for validation, drawn with
    ``split_seed``), a test split, optional subsets, and the loaders."""

    #: what one sample is called in errors ("images", "samples")
    noun = "samples"
    #: True when a sample is a sequence of frames ``[T, ...]`` (encoder=passthrough)
    gives_frames = False

    def __init__(
        self,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 5000,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
    ):
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_split, self.split_seed = val_split, split_seed
        self.train_subset, self.eval_subset = train_subset, eval_subset
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def validates_on_test(self) -> bool:
        """``val_split=0``: validation runs on the test set (the reference tutorial's
        protocol). Then no checkpoint may be selected on it: a run reports the test
        accuracy of its final epoch's weights."""
        return self.val_split <= 0

    # -- what a subclass provides --------------------------------------------------------
    #: ``data.name`` of the built-in option (for errors)
    name = "data"

    @property
    def input_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def describe(self) -> str:
        """How errors name this data (``data.name=cifar10``)."""
        return f"data.name={self.name}"

    def read_split(self, split: str) -> Dataset:
        raise NotImplementedError

    # -- splits ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._check_model()
        if self.train_set is not None:
            return
        full = self.read_split("train")
        test = self.read_split("test")
        n = len(cast(Any, full))
        train, val = full, None
        if self.val_split > 0:
            if self.val_split >= n:
                raise DataError(f"data.val_split={self.val_split} leaves no training {self.noun} (of {n})")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
            val_idx, train_idx = perm[: self.val_split].sort().values, perm[self.val_split :].sort().values
            val, train = take(full, val_idx), take(full, train_idx)
        if self.train_subset:
            train = take(train, slice(None, self.train_subset))
        if self.eval_subset:
            test = take(test, slice(None, self.eval_subset))
            if val is not None:
                val = take(val, slice(None, self.eval_subset))
        self.train_set, self.test_set = train, test
        # val_split=0: validate on the test set, as the tutorial does
        self.val_set = val if val is not None else test

    def _check_model(self) -> None:
        """The network being trained or evaluated (its plain config, in the Lightning
        module's hyper-parameters) must fit these samples; ``snn-eval`` gets here
        without :func:`snn_lab.config.validate`'s trial build."""
        trainer = self.trainer
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        net = getattr(module, "hparams", {}).get("net") if module is not None else None
        if isinstance(net, Mapping):
            check_data_fits(self, net)

    @staticmethod
    def _ready(ds: Dataset | None) -> Dataset:
        if ds is None:
            raise RuntimeError("data module: setup() has not run")
        return ds

    # -- loaders --------------------------------------------------------------------------
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
            len(cast(Any, train_set)),
            self.batch_size,
            seed=self.split_seed + 1,
            trainer=t,
            num_replicas=world,
            rank=rank,
        )
        return self._loader(train_set, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._ready(self.val_set), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._ready(self.test_set), self.eval_batch_size)


def _encoder_name(net: Mapping[str, Any]) -> str | None:
    enc = net.get("encoder") or {}
    return None if enc.get("_target_") else enc.get("name")


def check_data_fits(dm: Any, net: Mapping[str, Any]) -> None:
    """A network's plain config (``model``, ``encoder``, ``time_steps``) against what a
    data module gives (``input_shape``, ``num_classes``, frames): one-line ConfigError
    naming the keys that disagree. Data modules without these attributes pass."""
    model = net.get("model") or {}
    what = dm.describe() if hasattr(dm, "describe") else f"data ({type(dm).__name__})"
    shape = getattr(dm, "input_shape", None)
    want = model.get("input_shape")
    if shape is not None and want is not None and [int(d) for d in want] != list(shape):
        fix = ",".join(map(str, shape))
        raise ConfigError(
            f"model.input_shape={list(want)} does not fit the data: {what} gives samples of {list(shape)}; "
            f"set model.input_shape=[{fix}]"
        )
    classes = getattr(dm, "num_classes", None)
    if classes is not None and model.get("num_classes") is not None and int(model["num_classes"]) != classes:
        raise ConfigError(
            f"model.num_classes={model['num_classes']} does not fit the data: {what} has {classes} classes; "
            f"set model.num_classes={classes}"
        )
    encoder = _encoder_name(net)
    frames = getattr(dm, "gives_frames", False)
    if frames and encoder is not None and encoder != PASSTHROUGH:
        raise ConfigError(
            f"encoder={encoder} encodes images, but {what} gives event frames [T, ...]; "
            f"use encoder={PASSTHROUGH} (it feeds the frames to the network as they are)"
        )
    if encoder == PASSTHROUGH and not frames:
        raise ConfigError(
            f"encoder={PASSTHROUGH} feeds event frames, but {what} gives static images; "
            "choose an image encoder (bernoulli, direct, ...) or an event data set (nmnist, dvs_gesture, shd)"
        )
    if frames and encoder == PASSTHROUGH and int(net.get("time_steps", dm.frames)) != dm.frames:
        raise ConfigError(
            f"data.frames={dm.frames} does not match time_steps={net['time_steps']}: encoder={PASSTHROUGH} feeds "
            "the data's frames as the time steps; leave data.frames at its default (${time_steps}) or make them equal"
        )


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

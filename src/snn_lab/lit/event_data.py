"""Event data sets (N-MNIST, DVS Gesture, SHD) as data modules: tonic reads them, each
sample is binned into ``frames`` frames of event counts and cached on disk
(:mod:`snn_lab.data.events`).

The loaders yield ``int16 [B, T, ...]`` counts and labels; on the model's device they
become float32, and ``encoder=passthrough`` hands them to the network as its input train
``[T, B, ...]`` (``time_steps`` must equal ``frames``, which defaults to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..data.events import EVENT_SETS, Binning, EventFrames, EventSet, import_tonic
from .split_data import SplitDataModule


class EventDataModule(SplitDataModule):
    """One of :data:`snn_lab.data.events.EVENT_SETS` under ``<root>/<tonic's folder>``;
    ``download=true`` lets tonic fetch it; frames cached under ``cache_dir`` (null:
    ``<root>/frames_cache``) unless ``cache=false``."""

    spec: EventSet
    gives_frames = True

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        bins: str = "time",
        frames: int = 20,
        time_window: float = 1000.0,
        event_count: int = 1000,
        downsample: int = 1,
        cache: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 5000,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed)
        import_tonic(self.spec.name)  # at startup, not after the first epoch's setup
        self.binning = Binning(bins, frames, time_window, event_count, downsample)
        self.root, self.download = root, download
        self.cache_dir = None if not cache else Path(cache_dir) if cache_dir else Path(root) / "frames_cache"

    @property
    def frames(self) -> int:
        return self.binning.frames

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.binning.frame_shape(self.spec)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def describe(self) -> str:
        extra = f" with data.downsample={self.binning.downsample}" if self.binning.downsample > 1 else ""
        return f"data.name={self.spec.name}{extra}"

    def prepare_data(self) -> None:
        if self.download:  # tonic downloads what its presence check misses
            for train in (True, False):
                EventFrames(self.spec, self.root, train, self.binning, None, download=True)

    def read_split(self, split: str) -> Dataset:
        return EventFrames(self.spec, self.root, split == "train", self.binning, self.cache_dir)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        frames, labels = batch
        return frames.float(), labels


class NMNISTDataModule(EventDataModule):
    """N-MNIST (Orchard et al. 2015): MNIST digits recorded by a moving event camera, 34x34, two
    polarities, 10 classes."""

    name = "nmnist"
    spec = EVENT_SETS["nmnist"]

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        bins: str = "time",
        frames: int = 20,
        time_window: float = 1000.0,
        event_count: int = 1000,
        downsample: int = 1,
        cache: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 5000,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
    ):
        super().__init__(
            root, download, bins, frames, time_window, event_count, downsample, cache, cache_dir,
            batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed,
        )  # fmt: skip


class DVSGestureDataModule(EventDataModule):
    """IBM DVS Gesture (Amir et al. 2017): 11 hand and arm gestures from a 128x128 event camera,
    two polarities; ``downsample=4`` (32x32) by default."""

    name = "dvs_gesture"
    spec = EVENT_SETS["dvs_gesture"]

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        bins: str = "time",
        frames: int = 20,
        time_window: float = 1000.0,
        event_count: int = 1000,
        downsample: int = 4,
        cache: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 100,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
    ):
        super().__init__(
            root, download, bins, frames, time_window, event_count, downsample, cache, cache_dir,
            batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed,
        )  # fmt: skip


class SHDDataModule(EventDataModule):
    """Spiking Heidelberg Digits (Cramer et al. 2020): spoken digits 0-9 in English and German
    (20 classes) as spikes of 700 cochlea-model channels; a frame is ``[channels]``."""

    name = "shd"
    spec = EVENT_SETS["shd"]

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        bins: str = "time",
        frames: int = 20,
        time_window: float = 1000.0,
        event_count: int = 1000,
        downsample: int = 1,
        cache: bool = True,
        cache_dir: str | None = None,
        batch_size: int = 200,
        eval_batch_size: int = 1000,
        val_split: int = 800,
        train_subset: int | None = None,
        eval_subset: int | None = None,
        num_workers: int = 0,
        split_seed: int = 0,
    ):
        super().__init__(
            root, download, bins, frames, time_window, event_count, downsample, cache, cache_dir,
            batch_size, eval_batch_size, val_split, train_subset, eval_subset, num_workers, split_seed,
        )  # fmt: skip


EVENT_DATAMODULES: dict[str, Any] = {m.name: m for m in (NMNISTDataModule, DVSGestureDataModule, SHDDataModule)}

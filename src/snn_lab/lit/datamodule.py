"""The built-in data modules by ``data.name`` (docs/DATASETS.md).

Static images (:mod:`.image_data`): ``mnist``, ``fashion_mnist``, ``cifar10``, ``idx``,
``image_folder`` -- uint8 ``[B, C, H, W]`` on the loader side, scaled (and augmented,
normalised) on the model's device. Events (:mod:`.event_data`, through tonic):
``nmnist``, ``dvs_gesture``, ``shd`` -- frames of event counts ``[B, T, ...]`` for
``encoder=passthrough``. All share :class:`~.split_data.SplitDataModule`: the
validation split, subsets and the resumable shuffling sampler. Spike encoding happens
in the model, never in the DataLoader.
"""

from __future__ import annotations

import pytorch_lightning as pl

from ..registry import Registry
from .event_data import (
    EVENT_DATAMODULES,
    DVSGestureDataModule,
    EventDataModule,
    NMNISTDataModule,
    SHDDataModule,
)
from .image_data import (
    AUGMENTS,
    IMAGE_DATAMODULES,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    IDXDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from .split_data import ResumableShuffleSampler, SplitDataModule, check_data_fits, steps_into_epoch

#: built-in data modules by ``data.name``; ``DATAMODULES.register("mine", MyDataModule)``
#: adds one, or a config section picks any LightningDataModule by ``_target_``
DATAMODULES: Registry[type[pl.LightningDataModule]] = Registry("data", {**IMAGE_DATAMODULES, **EVENT_DATAMODULES})
#: the names of the built-in options (their keys are checked by ``snn_lab.config.validate``)
BUILTIN_DATA = (*IMAGE_DATAMODULES, *EVENT_DATAMODULES)

__all__ = [
    "AUGMENTS",
    "BUILTIN_DATA",
    "DATAMODULES",
    "CIFAR10DataModule",
    "DVSGestureDataModule",
    "EventDataModule",
    "FashionMNISTDataModule",
    "IDXDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "NMNISTDataModule",
    "ResumableShuffleSampler",
    "SHDDataModule",
    "SplitDataModule",
    "check_data_fits",
    "steps_into_epoch",
]

"""Event-camera and spiking-audio data sets through tonic (N-MNIST, DVS Gesture, SHD),
binned into a fixed number of frames per sample and cached on disk.

tonic (``pip install 'snn_lab[events]'``) lists, downloads and reads the recordings in
their published layouts; its ``ToFrame`` bins each recording's events into frames of
per-pixel (per-channel) event counts. Every sample becomes ``int16 [T, *frame_shape]``
with ``T = frames`` exactly: ``bins=time`` slices each recording into ``frames`` equal
time bins, ``bins=events`` into ``frames`` bins of equal event counts; ``bins=window``
(``time_window`` microseconds per frame) and ``bins=count`` (``event_count`` events per
frame) give as many frames as the recording fills, and the first ``frames`` of them are
kept (fewer are padded with empty frames). tonic's slicing may leave out the last events
of a recording (those at its very last timestamp, or a remainder of ``bins=events``).
``downsample=k`` divides the event coordinates by ``k`` (integer division) before
binning: ``34x34 -> 17x17`` for ``k=2``; SHD's 700 channels -> ``ceil(700 / k)``.

tonic is imported only when one of these data sets is used.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError, first_line
from .frame_cache import FrameCache, fingerprint

log = logging.getLogger("snn_lab.data")

BINS = ("time", "events", "window", "count")
GET = "data.download=true lets tonic download it"
REDOWNLOAD = "delete it and rerun with data.download=true (tonic downloads it again)"


@dataclass(frozen=True)
class EventSet:
    name: str  # data.name
    title: str
    tonic_class: str  # the class in tonic.datasets; also the folder it keeps the files in
    sensor_size: tuple[int, int, int]  # tonic's (W, H, P)
    num_classes: int
    files: str  # what tonic looks for, for the error message


EVENT_SETS = {
    "nmnist": EventSet(
        "nmnist",
        "N-MNIST",
        "NMNIST",
        (34, 34, 2),
        10,
        "train.zip, test.zip and the extracted Train/ and Test/ folders of .bin files",
    ),
    "dvs_gesture": EventSet(
        "dvs_gesture",
        "DVS Gesture",
        "DVSGesture",
        (128, 128, 2),
        11,
        "ibmGestureTrain.tar.gz, ibmGestureTest.tar.gz and the extracted ibmGestureTrain/ and ibmGestureTest/ "
        "folders of .npy files",
    ),
    "shd": EventSet(
        "shd", "SHD", "SHD", (700, 1, 1), 20, "shd_train.h5.zip, shd_test.h5.zip and the extracted .h5 files"
    ),
}


def import_tonic(name: str) -> Any:
    """tonic, or a one-line error naming the extra that installs it."""
    try:
        import tonic
        import tonic.transforms
    except ImportError as e:
        raise ConfigError(
            f"data={name} reads its events with tonic, which cannot be imported ({first_line(e)}); "
            "pip install 'snn_lab[events]' (in a checkout: pip install -e '.[events]')"
        ) from None
    return tonic


@dataclass(frozen=True)
class Binning:
    """How a recording's events become ``frames`` frames (see the module docstring)."""

    bins: str = "time"
    frames: int = 20
    time_window: float = 1000.0  # microseconds per frame (bins=window)
    event_count: int = 1000  # events per frame (bins=count)
    downsample: int = 1

    def __post_init__(self) -> None:
        if self.bins not in BINS:
            raise ConfigError(f"data.bins={self.bins!r} is invalid: accepted: {', '.join(BINS)}")
        for key, low in (("frames", 1), ("event_count", 1), ("downsample", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"data.{key}={value!r} is invalid: must be an integer >= {low}")
        if not (
            isinstance(self.time_window, (int, float)) and math.isfinite(self.time_window) and self.time_window > 0
        ):
            raise ConfigError(f"data.time_window={self.time_window!r} is invalid: must be > 0 (microseconds)")

    def params(self) -> dict[str, Any]:
        """The parameters the frames depend on (what keys the cache)."""
        out: dict[str, Any] = {"bins": self.bins, "frames": self.frames, "downsample": self.downsample}
        if self.bins == "window":
            out["time_window"] = float(self.time_window)
        elif self.bins == "count":
            out["event_count"] = self.event_count
        return out

    def sensor(self, spec: EventSet) -> tuple[int, int, int]:
        W, H, P = spec.sensor_size
        k = self.downsample
        return (math.ceil(W / k), math.ceil(H / k) if H > 1 else 1, P)

    def frame_shape(self, spec: EventSet) -> tuple[int, ...]:
        """One frame: ``(P, H, W)`` for a camera, ``(channels,)`` for SHD."""
        W, H, P = self.sensor(spec)
        return (W,) if H == 1 and P == 1 else (P, H, W)

    def __call__(self, events: np.ndarray, spec: EventSet, where: str) -> np.ndarray:
        """``int16 [frames, *frame_shape]`` event counts of one recording."""
        names = events.dtype.names or ()
        W, H, P = spec.sensor_size
        x = events["x"]
        bad = (x < 0) | (x >= W)
        if "y" in names:
            bad |= (events["y"] < 0) | (events["y"] >= H)
        if P > 1:
            bad |= (events["p"].astype(np.int64) < 0) | (events["p"].astype(np.int64) >= P)
        if bad.any():
            raise DataError(
                f"{spec.title} sample {where} has events outside the {W}x{H}x{P} sensor; it is corrupt: {REDOWNLOAD}"
            )
        shape = (self.frames, *self.frame_shape(spec))
        if len(events) == 0:
            return np.zeros(shape, dtype=np.int16)
        ev = events.copy()
        if self.downsample > 1:
            ev["x"] //= self.downsample
            if "y" in names:
                ev["y"] //= self.downsample
        from tonic.transforms import ToFrame

        kw: dict[str, Any] = {"n_time_bins": self.frames}
        if self.bins == "events":
            kw = {"n_event_bins": self.frames}
        elif self.bins == "window":
            kw = {"time_window": float(self.time_window), "include_incomplete": True}
        elif self.bins == "count":
            kw = {"event_count": self.event_count, "include_incomplete": True}
        try:
            frames = ToFrame(sensor_size=self.sensor(spec), **kw)(ev)
        except (ValueError, IndexError, ZeroDivisionError) as e:
            raise DataError(f"{spec.title} sample {where} cannot be binned ({first_line(e)})") from None
        frames = np.asarray(frames, dtype=np.int16).reshape(len(frames), *shape[1:])[: self.frames]
        if len(frames) < self.frames:
            frames = np.concatenate([frames, np.zeros((self.frames - len(frames), *shape[1:]), np.int16)])
        return frames


def _open_tonic(spec: EventSet, root: str, train: bool, download: bool) -> Any:
    """tonic's data set class for ``spec``, whose ``download`` is refused in one line
    unless ``download`` (tonic downloads whenever its presence check fails)."""
    tonic = import_tonic(spec.name)
    base = getattr(tonic.datasets, spec.tonic_class)

    def guarded_download(self: Any) -> None:
        where = self.location_on_system
        if not download:
            raise DataError(f"{spec.title} is missing or incomplete in {where} (tonic looks for {spec.files}); {GET}")
        log.info("tonic: downloading %s into %s", spec.title, where)
        try:
            base.download(self)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
            raise DataError(
                f"downloading {spec.title} into {where} failed ({first_line(e)}); check the network "
                f"(tonic downloads from {self.url})"
            ) from None

    # the class keeps tonic's name: tonic stores the files in <root>/<class name>/
    cls = type(base.__name__, (base,), {"download": guarded_download, "__module__": __name__})
    try:
        return cls(save_to=root, train=train)
    except (DataError, ConfigError):
        raise
    except (OSError, KeyError, ValueError, IndexError, TypeError) as e:
        where = Path(root, spec.tonic_class)
        raise DataError(
            f"{spec.title} in {where} cannot be read ({first_line(e, with_type=True)}); {REDOWNLOAD}"
        ) from None


def canonical_shuffle(n: int) -> np.ndarray:
    """One fixed permutation of ``range(n)`` (the same on every machine and run)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0)).numpy()


def _sources(ds: Any) -> tuple[list[str], np.ndarray]:
    """The files a tonic data set reads and its labels, without reading any events."""
    data_filename = getattr(ds, "data_filename", None)
    if data_filename:  # SHD: one HDF5 file holds every sample
        import h5py

        path = os.path.join(ds.location_on_system, data_filename)
        with h5py.File(path, "r") as f:
            labels = np.asarray(f["labels"][()], dtype=np.int64)
        return [path], labels
    return list(ds.data), np.asarray(ds.targets, dtype=np.int64)


class EventFrames(Dataset):
    """One split of an event data set as ``(int16 frames [T, ...], label)`` samples."""

    def __init__(
        self,
        spec: EventSet,
        root: str | os.PathLike,
        train: bool,
        binning: Binning,
        cache_dir: str | os.PathLike | None = None,
        download: bool = False,
    ):
        self.spec, self.root, self.train, self.binning = spec, str(root), train, binning
        self._ds: Any = _open_tonic(spec, self.root, train, download)
        split = "train" if train else "test"
        try:
            files, self.labels = _sources(self._ds)
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise DataError(
                f"{spec.title} {split} in {self._ds.location_on_system} cannot be read "
                f"({first_line(e, with_type=True)}); {REDOWNLOAD}"
            ) from None
        # Sample i is the same on every machine: one file per sample (N-MNIST, DVS Gesture)
        # in sorted path order, whatever order the file system lists them in; then one
        # fixed shuffle, as the published files are grouped by class (a subset of the first
        # samples, data.eval_subset, would hold one class)
        self.files: list[str] | None = None
        self.order = np.arange(len(self.labels))
        if len(files) == len(self.labels):
            self.order = np.argsort(np.asarray(files), kind="stable")
        self.order = self.order[canonical_shuffle(len(self.order))]
        self.labels = self.labels[self.order]
        if len(files) == len(self.labels):
            self.files = [files[i] for i in self.order]
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= spec.num_classes):
            raise DataError(
                f"{spec.title} {split} in {self._ds.location_on_system} has labels outside 0..{spec.num_classes - 1}; "
                f"it is not {spec.title}: {REDOWNLOAD}"
            )
        self.shape = (binning.frames, *binning.frame_shape(spec))
        self.cache: FrameCache | None = None
        if cache_dir is not None:
            try:
                source = fingerprint(files, self._ds.location_on_system)
            except OSError as e:
                raise DataError(f"{spec.title} {split}: {first_line(e)}; {REDOWNLOAD}") from None
            params = {"data": spec.name, "split": split, **binning.params(), "source": source}
            self.cache = FrameCache(cache_dir, f"{spec.name}-{split}", params, self.shape)

    def __len__(self) -> int:
        return len(self.labels)

    def _where(self, index: int) -> str:
        return self.files[index] if self.files is not None else f"{index} of {self._ds.location_on_system}"

    def frames(self, index: int) -> np.ndarray:
        cached = self.cache.get(index) if self.cache is not None else None
        if cached is not None:
            return cached
        try:
            events, target = self._ds[int(self.order[index])]
        except (OSError, KeyError, ValueError, IndexError, TypeError, EOFError) as e:
            raise DataError(
                f"{self.spec.title} sample {self._where(index)} cannot be read ({first_line(e, with_type=True)}); "
                f"{REDOWNLOAD}"
            ) from None
        if int(target) != int(self.labels[index]):
            raise DataError(
                f"{self.spec.title} sample {self._where(index)}: label {target} != listed {self.labels[index]}; "
                f"{REDOWNLOAD}"
            )
        frames = self.binning(events, self.spec, self._where(index))
        if self.cache is not None:
            self.cache.put(index, frames)
        return frames

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.frames(index)), int(self.labels[index])

    def __getstate__(self) -> dict[str, Any]:
        # tonic's data set is an instance of a class made at run time: a worker process
        # started by spawn gets the listing and reopens it there (never downloading)
        state = dict(self.__dict__)
        state["_ds"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ds = _open_tonic(self.spec, self.root, self.train, download=False)

"""A dataset of one's own: 8x8 images of a bar in one of 4 orientations (horizontal,
vertical, diagonal, anti-diagonal) at a random position, with pixel noise. Written to
``<root>/bars.npz`` once (``prepare_data``), then read from there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

SIZE, CLASSES = 8, 4


def make_bars(n: int, seed: int = 0, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, SIZE, SIZE), dtype=np.float32) * noise
    labels = rng.integers(0, CLASSES, n)
    for k, (label, pos) in enumerate(zip(labels, rng.integers(0, SIZE, n))):
        img = images[k, 0]
        if label == 0:
            img[pos, :] = 1.0
        elif label == 1:
            img[:, pos] = 1.0
        elif label == 2:
            np.fill_diagonal(img, 1.0)
        else:
            np.fill_diagonal(np.fliplr(img), 1.0)
    return images, labels.astype(np.int64)


class BarsDataModule(pl.LightningDataModule):
    def __init__(
        self, root: str, n_train: int = 2000, n_val: int = 400, n_test: int = 400, batch_size: int = 64, seed: int = 0
    ):
        super().__init__()
        self.root = Path(root)
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.batch_size, self.seed = batch_size, seed
        self.sets: dict[str, TensorDataset] = {}

    @property
    def path(self) -> Path:
        return self.root / "bars.npz"

    def prepare_data(self) -> None:
        if not self.path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            x, y = make_bars(self.n_train + self.n_val + self.n_test, self.seed)
            tmp = self.path.with_suffix(".tmp.npz")
            np.savez(tmp, x=x, y=y)
            tmp.replace(self.path)

    def setup(self, stage: str | None = None) -> None:
        with np.load(self.path) as f:
            x, y = torch.from_numpy(f["x"]), torch.from_numpy(f["y"])
        cuts = (self.n_train, self.n_train + self.n_val, self.n_train + self.n_val + self.n_test)
        if len(x) < cuts[-1]:
            raise ValueError(f"{self.path} holds {len(x)} samples, fewer than the {cuts[-1]} asked for; delete it")
        self.sets = {
            "train": TensorDataset(x[: cuts[0]], y[: cuts[0]]),
            "val": TensorDataset(x[cuts[0] : cuts[1]], y[cuts[0] : cuts[1]]),
            "test": TensorDataset(x[cuts[1] : cuts[2]], y[cuts[1] : cuts[2]]),
        }

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True, generator=gen)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=self.batch_size)

"""Lightning wrappers: the DataModule for MNIST and the LightningModule for SNNs."""

from .datamodule import MNISTDataModule
from .module import SNNLitModule

__all__ = ["MNISTDataModule", "SNNLitModule"]

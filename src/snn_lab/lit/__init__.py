"""Lightning wrappers: the DataModule for MNIST and the LightningModule for SNNs."""

from .datamodule import MNISTDataModule
from .module import CheckpointError, SNNLitModule, load_network

__all__ = ["CheckpointError", "MNISTDataModule", "SNNLitModule", "load_network"]

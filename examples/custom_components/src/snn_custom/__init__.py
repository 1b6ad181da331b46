"""Parts of a user's own, trained by snn_lab from config (see the README)."""

from .callbacks import RateReport
from .data import BarsDataModule, make_bars
from .net import BarsNet
from .neuron import CubaLIF, CubaState

__all__ = ["BarsDataModule", "BarsNet", "CubaLIF", "CubaState", "RateReport", "make_bars"]

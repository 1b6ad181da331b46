"""Network models built from the neurons: the seed MLP and a convolutional SNN."""

from .base import MODES, Record, SNNModel, SpikingLayer
from .conv import SpikingConvNet
from .mlp import SEED_KEYS, SpikingMLP, load_seed_state_dict, seed_network

__all__ = ["MODES", "Record", "SNNModel", "SpikingLayer", "SpikingConvNet", "SpikingMLP", "SEED_KEYS", "load_seed_state_dict", "seed_network"]

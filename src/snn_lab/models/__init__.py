"""Network models built from the neurons: the tutorial MLP and a convolutional SNN."""

from .base import MODES, Record, SNNModel, SpikingLayer
from .conv import SpikingConvNet
from .mlp import TUTORIAL_KEYS, SpikingMLP, load_tutorial_state_dict, tutorial_network

__all__ = ["MODES", "Record", "SNNModel", "SpikingLayer", "SpikingConvNet", "SpikingMLP", "TUTORIAL_KEYS", "load_tutorial_state_dict", "tutorial_network"]

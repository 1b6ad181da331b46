"""Networks: the tutorial MLP, a convolutional SNN and a recurrent SNN, built from plain config
(:func:`build_network`) or rebuilt from a checkpoint (:func:`load_network`)."""

from .base import MODES, Record, SNNModel, SpikingLayer
from .build import MODELS, build_network
from .checkpoint import load_network, load_weights, net_diff, read_checkpoint, upgrade_net_config
from .conv import SpikingConvNet
from .mlp import TUTORIAL_KEYS, SpikingMLP, load_tutorial_state_dict, tutorial_network
from .recurrent import RecurrentSNN, RecurrentSpikingLayer, RecurrentState

__all__ = [
    "MODELS",
    "MODES",
    "TUTORIAL_KEYS",
    "Record",
    "RecurrentSNN",
    "RecurrentSpikingLayer",
    "RecurrentState",
    "SNNModel",
    "SpikingConvNet",
    "SpikingLayer",
    "SpikingMLP",
    "build_network",
    "load_network",
    "load_tutorial_state_dict",
    "load_weights",
    "net_diff",
    "read_checkpoint",
    "tutorial_network",
    "upgrade_net_config",
]

"""Networks: the tutorial MLP, a convolutional SNN and a recurrent SNN, built from plain config
(:func:`build_network`), rebuilt from a checkpoint (:func:`load_network`), or read from and
written to NIR graphs (:func:`from_nir`, :func:`to_nir`)."""

from .base import MODES, Record, SNNModel, SpikingLayer
from .build import MODELS, build_network
from .checkpoint import load_network, load_weights, net_diff, read_checkpoint, upgrade_net_config
from .conv import SpikingConvNet
from .mlp import TUTORIAL_KEYS, SpikingMLP, load_tutorial_state_dict, tutorial_network
from .nir_export import to_nir, write_nir
from .nir_import import from_nir
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
    "from_nir",
    "load_network",
    "load_tutorial_state_dict",
    "load_weights",
    "net_diff",
    "read_checkpoint",
    "to_nir",
    "tutorial_network",
    "upgrade_net_config",
    "write_nir",
]

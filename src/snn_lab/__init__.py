"""snn_lab: train, sweep, inspect and deploy spiking neural networks from one config."""

__version__ = "0.1.0"

"""Hydra configs of this package: add them with hydra.searchpath=[pkg://snn_custom.conf]."""

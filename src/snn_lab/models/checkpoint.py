"""Checkpoints -> networks, without Lightning: a training checkpoint stores the network's
plain config (``hyper_parameters.net``) next to its weights, so it rebuilds the model
alone. Files are read with ``torch.load(weights_only=True)``: nothing is unpickled."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, first_line
from .base import SNNModel
from .build import build_network

__all__ = ["load_network", "load_weights", "net_diff", "read_checkpoint", "upgrade_net_config"]


#: values older checkpoints were trained with, for keys their net config does not store
#: (the defaults of the classes changed since): model.mode was "step", conv pool "spikes"
LEGACY_MODEL_DEFAULTS = {"mode": "step"}
LEGACY_CONV_DEFAULTS = {"pool": "spikes"}


def upgrade_net_config(net: dict[str, Any]) -> dict[str, Any]:
    """The net config of a checkpoint with the keys it left to class defaults spelled out,
    so it rebuilds the network it was trained as whatever today's defaults are."""
    model = dict(net.get("model") or {})
    legacy = {**LEGACY_MODEL_DEFAULTS, **(LEGACY_CONV_DEFAULTS if model.get("name") == "conv" else {})}
    if model.get("_target_"):
        return net
    return {**net, "model": {**legacy, **model}}


def net_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The top-level keys in which two net configs differ."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with one-line errors for every way it fails."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises anything: truncated zip, foreign pickle, not a checkpoint
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely ({first_line(e, limit=160)}); "
            "it is corrupt, truncated or not a snn_lab checkpoint"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "net" not in ckpt.get("hyper_parameters", {}):
        raise CheckpointError(
            f"checkpoint {path} is not a snn_lab training checkpoint (no state_dict / hyper_parameters.net)"
        )
    return ckpt


def load_network(path: str | os.PathLike, expect: dict | None = None) -> SNNModel:
    """Rebuild the trained network from a checkpoint (weights only, eval mode).

    ``expect``: a net config the checkpoint must match (else :class:`CheckpointError`).
    """
    ckpt = read_checkpoint(path)
    net_cfg = upgrade_net_config(ckpt["hyper_parameters"]["net"])
    if expect is not None and expect != net_cfg:
        raise CheckpointError(
            f"checkpoint {path} holds another network (differs in {', '.join(net_diff(expect, net_cfg))})"
        )
    try:
        net = build_network(net_cfg)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path}: its network cannot be rebuilt ({e})") from None
    load_weights(net, ckpt, path)
    return net.eval()


def load_weights(net: SNNModel, ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Load a read checkpoint's network weights (its ``net.*`` entries) into ``net``."""
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)} does not fit its own network config: {first_line(e)}"
        ) from None

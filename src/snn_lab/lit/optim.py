"""Optimizer and LR scheduler from their plain config sections (``_target_`` + kwargs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..errors import ConfigError
from ..registry import locate


def _kwargs(cfg: Mapping[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in drop}


def build_optimizer(cfg: Mapping[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """``cfg``: ``{_target_: torch.optim.SGD, lr: ..., ...}`` (any optimizer class)."""
    cls = locate(cfg["_target_"], "optimizer._target_")
    optimizer: torch.optim.Optimizer = cls(params, **_kwargs(cfg))
    return optimizer


def build_lr_scheduler(
    cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, max_epochs: int | None, total_steps: int
) -> dict[str, Any]:
    """Lightning's scheduler dict; fills what depends on the run (cosine ``T_max``,
    one-cycle ``total_steps`` and ``max_lr``) when the config leaves it null.
    ``max_epochs``: the Trainer's, None when only ``max_steps`` bounds the run."""
    kwargs = _kwargs(cfg, drop=("interval", "name"))
    name, interval = cfg.get("name"), cfg["interval"]
    if name == "cosine" and kwargs.get("T_max") is None:
        span = max_epochs if interval == "epoch" else total_steps
        if span is None:
            raise ConfigError("lr_schedule=cosine with interval=epoch needs trainer.max_epochs or lr_schedule.T_max")
        kwargs["T_max"] = max(1, span)
    if name == "onecycle":
        kwargs["total_steps"] = max(1, total_steps)
        if kwargs.get("max_lr") is None:
            kwargs["max_lr"] = optimizer.param_groups[0]["lr"]
    cls = locate(cfg["_target_"], "lr_schedule._target_")
    return {"scheduler": cls(optimizer, **kwargs), "interval": interval}

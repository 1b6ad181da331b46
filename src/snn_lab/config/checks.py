"""Checks of a composed config that its schema cannot express (ranges, names, whether the
network, data and deploy backend fit together); they build what they check, so they load
torch and the layers below."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import torch
from omegaconf import DictConfig

from ..data.mnist import SOURCES
from ..deploy.registry import create_backend
from ..engine.options import EngineOptions
from ..errors import ConfigError, DeployError
from ..lit.datamodule import AUGMENTS, BUILTIN_DATA, DATAMODULES, check_data_fits
from ..models import MODES, build_network
from ..models.conv import POOLS
from .build import build_datamodule, net_config, to_dict
from .trainer_args import check_trainer_args


def _require(ok: bool, key: str, value: object, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {accepted}")


def _one_of(cfg: DictConfig, key: str, options: Collection[object]) -> None:
    value: Any = cfg
    for part in key.split("."):
        value = value[part]
    _require(value in options, key, value, f"accepted: {', '.join(map(str, options))}")


def _is_builtin(section: Mapping[str, Any], names: Collection[str]) -> bool:
    """A built-in option (by ``name``), as opposed to a user's ``_target_`` class, whose
    keys are its own and checked by its constructor."""
    return not section.get("_target_") and section.get("name") in names


def validate(cfg: DictConfig) -> None:
    """Range and consistency checks that types cannot express; raises ConfigError
    naming the full key. Runs before any data is loaded."""
    _require(cfg.time_steps >= 1, "time_steps", cfg.time_steps, "must be an integer >= 1")
    if "engine" in cfg:
        try:
            EngineOptions(**to_dict(cfg.engine))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    d = cfg.data
    if not d.get("_target_") and d.get("name") not in DATAMODULES:
        raise ConfigError(
            f"data.name={d.get('name')!r} is unknown; accepted: {', '.join(DATAMODULES.names())} "
            "(or a LightningDataModule class in data._target_)"
        )
    if _is_builtin(d, BUILTIN_DATA):
        for key in ("batch_size", "eval_batch_size"):
            _require(d[key] >= 1, f"data.{key}", d[key], "must be an integer >= 1")
        _require(d.val_split >= 0, "data.val_split", d.val_split, "must be >= 0 (0: validate on test)")
        for key in ("train_subset", "eval_subset"):
            _require(d[key] is None or d[key] >= 1, f"data.{key}", d[key], "must be null or >= 1")
        _require(d.num_workers >= 0, "data.num_workers", d.num_workers, "must be >= 0")
        if d.name == "mnist":
            _one_of(cfg, "data.source", SOURCES)
        if "augment" in d:
            _one_of(cfg, "data.augment", AUGMENTS)
    if "mode" in cfg.model:
        _one_of(cfg, "model.mode", MODES)
    if _is_builtin(cfg.model, ("conv",)):
        _one_of(cfg, "model.pool", POOLS)
    n = cfg.neuron
    if "vth" in n:
        _require(n.vth > 0, "neuron.vth", n.vth, "must be > 0")
    if "decay" in n:
        _require(0 <= n.decay <= 1, "neuron.decay", n.decay, "must lie in [0, 1]")
    if cfg.surrogate.get("width") is not None:
        _require(cfg.surrogate.width > 0, "surrogate.width", cfg.surrogate.width, "must be > 0")
    o = cfg.optimizer
    if "lr" in o:
        _require(o.lr > 0, "optimizer.lr", o.lr, "must be > 0")
    if "weight_decay" in o:
        _require(o.weight_decay >= 0, "optimizer.weight_decay", o.weight_decay, "must be >= 0")
    _one_of(cfg, "lr_schedule.interval", ("epoch", "step"))
    check_trainer_args(cfg.trainer)
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None:
        _require(max_epochs >= 1 or max_epochs == -1, "trainer.max_epochs", max_epochs, "must be >= 1 (-1: no limit)")
    for name, spec in (cfg.get("logger") or {}).items():
        _require(spec is None or bool(spec.get("_target_")), f"logger.{name}", spec, "needs a _target_")
    _one_of(cfg, "callbacks.progress_bar", ("tqdm", "rich", "none"))
    dash = cfg.callbacks.get("dashboard") or {}
    for key, low in (("every_n_epochs", 1), ("sample_index", 0), ("neurons", 1), ("max_raster_neurons", 1)):
        if key in dash:
            _require(dash[key] >= low, f"callbacks.dashboard.{key}", dash[key], f"must be >= {low}")
    if cfg.callbacks.every_n_train_steps is not None:
        _require(
            cfg.callbacks.every_n_train_steps >= 1,
            "callbacks.every_n_train_steps",
            cfg.callbacks.every_n_train_steps,
            "must be null or >= 1",
        )
    if cfg.callbacks.get("ema_decay") is not None:
        _require(
            0.0 < cfg.callbacks.ema_decay < 1.0,
            "callbacks.ema_decay",
            cfg.callbacks.ema_decay,
            "must be null (no averaging) or in (0, 1), e.g. 0.999",
        )
    for name, spec in (cfg.callbacks.get("extra") or {}).items():
        _require(bool(spec and spec.get("_target_")), f"callbacks.extra.{name}", spec, "needs a _target_")
    _one_of(cfg, "target.accelerator", ("cpu", "gpu", "cuda", "mps", "auto"))
    if cfg.target.accelerator in ("gpu", "cuda"):
        _require(
            torch.cuda.is_available(), "target", cfg.target.name, "no CUDA device is available here; use target=cpu"
        )
    _require(cfg.deploy_batch_size >= 1, "deploy_batch_size", cfg.deploy_batch_size, "must be >= 1")
    if cfg.deploy:
        _check_deploy(deploy_backend_name(cfg), cfg.deploy_batch_size)
    if not cfg.train:
        _require(
            cfg.ckpt_path not in (None, "last", "auto"),
            "ckpt_path",
            cfg.ckpt_path,
            "evaluation (train=false, snn-eval) needs the path of a checkpoint",
        )
        return  # the network comes from the checkpoint
    try:
        with torch.device("meta"):  # shapes and arguments only: a huge network allocates nothing
            net = build_network(net_config(cfg))
    except ConfigError as e:
        raise ConfigError(f"network config: {e}") from None
    _check_network_fits(sum(p.numel() for p in net.parameters()))
    if _is_builtin(d, BUILTIN_DATA):  # the sample shape, classes and frames the data gives (no data is loaded)
        check_data_fits(build_datamodule(d), net_config(cfg))


def _check_network_fits(n_params: int) -> None:
    """Weights, gradients and two optimizer moments must fit this machine's memory."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: let the allocator decide
        return
    need = 4 * 4 * n_params
    if need > memory:
        raise ConfigError(
            f"model: the network has {n_params:,} parameters; training it needs about {need / 2**30:,.0f} GiB "
            f"(float32 weights, gradients and optimizer state), more than this machine's {memory / 2**30:.0f} GiB; "
            "make model.hidden (or model.channels, model.fc) smaller"
        )


def deploy_backend_name(cfg: DictConfig) -> str:
    """``deploy=auto`` deploys to the target's backend (``target=apu``: lynxi)."""
    return cfg.target.deploy_backend if cfg.deploy == "auto" else cfg.deploy


def _check_deploy(name: str, batch_size: int) -> None:
    # Before training: a typo or a missing toolchain must not surface after an hour.
    try:
        backend = create_backend(name)
        backend.check_available()
        backend.check_batch_size(batch_size)
    except (DeployError, ValueError) as e:
        raise ConfigError(f"deploy={name}: {e}") from None


__all__ = ["deploy_backend_name", "validate"]

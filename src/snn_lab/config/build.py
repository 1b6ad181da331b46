"""Training configs become objects here: the data module, loggers, callbacks and the
Trainer. The network itself is built from plain data by :func:`snn_lab.models.build_network`
(``net_config`` extracts that data), so a checkpoint's hyper-parameters alone rebuild it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import callbacks as cb
from pytorch_lightning import loggers as pl_loggers

from ..errors import ConfigError, first_line
from ..lit.callbacks import EpochCheckpoint, FiringRateLogger, RankSeed, SpikeDashboard, WeightEMA
from ..lit.checkpoint_io import AtomicCheckpointIO
from ..lit.datamodule import DATAMODULES
from ..lit.ddp import build_strategy
from ..registry import split_spec
from .instantiate import check_kwargs, instantiate

NET_KEYS = ("model", "neuron", "surrogate", "encoder", "readout", "time_steps")


def to_dict(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def to_plain_dict(node: object, key: str) -> dict[str, Any]:
    """A config section (a DictConfig, or already plain) as a resolved plain dict;
    ConfigError naming ``key`` when it is not a mapping."""
    data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(data, dict):
        raise ConfigError(f"{key} must be a mapping, not {type(data).__name__}")
    return cast(dict[str, Any], data)  # config keys are strings


def net_config(cfg: Mapping) -> dict:
    """The part of a training config that defines the network, as plain data."""
    return {k: to_dict(cfg[k]) for k in NET_KEYS}


def build_datamodule(cfg: Mapping) -> pl.LightningDataModule:
    """A built-in data module by ``name`` (``data=mnist``) or any LightningDataModule by
    ``_target_`` (its other keys are its arguments)."""
    spec = to_dict(cfg)
    if spec.get("_target_"):
        dm = instantiate(spec, "data")
    else:
        cls, label, params = split_spec(spec, DATAMODULES, "data")
        check_kwargs(cls, params, "data", label)
        try:
            dm = cls(**params)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data ({label}): {first_line(e, with_type=True)}") from None
    if not isinstance(dm, pl.LightningDataModule):
        raise ConfigError(f"data ({spec.get('_target_')}) built a {type(dm).__name__}, not a LightningDataModule")
    return dm


def build_callbacks(cfg: Mapping, monitor: str, ckpt_dir: str, with_logger: bool = True) -> list[pl.Callback]:
    out: list[pl.Callback] = [FiringRateLogger(), RankSeed()]
    dash = cfg.get("dashboard") or {}
    if dash.get("enabled"):
        params = {k: v for k, v in dash.items() if k != "enabled"}  # ranges: config.validate
        out.append(SpikeDashboard(**params))
    if cfg.get("ema_decay") is not None:
        # before the checkpoint callback: its on_save_checkpoint puts the averaged weights
        # into state_dict (the model's own go to current_model_state, for resuming)
        out.append(WeightEMA(decay=cfg["ema_decay"]))
    if cfg["checkpoint"]:
        out.append(
            EpochCheckpoint(  # last.ckpt: every epoch's end, improved or not
                dirpath=ckpt_dir,
                filename="best",
                monitor=monitor,
                mode="max" if monitor.endswith("acc") else "min",
                save_last=True,
                save_top_k=1,
                enable_version_counter=False,
                auto_insert_metric_name=False,
            )
        )
        if cfg.get("every_n_train_steps"):
            # only refreshes last.ckpt, every N optimizer steps, so a kill loses little
            out.append(
                cb.ModelCheckpoint(
                    dirpath=ckpt_dir,
                    every_n_train_steps=cfg["every_n_train_steps"],
                    save_top_k=0,
                    save_last=True,
                    enable_version_counter=False,
                )
            )
    if cfg["lr_monitor"] and with_logger:  # it logs to the loggers, and refuses to run without one
        out.append(cb.LearningRateMonitor(logging_interval="epoch"))
    if cfg["progress_bar"] == "tqdm":
        out.append(cb.TQDMProgressBar(refresh_rate=10))
    elif cfg["progress_bar"] == "rich":
        out.append(cb.RichProgressBar())
    if cfg.get("early_stopping_patience"):
        out.append(
            cb.EarlyStopping(
                monitor=monitor,
                mode="max" if monitor.endswith("acc") else "min",
                patience=cfg["early_stopping_patience"],
            )
        )
    for name, spec in (cfg.get("extra") or {}).items():
        callback = instantiate(spec, f"callbacks.extra.{name}")
        if not isinstance(callback, pl.Callback):
            raise ConfigError(f"callbacks.extra.{name} ({spec.get('_target_')}) is not a Lightning Callback")
        out.append(callback)
    return out


def build_loggers(cfg: Mapping | None, run_dir: str) -> list[pl_loggers.Logger]:
    """Every logger of the ``logger`` section (name -> ``_target_`` + arguments); a
    logger's files go into the run dir unless its section says otherwise."""
    out = []
    for name, spec in (to_dict(cfg) or {}).items():
        if spec is None:  # logger.<name>=null switches one off
            continue
        defaults: dict[str, Any] = {"save_dir": run_dir}
        if str(spec.get("_target_", "")).endswith("MLFlowLogger"):
            # MLflow's file store is frozen (and refused by MLflow 3); SQLite is its local store
            defaults = {"tracking_uri": f"sqlite:///{run_dir}/mlflow.db", "artifact_location": f"{run_dir}/mlartifacts"}
        logger = instantiate(spec, f"logger.{name}", **defaults)
        if not isinstance(logger, pl_loggers.Logger):
            raise ConfigError(f"logger.{name} ({spec.get('_target_')}) is not a Lightning logger")
        out.append(logger)
    return out


def trainer_kwargs(cfg: Mapping) -> dict[str, Any]:
    """The ``trainer`` section as ``pytorch_lightning.Trainer`` arguments (nulls dropped:
    the Trainer's own defaults apply)."""
    return {k: v for k, v in (to_dict(cfg) or {}).items() if v is not None}


def build_trainer(cfg: Mapping, run_dir: str, ckpt_dir: str, monitor: str) -> pl.Trainer:
    trainer_cfg = trainer_kwargs(cfg["trainer"])
    target = to_dict(cfg["target"])
    callbacks_cfg = to_dict(cfg["callbacks"])
    progress = trainer_cfg.pop("enable_progress_bar", True) and callbacks_cfg["progress_bar"] != "none"
    if not progress:  # trainer.enable_progress_bar=false wins over callbacks.progress_bar
        callbacks_cfg = {**callbacks_cfg, "progress_bar": "none"}
    loggers = build_loggers(cfg.get("logger"), run_dir)
    callbacks = build_callbacks(callbacks_cfg, monitor, ckpt_dir, with_logger=bool(loggers))
    # ddp: the children re-run this Hydra job, not sys.argv
    trainer_cfg["strategy"] = build_strategy(trainer_cfg.get("strategy", "auto"))
    try:
        return pl.Trainer(
            plugins=[AtomicCheckpointIO()],
            accelerator=target["accelerator"],
            devices=target["devices"],
            precision=target["precision"],
            logger=loggers or False,
            callbacks=callbacks,
            default_root_dir=run_dir,
            enable_checkpointing=bool(callbacks_cfg["checkpoint"]),
            enable_progress_bar=progress,
            **trainer_cfg,
        )
    except (TypeError, ValueError, MisconfigurationException) as e:
        raise ConfigError(f"trainer: {first_line(e, with_type=True)}") from None

"""Training configs become objects here: the data module, loggers, callbacks and the
Trainer. The network itself is built from plain data by :func:`snn_lab.models.build_network`
(``net_config`` extracts that data), so a checkpoint's hyper-parameters alone rebuild it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning import callbacks as cb
from pytorch_lightning import loggers as pl_loggers

from ..lit.callbacks import FiringRateLogger, RankSeed, SpikeDashboard
from ..lit.checkpoint_io import AtomicCheckpointIO
from ..lit.datamodule import MNISTDataModule
from ..lit.ddp import build_strategy

NET_KEYS = ("model", "neuron", "surrogate", "encoder", "readout", "time_steps")


def to_dict(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def net_config(cfg: Mapping) -> dict:
    """The part of a training config that defines the network, as plain data."""
    return {k: to_dict(cfg[k]) for k in NET_KEYS}


def _params(section: Mapping, drop=("name",)) -> dict:
    return {k: v for k, v in section.items() if k not in drop and not k.startswith("_")}


def build_datamodule(cfg: Mapping) -> MNISTDataModule:
    d = _params(to_dict(cfg))
    return MNISTDataModule(**d)


def build_callbacks(cfg: Mapping, monitor: str, ckpt_dir: str) -> list[pl.Callback]:
    out: list[pl.Callback] = [FiringRateLogger(), RankSeed()]
    dash = cfg.get("dashboard") or {}
    if dash.get("enabled"):
        params = {k: v for k, v in dash.items() if k != "enabled"}  # ranges: config.validate
        out.append(SpikeDashboard(**params))
    if cfg["checkpoint"]:
        out.append(
            cb.ModelCheckpoint(
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
    if cfg["lr_monitor"]:
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
    return out


def build_loggers(cfg: Mapping, run_dir: str) -> list[pl_loggers.Logger]:
    loggers = pl_loggers
    name = cfg["name"]
    if name == "tensorboard":
        return [
            loggers.TensorBoardLogger(
                save_dir=run_dir,
                name="tensorboard",
                version="",
                default_hp_metric=False,
                log_graph=cfg.get("log_graph", False),
            )
        ]
    if name == "csv":
        return [loggers.CSVLogger(save_dir=run_dir, name="csv", version="")]
    return []


def build_trainer(cfg: Mapping, run_dir: str, ckpt_dir: str, monitor: str) -> pl.Trainer:
    trainer_cfg = {k: v for k, v in to_dict(cfg["trainer"]).items() if v is not None}
    target = to_dict(cfg["target"])
    callbacks_cfg = to_dict(cfg["callbacks"])
    loggers = build_loggers(to_dict(cfg["logger"]), run_dir)
    callbacks = build_callbacks(callbacks_cfg, monitor, ckpt_dir)
    # ddp: the children re-run this Hydra job, not sys.argv
    trainer_cfg["strategy"] = build_strategy(trainer_cfg["strategy"])
    return pl.Trainer(
        plugins=[AtomicCheckpointIO()],
        accelerator=target["accelerator"],
        devices=target["devices"],
        precision=target["precision"],
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=run_dir,
        enable_checkpointing=bool(callbacks_cfg["checkpoint"]),
        enable_progress_bar=trainer_cfg.pop("enable_progress_bar") and callbacks_cfg["progress_bar"] != "none",
        **trainer_cfg,
    )

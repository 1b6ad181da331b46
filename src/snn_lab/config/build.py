"""The one place configs become objects (every ``instantiate`` call lives here).

Networks are built from plain dicts (``net_config``) so a checkpoint's hyper-parameters
alone rebuild the model: ``SNNLitModule.load_from_checkpoint(path)`` needs nothing else.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..encoders import build_encoder
from ..models import SNNModel, SpikingConvNet, SpikingMLP
from ..neurons import build_neuron, get_surrogate
from ..readouts import check_readout

MODELS = {"mlp": SpikingMLP, "conv": SpikingConvNet}
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


def build_network(net: Mapping) -> SNNModel:
    net = to_dict(net)
    model = dict(net["model"])
    name = model.pop("name")
    if name not in MODELS:
        raise ValueError(f"model={name!r} is unknown; accepted: {', '.join(MODELS)}")
    sur = net.get("surrogate") or {}
    surrogate = get_surrogate(sur.get("name", "rectangle"), sur.get("width"))
    neuron = dict(net["neuron"])
    neuron_name = neuron.pop("name")
    make_neuron = lambda: build_neuron(neuron_name, surrogate=surrogate, **neuron)  # noqa: E731
    make_neuron()  # fail early on bad neuron parameters
    enc = dict(net.get("encoder") or {"name": "bernoulli"})
    encoder = build_encoder(enc.pop("name"), **enc)
    readout = dict(net.get("readout") or {"name": "rate"})
    check_readout(readout["name"])
    input_shape = list(model.pop("input_shape"))
    input_shape[0] *= encoder.channel_multiplier
    return MODELS[name](make_neuron, input_shape=input_shape, time_steps=net["time_steps"],
                        encoder=encoder, readout=readout["name"], out_decay=readout.get("out_decay", 0.8),
                        **model)


def build_optimizer(cfg: Mapping, params) -> torch.optim.Optimizer:
    return instantiate(to_dict(cfg), params=params, _convert_="all")


def build_lr_scheduler(cfg: Mapping, optimizer, max_epochs: int, total_steps: int) -> dict:
    cfg = dict(to_dict(cfg))
    interval = cfg.pop("interval")
    name = cfg.pop("name")
    if name == "cosine" and cfg.get("T_max") is None:
        cfg["T_max"] = max(1, max_epochs if interval == "epoch" else total_steps)
    if name == "onecycle":
        cfg["total_steps"] = max(1, total_steps)
        if cfg.get("max_lr") is None:
            cfg["max_lr"] = optimizer.param_groups[0]["lr"]
    return {"scheduler": instantiate(cfg, optimizer=optimizer), "interval": interval}


def build_datamodule(cfg: Mapping):
    from ..lit.datamodule import MNISTDataModule

    d = _params(to_dict(cfg))
    return MNISTDataModule(**d)


def build_callbacks(cfg: Mapping, monitor: str, ckpt_dir: str) -> list:
    import pytorch_lightning as pl
    from pytorch_lightning import callbacks as cb

    from ..lit.callbacks import FiringRateLogger, RankSeed, SpikeDashboard

    out: list[pl.Callback] = [FiringRateLogger(), RankSeed()]
    dash = cfg.get("dashboard") or {}
    if dash.get("enabled"):
        params = {k: v for k, v in dash.items() if k != "enabled"}  # ranges: config.validate
        out.append(SpikeDashboard(**params))
    if cfg["checkpoint"]:
        out.append(cb.ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor,
                                      mode="max" if monitor.endswith("acc") else "min",
                                      save_last=True, save_top_k=1, enable_version_counter=False,
                                      auto_insert_metric_name=False))
        if cfg.get("every_n_train_steps"):
            # only refreshes last.ckpt, every N optimizer steps, so a kill loses little
            out.append(cb.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=cfg["every_n_train_steps"],
                                          save_top_k=0, save_last=True, enable_version_counter=False))
    if cfg["lr_monitor"]:
        out.append(cb.LearningRateMonitor(logging_interval="epoch"))
    if cfg["progress_bar"] == "tqdm":
        out.append(cb.TQDMProgressBar(refresh_rate=10))
    elif cfg["progress_bar"] == "rich":
        out.append(cb.RichProgressBar())
    if cfg.get("early_stopping_patience"):
        out.append(cb.EarlyStopping(monitor=monitor, mode="max" if monitor.endswith("acc") else "min",
                                    patience=cfg["early_stopping_patience"]))
    return out


def build_loggers(cfg: Mapping, run_dir: str) -> list:
    from pytorch_lightning import loggers

    name = cfg["name"]
    if name == "tensorboard":
        return [loggers.TensorBoardLogger(save_dir=run_dir, name="tensorboard", version="",
                                          default_hp_metric=False, log_graph=cfg.get("log_graph", False))]
    if name == "csv":
        return [loggers.CSVLogger(save_dir=run_dir, name="csv", version="")]
    return []


def build_trainer(cfg: Mapping, run_dir: str, ckpt_dir: str, monitor: str):
    import pytorch_lightning as pl

    trainer_cfg = {k: v for k, v in to_dict(cfg["trainer"]).items() if v is not None}
    target = to_dict(cfg["target"])
    callbacks_cfg = to_dict(cfg["callbacks"])
    loggers = build_loggers(to_dict(cfg["logger"]), run_dir)
    callbacks = build_callbacks(callbacks_cfg, monitor, ckpt_dir)
    from ..lit.ddp import build_strategy  # ddp: children that run this Hydra job, not sys.argv

    trainer_cfg["strategy"] = build_strategy(trainer_cfg["strategy"])
    from ..lit.checkpoint_io import AtomicCheckpointIO

    return pl.Trainer(
        plugins=[AtomicCheckpointIO()],
        accelerator=target["accelerator"], devices=target["devices"], precision=target["precision"],
        logger=loggers or False, callbacks=callbacks, default_root_dir=run_dir,
        enable_checkpointing=bool(callbacks_cfg["checkpoint"]),
        enable_progress_bar=trainer_cfg.pop("enable_progress_bar") and callbacks_cfg["progress_bar"] != "none",
        **trainer_cfg,
    )

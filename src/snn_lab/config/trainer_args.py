"""The ``trainer`` section is passed to ``pytorch_lightning.Trainer`` as is; this checks it
against the Trainer's own signature at startup, so a typo or a wrong type fails naming
the key before any data is loaded (and ``limit_train_batches=1`` stays the int 1, one
batch, instead of becoming 1.0, all batches)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from typing import Any

import pytorch_lightning as pl

from ..errors import ConfigError

#: arguments snn_lab builds itself from other groups
OWNED = {
    "accelerator": "target.accelerator",
    "devices": "target.devices",
    "precision": "target.precision",
    "logger": "the logger group (logger=[tensorboard,csv])",
    "callbacks": "the callbacks group (callbacks.extra.<name>._target_=...)",
    "plugins": "snn_lab (atomic checkpoint writes)",
    "default_root_dir": "the run dir (hydra.run.dir, paths.log_dir)",
    "enable_checkpointing": "callbacks.checkpoint",
}


@cache
def trainer_hints() -> dict[str, Any]:
    init = pl.Trainer.__init__
    names = [p for p in inspect.signature(init).parameters if p != "self"]
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: check the names only
        hints = {}
    return {n: hints.get(n, Any) for n in names}


def _matches(value: Any, tp: Any) -> bool:  # noqa: PLR0911 - one return per kind of annotation
    if tp is Any or isinstance(tp, typing.TypeVar):
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return any(_matches(value, arm) for arm in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is timedelta:  # max_time also takes "DD:HH:MM:SS" or a dict (another arm)
        return False
    if origin in (list, tuple, typing.Sequence, dict, Mapping) or tp in (list, tuple, dict):
        return isinstance(value, (list, tuple, dict))
    return not isinstance(value, (int, float, str, bool))  # an object type: not a plain value


def _show(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("pytorch_lightning.", "").replace("lightning.pytorch.", "")


def check_trainer_args(section: Mapping[str, Any]) -> None:
    hints = trainer_hints()
    for key, value in section.items():
        if key in OWNED:
            raise ConfigError(f"trainer.{key} is set by {OWNED[key]}; remove it from the trainer section")
        if key not in hints:
            raise ConfigError(
                f"trainer.{key} is not an argument of pytorch_lightning.Trainer "
                f"(version {pl.__version__}); see its documentation for the accepted ones"
            )
        if value is not None and not _matches(value, hints[key]):
            raise ConfigError(
                f"trainer.{key}={value!r} is invalid: pytorch_lightning.Trainer takes {_show(hints[key])}"
            )

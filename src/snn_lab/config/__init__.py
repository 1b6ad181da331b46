"""Typed configs: schemas (ConfigStore), validation, and the build module.

Importing this package loads only the schemas (dataclasses, Hydra's ConfigStore): a
command line's overrides are merged and type-checked against them before torch and
Lightning load, so ``neuron.vth=abc`` fails in about a second. :func:`validate` and
:func:`deploy_backend_name` (:mod:`.checks`) load the rest on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .schema import TrainConf, register_configs

if TYPE_CHECKING:
    from .checks import deploy_backend_name, validate


def __getattr__(name: str) -> Any:  # PEP 562: the checks load torch, so on first use
    if name in ("validate", "deploy_backend_name"):
        from . import checks

        return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ConfigError", "TrainConf", "deploy_backend_name", "register_configs", "validate"]

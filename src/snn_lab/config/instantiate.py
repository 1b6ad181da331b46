"""``_target_`` sections become objects, with one-line errors that name the config key
and the class: an unknown argument, a class that cannot be imported, or a constructor
that raises (a user's class may raise anything)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, SnnLabError, first_line
from ..registry import locate


def accepted_kwargs(cls: Any) -> set[str] | None:
    """The keyword arguments ``cls(...)`` takes; None when it takes ``**kwargs``."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_kwargs(cls: Any, kwargs: Mapping[str, Any], key: str, label: str) -> None:
    accepted = accepted_kwargs(cls)
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]} is not an argument of {label}; it accepts: {', '.join(sorted(accepted)) or 'none'}"
        )


def instantiate(spec: Mapping[str, Any], key: str, **extra: Any) -> Any:
    """``spec["_target_"](**spec_without_underscored_keys, **extra)``; ``extra`` fills
    arguments the section leaves out or null (``save_dir``, ``params``...)."""
    target = spec.get("_target_")
    if not target:
        raise ConfigError(f"{key} needs a _target_: package.module.Class")
    cls = locate(str(target), f"{key}._target_")
    kwargs = {k: v for k, v in spec.items() if not k.startswith("_")}
    for k, v in extra.items():
        if kwargs.get(k) is None:
            kwargs[k] = v
    accepted = accepted_kwargs(cls)
    if accepted is not None:  # extras are offered, not imposed; `name` is a label unless the class takes it
        kwargs = {k: v for k, v in kwargs.items() if k in accepted or (k not in extra and k != "name")}
    check_kwargs(cls, kwargs, key, str(target))
    try:
        return cls(**kwargs)
    except SnnLabError as e:
        raise ConfigError(f"{key} ({target}): {e}") from None
    except Exception as e:  # noqa: BLE001 - any failure of a user's constructor is reported the same way
        raise ConfigError(f"{key} ({target}) failed: {first_line(e, with_type=True)}") from None

"""Backend registry, shaped like ``torch.compile``'s.

* :func:`register_backend` -- decorator: ``@register_backend("name")`` on a
  :class:`~snn_lab.deploy.backends.base.Backend` subclass (or a zero-argument factory).
* :func:`list_backends` -- sorted names, built-ins plus installed plug-ins.
* :func:`get_backend` -- look a name up; falls back to the ``snn_lab.backends``
  entry-point group, so a chip vendor's package can add a backend by declaring::

      [project.entry-points."snn_lab.backends"]
      mychip = "mychip_snn.backend:MyChipBackend"

  Unknown names raise :class:`UnknownBackendError` listing what is available.

Looking a backend up does not import its toolchain; :meth:`Backend.check_available`
does, when the deploy stage starts, and says what to install if it is missing.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import UnknownBackendError

ENTRY_POINT_GROUP = "snn_lab.backends"
_REGISTRY: dict[str, Callable] = {}

T = TypeVar("T", bound=Callable[..., Any])


def register_backend(name: str | None = None, *, replace: bool = False) -> Callable[[T], T]:
    """Register a backend class/factory under ``name`` (default: its ``name`` attribute)."""

    def deco(obj: T) -> T:
        key = name or getattr(obj, "name", None)
        if not key or not isinstance(key, str):
            raise ValueError("register_backend needs a name: @register_backend('mybackend')")
        if key in _REGISTRY and _REGISTRY[key] is not obj and not replace:
            raise ValueError(
                f"backend {key!r} is already registered ({_REGISTRY[key]!r}); pass replace=True to override it"
            )
        _REGISTRY[key] = obj
        if isinstance(obj, type) and getattr(obj, "name", None) in (None, "", "base"):
            cls: Any = obj  # any class (a Backend subclass or a plug-in's own): give it the registered name
            cls.name = key
        return obj

    return deco


def unregister_backend(name: str) -> None:
    """Remove a registered backend (a plug-in's teardown, tests); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    try:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # noqa: BLE001 - a broken distribution must not hide the built-ins
        return {}
    return {ep.name: ep for ep in eps}


def list_backends() -> list[str]:
    """Names of every backend: registered ones and ``snn_lab.backends`` entry points."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_backend(name: str) -> Callable:
    """The registered class/factory for ``name`` (entry points are loaded on demand)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    ep = _entry_points().get(name)
    if ep is not None:
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a plug-in's import may raise anything
            raise UnknownBackendError(
                f"backend {name!r} is declared by entry point {ep.value!r} but failed to import "
                f"({type(e).__name__}: {e}); reinstall the package that provides it"
            ) from None
        _REGISTRY.setdefault(name, obj)
        return obj
    raise UnknownBackendError(f"backend={name!r} is unknown; available: {', '.join(list_backends())}")


def create_backend(name: str):
    """Instantiate the backend ``name`` (no toolchain is touched yet)."""
    return get_backend(name)()

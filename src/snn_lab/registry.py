"""Named registries of components (neurons, encoders, models, deploy backends...) and
``_target_`` lookup, with one-line errors that list what is accepted.

Shaped like ``torch._dynamo``'s backend registry: ``register`` (also as a decorator),
``get`` (unknown names list the registered ones), ``names``. A config section picks a
built-in by ``name`` or any importable class by ``_target_: package.module.Class``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")
FactoryT = TypeVar("FactoryT", bound=Callable[..., Any])

__all__ = ["Registry", "locate", "split_spec"]


class Registry(Generic[T]):
    """A name -> component map for one ``kind`` (the config key it serves, e.g. ``neuron``)."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = dict(entries or {})

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Any:
        """``registry.register("cuba", CubaLIF)`` or ``@registry.register("cuba")``."""

        def add(o: T) -> T:
            if name in self._entries and self._entries[name] is not o and not replace:
                raise ConfigError(
                    f"{self.kind}={name!r} is already registered (to {self._entries[name]!r}); "
                    "pass replace=True to override it"
                )
            self._entries[name] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"{self.kind}={name!r} is unknown; accepted: {', '.join(self._entries)} "
                f"(or a class path in {self.kind}._target_)"
            ) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)


def locate(path: str, key: str) -> Any:
    """Import ``package.module.Attr``; ``key`` names the config key for the error."""
    module_name, _, attr = str(path).rpartition(".")
    if not module_name:
        raise ConfigError(f"{key}={path!r} is not a class path; write package.module.Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"{key}={path!r}: module {module_name!r} cannot be imported ({e}); "
            "install the package that provides it or fix the path"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{key}={path!r}: module {module_name!r} has no attribute {attr!r}") from None


def split_spec(spec: Mapping[str, Any], registry: Registry[FactoryT], key: str) -> tuple[FactoryT, str, dict[str, Any]]:
    """``(factory, label, params)`` for a config section that names a built-in
    (``name: lif``) or a class (``_target_: pkg.Class``); ``label`` is what errors show."""
    params = {k: v for k, v in spec.items() if k not in ("name", "_target_") and not k.startswith("_")}
    target = spec.get("_target_")
    if target:
        return locate(target, f"{key}._target_"), str(target), params
    name = spec.get("name")
    if name is None:
        raise ConfigError(f"{key} needs a name (one of {', '.join(registry.names())}) or a _target_")
    return registry.get(str(name)), str(name), params

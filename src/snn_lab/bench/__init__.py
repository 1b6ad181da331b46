"""The fast engine against the per-step path (and peers): ``snn-bench`` /
``python -m snn_lab.bench``. See :mod:`.runner` for what is measured and
``docs/BENCHMARKS.md`` for results.

The names below load on first use, not with the package: ``python -m snn_lab.bench``
imports this package before its ``__main__``, and the CLI must set ``OMP_WAIT_POLICY``
before torch (and its OpenMP runtime) loads.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BenchConfig", "run", "table"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".runner", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The fast engine against the per-step path (and peers): ``snn-bench`` /
``python -m snn_lab.bench``. See :mod:`.runner` for what is measured and
``docs/BENCHMARKS.md`` for results."""

from .runner import BenchConfig, run, table

__all__ = ["BenchConfig", "run", "table"]

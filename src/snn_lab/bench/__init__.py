"""``python -m snn_lab.bench``: the fast engine against the per-step path (and peers).

See :mod:`.runner` for what is measured and ``docs/BENCHMARKS.md`` for results.
"""

import os

# Idle OpenMP threads sleep instead of spinning. With the default (spin), a parallel
# region on a machine whose cores other processes also use waits for a descheduled
# spinning peer: measured here, 2-thread training ran 3-7x slower than 1 thread under
# load, and passive waiting removed that. Must be set before torch loads OpenMP; an
# explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .runner import BenchConfig, run, table  # noqa: E402

__all__ = ["BenchConfig", "run", "table"]

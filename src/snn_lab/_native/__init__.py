"""Native C kernels of snn_lab: the sources (``csrc/``) and their build-or-load (:mod:`.build`).

The bottom layer of the project: it imports only the standard library. Callers bind the
functions they need on the ``ctypes.CDLL`` that :func:`load` returns and fall back (or fail
with their own message) on :class:`NativeUnavailableError`. :func:`describe` reports which
path ran, for run records.
"""

from .build import (
    ABI_VERSION,
    LIBRARIES,
    NativeUnavailableError,
    cache_dir,
    describe,
    disabled,
    find_compiler,
    load,
    reset,
    status,
)

__all__ = [
    "ABI_VERSION",
    "LIBRARIES",
    "NativeUnavailableError",
    "cache_dir",
    "describe",
    "disabled",
    "find_compiler",
    "load",
    "reset",
    "status",
]

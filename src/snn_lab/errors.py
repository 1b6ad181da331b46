"""Every error snn_lab raises for bad input derives from :class:`SnnLabError`.

Messages are one line: the cause, then what to do. The command-line entry points catch
``SnnLabError`` alone (:mod:`snn_lab.cli`), print ``error: <message>`` and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DeployError",
    "DivergedError",
    "RunError",
    "SnnLabError",
    "UnknownBackendError",
    "UnsupportedError",
    "first_line",
]


class SnnLabError(Exception):
    """The root: a user-facing failure with a one-line message."""


class ConfigError(SnnLabError, ValueError):
    """A config value is out of range or inconsistent (types are checked when Hydra composes)."""


class DataError(SnnLabError, ValueError):
    """A dataset is missing, partial, corrupt or of the wrong shape."""


class CheckpointError(SnnLabError, ValueError):
    """A checkpoint is missing, corrupt, unsafe or of another architecture."""


class RunError(SnnLabError, RuntimeError):
    """The run cannot proceed (its directory holds a finished run, is unwritable...)."""


class DeployError(SnnLabError, RuntimeError):
    """The deploy stage cannot proceed."""


class UnknownBackendError(DeployError, ValueError):
    """No backend of that name is registered (built in or by entry point)."""


class BackendUnavailableError(DeployError):
    """The backend is known but its toolchain (a package, a compiler, a device SDK) is missing."""


class UnsupportedError(DeployError, ValueError):
    """The backend cannot run this network or these options (batch size, neuron, encoder...)."""


class DivergedError(SnnLabError, FloatingPointError):
    """Training produced a non-finite loss or gradient."""


def first_line(e: BaseException, with_type: bool = False, limit: int = 300) -> str:
    """The first line of an exception's message (its type when it has none), for the
    one-line errors that wrap a failure of code snn_lab does not control."""
    text = str(e).strip()
    line = text.splitlines()[0][:limit] if text else ""
    if not line:
        return type(e).__name__
    return f"{type(e).__name__}: {line}" if with_type else line

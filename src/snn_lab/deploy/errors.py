"""Deploy errors. Every message is one line: the cause, then what to do."""

from __future__ import annotations


class DeployError(RuntimeError):
    """The deploy stage cannot proceed."""


class UnknownBackendError(DeployError, ValueError):
    """No backend of that name is registered (built in or by entry point)."""


class BackendUnavailableError(DeployError):
    """The backend is known but its toolchain (a package, a compiler, a device SDK) is missing."""


class UnsupportedError(DeployError, ValueError):
    """The backend cannot run this network or these options (batch size, neuron, encoder...)."""


class ParityError(DeployError):
    """The deployed step disagrees with the eager network beyond the allowed tolerance."""

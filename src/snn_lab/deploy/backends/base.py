"""What a backend is: ``compile(step, example_inputs, **options) -> CompiledStep``.

A :class:`Backend` takes the single-step module (:class:`~snn_lab.deploy.step.StepModule`
for the explicit-state lowering, :class:`~snn_lab.deploy.step.LoadSaveStep` for the
load/save lowering, as its :attr:`Backend.lowering` says) and returns a
:class:`CompiledStep`. A compiled step offers

* ``__call__(*inputs, *state) -> (out_t, *new_state)`` -- the compiled graph itself,
  state explicit (load/save backends: ``__call__(*inputs) -> out_t``);
* a session API the runtime drives: :meth:`CompiledStep.reset` at the start of a sample
  batch, :meth:`CompiledStep.step` once per time step (state stays inside, as on a
  device), and :meth:`CompiledStep.run_batch` for all T steps of one batch;
* ``artifacts``: the files it wrote (model, graph dumps);
* :meth:`CompiledStep.rebatch`: the same compiled graph at another batch size, when the
  graph has a dynamic batch axis (the runtime's batch-1 latency run then compiles nothing).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ...errors import BackendUnavailableError, DeployError, UnsupportedError


def num_steps(steps, time_steps: int | None) -> int:
    """T of a ``run_batch`` call: ``steps``' first dimension, else ``time_steps`` (device-side
    encoding passes no steps)."""
    if steps is not None:
        return int(steps.shape[0])
    if time_steps is not None:
        return int(time_steps)
    raise DeployError("run_batch without steps (device-side encoding) needs time_steps")


class CompiledStep:
    backend: str = "base"

    def __init__(
        self,
        step_module,
        batch_size: int,
        artifacts: dict[str, str] | None = None,
        input_dtype: torch.dtype = torch.float32,
    ):
        self.step_module = step_module
        self.encode: str = step_module.encode
        self.batch_size = int(batch_size)
        self.artifacts: dict[str, str] = dict(artifacts or {})
        self.input_dtype = input_dtype  # dtype of x_t for encode=host
        self._state: list[Tensor] | None = None
        self._images: Tensor | None = None

    # -- the compiled graph, state explicit ---------------------------------------------
    def __call__(self, *args):
        raise NotImplementedError

    def init_state(self) -> list[Tensor]:
        return self.step_module.init_state(self.batch_size)

    # -- session API (state kept inside, as on a device) ----------------------------------
    #: True when the compiled step draws its own Bernoulli numbers (device-side encoding);
    #: the runtime then sends only the images and per-sample keys, no draws.
    device_rng: bool = False
    #: True when ``run_batch`` already runs on every core (a native kernel with its own
    #: thread pool): the runtime then feeds, runs and reads in the calling thread, since
    #: Python feeder/worker/reader threads would only compete with that pool for the cores.
    runs_on_all_cores: bool = False

    def reset(self, images: Tensor | np.ndarray | None = None, keys: np.ndarray | None = None) -> None:
        """Zero the state at the start of a sample batch. ``images`` are bound for
        ``encode=graph``; ``keys`` (per-sample draw keys) for device-side encoding."""
        self._state = self.init_state()
        self._images = None if images is None else _tensor(images)

    def step(self, t: int, x=None) -> np.ndarray:
        """Time step ``t``. ``x`` is ``u_t`` (encode=graph), the spikes ``x_t``
        (encode=host), or None (device-side encoding). The returned array may be reused
        by the next call."""
        if self._state is None:
            raise DeployError("step() before reset(): reset() starts each sample batch")
        x = _tensor(x)
        inputs = (self._images, x) if self.encode == "graph" else (x,)
        out, *self._state = self(*inputs, *self._state)
        return _np(out)

    def run_batch(self, images, steps=None, keys=None, time_steps: int | None = None) -> np.ndarray:
        """All T steps of one sample batch; returns the sum of the outputs over T ``[B, C]``.

        ``steps`` is ``[T, B, ...]``: draws (encode=graph) or spikes (encode=host); None
        with device-side encoding (then ``time_steps`` and ``keys`` are needed).
        """
        T = num_steps(steps, time_steps)
        self.reset(images if (self.encode == "graph" or self.device_rng) else None, keys)
        acc: np.ndarray | None = None
        for t in range(T):
            out = self.step(t, None if steps is None else steps[t])
            if acc is None:
                acc = np.array(out, dtype=np.float32, copy=True)
            else:
                np.add(acc, out, out=acc)
        if acc is None:
            raise DeployError(f"run_batch needs at least one time step, got {T}")
        return acc

    def rebatch(self, batch_size: int) -> CompiledStep | None:
        """This graph at ``batch_size`` (sharing the compiled artifact), or None when the
        backend compiled one batch size only."""
        return None

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "batch_size": self.batch_size, "encode": self.encode}


#: dtypes ``x_t`` may be fed in with encode=host (``input_dtype`` option of the exported backends)
INPUT_DTYPES = {"uint8": torch.uint8, "bool": torch.bool, "float32": torch.float32}


def resolve_input_dtype(model, requested: str) -> str:
    """``auto``: ``uint8`` (exact for 0/1) for a binary encoder's spikes, ``float32`` for
    analog inputs, which a narrower type would truncate."""
    if requested != "auto" and requested not in INPUT_DTYPES:
        raise UnsupportedError(f"input_dtype={requested!r} is unknown; accepted: auto, {', '.join(INPUT_DTYPES)}")
    binary = getattr(model.encoder, "binary", True)
    if requested == "auto":
        return "uint8" if binary else "float32"
    if not binary and requested != "float32":
        raise UnsupportedError(
            f"input_dtype={requested!r} would truncate the analog inputs of "
            f"{type(model.encoder).__name__}; use input_dtype=float32 or auto"
        )
    return requested


def with_input_dtype(step, example_inputs: tuple[Tensor, ...], input_dtype: str) -> tuple[Tensor, ...]:
    """The example inputs with ``x_t`` in ``input_dtype`` (encode=host; graph encoding
    takes float images and draws)."""
    if step.encode != "host":
        return example_inputs
    return (example_inputs[0].to(INPUT_DTYPES[input_dtype]), *example_inputs[1:])


def _np(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().numpy()
    return np.asarray(x)


def _tensor(x):
    if x is None or isinstance(x, Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


class Backend:
    """Base class; subclasses are registered with ``@register_backend("name")``."""

    name: str = "base"
    description: str = ""
    #: "explicit" (StepModule) or "loadsave" (LoadSaveStep)
    lowering: str = "explicit"
    #: modules that must import for the backend to work, and what to tell the user
    requires: Sequence[str] = ()
    install_hint: str = ""
    #: batch sizes the toolchain compiles (None: any)
    batch_sizes: Sequence[int] | None = None
    #: options accepted by compile() and their defaults
    default_options: ClassVar[dict[str, Any]] = {}
    #: True when the backend lowers recurrent layers (their last spikes are state);
    #: others are refused before compiling, naming those that do
    supports_recurrent: ClassVar[bool] = False

    def check_available(self) -> None:
        """Import the toolchain; raise :class:`BackendUnavailableError` saying what to install."""
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except ImportError as e:
                raise BackendUnavailableError(
                    f"backend {self.name!r} needs the Python module {mod!r}, which cannot be imported "
                    f"({e}); {self.install_hint or 'install it'}"
                ) from None

    def check_batch_size(self, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UnsupportedError(f"batch_size={batch_size!r} is invalid: must be an integer >= 1")
        if self.batch_sizes is not None and batch_size not in self.batch_sizes:
            raise UnsupportedError(
                f"backend {self.name!r} compiles batch sizes {', '.join(map(str, self.batch_sizes))} only, "
                f"not batch_size={batch_size}; pick one of those"
            )

    def check_model(self, model) -> None:
        """Raise :class:`UnsupportedError` if the network cannot be lowered by this backend."""

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            raise UnsupportedError(
                f"backend {self.name!r} has no option(s) {', '.join(unknown)}; accepted: "
                f"{', '.join(sorted(self.default_options)) or 'none'}"
            )
        return {**self.default_options, **options}

    def compile(self, step, example_inputs: tuple[Tensor, ...], out_dir: str, **options) -> CompiledStep:
        raise NotImplementedError

"""Integrate-and-fire family with the tutorial's delayed hard reset.

The tutorial's discrete LIF (docs/REFERENCE.md), per layer with scalar ``vth`` and ``decay``::

    o_{t-1} = H(V_{t-1} - vth)                       # previous step's spike
    V_t     = V_{t-1} * (1 - o_{t-1}) * decay + W s_t  # reset is applied one step late
    o_t     = H(V_t - vth)                            # strict '>' threshold

The stored state is the *pre-reset* membrane ``V_t``; the reset happens at the start
of the next step, and the surrogate gradient flows through it (as in the seed, unless
``detach_reset=True``). ``reset="subtract"`` replaces ``(1 - o)`` by ``- vth * o``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import engine
from .base import Neuron, check_positive, check_unit
from .surrogate import Surrogate

RESETS = ("hard", "subtract")


class LIFState(NamedTuple):
    v: torch.Tensor


class LIF(Neuron):
    """Leaky integrate-and-fire, exactly the tutorial's recurrence by default."""

    State = LIFState
    # buffers, or nn.Parameters when learnable (set by _scalar; PLIF keeps decay_logit instead of decay)
    vth: torch.Tensor
    decay: torch.Tensor

    def __init__(
        self,
        vth: float = 0.4,
        decay: float = 0.8,
        surrogate: Surrogate | None = None,
        reset: str = "hard",
        detach_reset: bool = False,
        learn_vth: bool = False,
        learn_decay: bool = False,
    ):
        super().__init__(surrogate)
        check_positive("vth", vth)
        check_unit("decay", decay)
        if reset not in RESETS:
            raise ValueError(f"reset={reset!r} is unknown; accepted: {', '.join(RESETS)}")
        self.reset = reset
        self.detach_reset = bool(detach_reset)
        self._scalar("vth", vth, learn_vth)
        self._init_decay(decay, learn_decay)

    def _init_decay(self, decay: float, learnable: bool) -> None:
        self._scalar("decay", decay, learnable)

    def leak(self) -> torch.Tensor:
        return self.decay

    def init_state(self, shape, device=None, dtype=torch.float32) -> LIFState:
        return LIFState(torch.zeros(tuple(shape), device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: LIFState) -> tuple[torch.Tensor, LIFState]:
        v = state.v
        last = self.spike(v - self.vth)
        if self.detach_reset:
            last = last.detach()
        if self.reset == "hard":  # noqa: SIM108 - one branch per reset rule, as in the docstring
            # Same operation order as the tutorial, so results are bit-identical.
            v = v * (1 - last) * self.leak() + x
        else:
            v = (v - self.vth * last) * self.leak() + x
        return self.spike(v - self.vth), LIFState(v)

    def multi_step(self, x_seq: torch.Tensor, state: LIFState | None = None) -> tuple[torch.Tensor, LIFState]:
        """Whole sequence ``[T, ...]``: the engine's fused scan (same spikes as looping
        :meth:`step`, gradients within float tolerance) when it applies, else the base
        loop (a subclass with its own ``step``, the engine switched off, tracing,
        per-neuron parameters, a custom spike function)."""
        if self._scan_applies(x_seq, state):
            spikes, v = engine.lif_scan(
                x_seq,
                None if state is None else state.v,
                self.vth,
                self.leak(),
                self.spike.name,
                self.spike.width,
                self.reset,
                self.detach_reset,
            )
            return spikes, LIFState(v)
        return super().multi_step(x_seq, state)

    def fixed_scan(self) -> engine.LIFSpec | None:
        """This neuron's scan for a synapse's kernel to run on its own output
        (:func:`snn_lab.engine.spike_linear_lif`), from the zero state: the tutorial LIF
        (or IF) with fixed scalar parameters and a surrogate the native kernels compute.
        None for anything else (a learnable ``vth``/``decay``, an overridden ``step``,
        per-neuron parameters, a custom spike function)."""
        if type(self).step is not LIF.step or type(self.spike) is not Surrogate:
            return None
        vth, decay = self.vth, self.leak()
        if vth.numel() != 1 or decay.numel() != 1 or vth.requires_grad or decay.requires_grad:
            return None
        kind = engine.native.SURROGATE_KINDS.get(self.spike.name)
        if kind is None or vth.dtype != torch.float32 or vth.device.type != "cpu":
            return None
        hard = self.reset == "hard"
        return engine.LIFSpec(float(vth), float(decay), hard, self.detach_reset, kind, float(self.spike.width))

    def _scan_applies(self, x_seq: torch.Tensor, state: LIFState | None) -> bool:
        if type(self).step is not LIF.step or not engine.options().enabled:
            return False
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        if not torch.is_floating_point(x_seq) or x_seq.dim() < 2 or type(self.spike) is not Surrogate:
            return False
        if self.vth.numel() != 1 or self.leak().numel() != 1:
            return False
        return state is None or state.v.shape == x_seq.shape[1:]

    def extra_repr(self) -> str:
        return f"vth={float(self.vth):g}, decay={float(self.leak()):g}, reset={self.reset}, surrogate={self.spike}"


class IF(LIF):
    """Integrate-and-fire: the LIF with no leak (``decay = 1``)."""

    def __init__(
        self,
        vth: float = 0.4,
        surrogate: Surrogate | None = None,
        reset: str = "hard",
        detach_reset: bool = False,
        learn_vth: bool = False,
    ):
        super().__init__(
            vth=vth,
            decay=1.0,
            surrogate=surrogate,
            reset=reset,
            detach_reset=detach_reset,
            learn_vth=learn_vth,
            learn_decay=False,
        )


class PLIF(LIF):
    """Parametric LIF (Fang et al. 2021): ``decay = sigmoid(w)`` with ``w`` learnable,
    initialised so that ``decay`` starts at the given value."""

    def __init__(
        self,
        vth: float = 0.4,
        decay: float = 0.8,
        surrogate: Surrogate | None = None,
        reset: str = "hard",
        detach_reset: bool = False,
        learn_vth: bool = False,
    ):
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"decay={decay!r} is invalid for plif: must lie in (0, 1)")
        super().__init__(
            vth=vth,
            decay=decay,
            surrogate=surrogate,
            reset=reset,
            detach_reset=detach_reset,
            learn_vth=learn_vth,
            learn_decay=True,
        )

    def _init_decay(self, decay: float, learnable: bool) -> None:
        d = float(decay)
        # the logit in float32 on the CPU (also when the net is built on the meta device)
        logit = torch.logit(torch.tensor(d, device="cpu")).item()
        self.decay_logit = torch.nn.Parameter(torch.tensor(logit))

    def leak(self) -> torch.Tensor:
        return torch.sigmoid(self.decay_logit)


class LIState(NamedTuple):
    v: torch.Tensor


class LI(Neuron):
    """Non-spiking leaky integrator ``V_t = decay * V_{t-1} + x_t``: the output layer of
    the membrane readout. ``step`` returns the membrane in place of spikes."""

    State = LIState
    spiking = False
    decay: torch.Tensor  # buffer

    def __init__(self, decay: float = 0.8):
        super().__init__(None)
        check_unit("decay", decay)
        self._scalar("decay", decay, False)

    def init_state(self, shape, device=None, dtype=torch.float32) -> LIState:
        return LIState(torch.zeros(tuple(shape), device=device, dtype=dtype))

    def step(self, x: torch.Tensor, state: LIState) -> tuple[torch.Tensor, LIState]:
        v = state.v * self.decay + x
        return v, LIState(v)

"""snn_lab's discrete neurons in NIR's continuous terms, and back.

NIR (https://neuroir.org) describes neurons by ODEs; a client discretises them with
forward Euler at its own time step ``dt``. snn_lab's neurons are the discrete
recurrences themselves (``V_t = decay V_{t-1} (1 - o_{t-1}) + I_t``, spike when
``V_t > vth``). Euler at ``dt`` of ``tau dv/dt = (v_leak - v) + r I`` is

    v' = (1 - dt/tau) v + (r dt/tau) I          (decay = 1 - dt/tau, input gain g = r dt/tau)

so a NIR membrane is snn_lab's scaled by the gain ``g``, and so is its threshold.
Which of ``r`` and ``v_threshold`` carries the gain is a convention; the writers below
pick, per node type, the one snnTorch 1.0 and Norse 1.1 both read correctly (see
docs/INTEROP.md for why):

==========  ===========================================================================
LIF, PLIF   ``LIF(tau = dt/(1-decay), r = 1, v_leak = 0, v_threshold = vth (1-decay),
            v_reset = 0)``  (Norse ignores ``r``; snnTorch divides the threshold by g)
IF          ``IF(r = 1/dt, v_threshold = vth, v_reset = 0)``  (Euler: ``v += dt r I = I``;
            Norse ignores ``r`` and steps ``v += I``, the same; snnTorch requires r = 1)
CubaLIF     ``CubaLIF(tau_syn = dt/(1-alpha), tau_mem = dt/(1-beta), r = tau_mem/dt,
            w_in = tau_syn/dt, v_threshold = vth, v_leak = 0, v_reset = 0)``
            (snnTorch requires ``r = tau_mem/dt``)
LI          ``LI(tau = dt/(1-decay), r = 1/(1-decay), v_leak = 0)``  (gain 1: the
            membrane is snn_lab's)
==========  ===========================================================================

Parameters are float64 arrays of the layer's per-sample shape, computed from the
float32 values; reading them back gives those float32 values exactly (checked by the
``nir`` deploy backend and the tests). A gain within :data:`UNIT_GAIN_TOL` of 1 is read
as exactly 1, as snnTorch reads it: an exporter that writes ``r = tau/dt`` in float32
(snnTorch does) means "no input scaling".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UnsupportedError

#: the time step written into exported graphs (``metadata["dt"]``): snnTorch 1.0's
#: importer hard-codes it; give Norse the same (``norse.torch.from_nir(graph, dt=1e-4)``)
DT = 1e-4

#: |gain - 1| below this reads as gain 1 (a few float32 rounding errors of tau and r)
UNIT_GAIN_TOL = 1e-6


def f64(value: Any) -> np.ndarray:
    """A float32 value (tensor, array or number) as the float64 array holding it exactly."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32).astype(np.float64)


def full(value: Any, shape: Sequence[int]) -> np.ndarray:
    """``value`` (scalar or per-neuron) broadcast to the layer shape, float64, own memory."""
    return np.array(np.broadcast_to(f64(value), tuple(int(d) for d in shape)), dtype=np.float64)


def _tau(decay: np.ndarray, what: str, dt: float) -> np.ndarray:
    if np.any(decay >= 1.0) or np.any(decay < 0.0):
        raise UnsupportedError(
            f"{what} has a decay outside [0, 1), which has no finite NIR time constant; "
            "export an IF neuron (decay 1) as neuron=if"
        )
    return dt / (1.0 - decay)


# -- snn_lab -> NIR ---------------------------------------------------------------------------


def lif_params(decay: Any, vth: Any, shape: Sequence[int], dt: float = DT) -> dict[str, np.ndarray]:
    d, v = full(decay, shape), full(vth, shape)
    return {
        "tau": _tau(d, "a LIF layer", dt),
        "r": np.ones_like(d),
        "v_leak": np.zeros_like(d),
        "v_threshold": v * (1.0 - d),
        "v_reset": np.zeros_like(d),
    }


def if_params(vth: Any, shape: Sequence[int], dt: float = DT) -> dict[str, np.ndarray]:
    v = full(vth, shape)
    return {"r": np.full_like(v, 1.0 / dt), "v_threshold": v, "v_reset": np.zeros_like(v)}


def cuba_params(alpha: Any, beta: Any, vth: Any, shape: Sequence[int], dt: float = DT) -> dict[str, np.ndarray]:
    a, b, v = full(alpha, shape), full(beta, shape), full(vth, shape)
    tau_syn, tau_mem = _tau(a, "a CubaLIF layer's synapse (alpha)", dt), _tau(b, "a CubaLIF layer (beta)", dt)
    return {
        "tau_syn": tau_syn,
        "tau_mem": tau_mem,
        "r": tau_mem / dt,
        "w_in": tau_syn / dt,
        "v_leak": np.zeros_like(v),
        "v_threshold": v,
        "v_reset": np.zeros_like(v),
    }


def li_params(decay: Any, shape: Sequence[int], dt: float = DT) -> dict[str, np.ndarray]:
    d = full(decay, shape)
    return {"tau": _tau(d, "the LI readout layer", dt), "r": 1.0 / (1.0 - d), "v_leak": np.zeros_like(d)}


# -- NIR -> snn_lab ---------------------------------------------------------------------------


def _unit(gain: np.ndarray) -> np.ndarray:
    return np.where(np.abs(gain - 1.0) <= UNIT_GAIN_TOL, 1.0, gain)


def _zero(node: Any, name: str, attrs: Sequence[str]) -> None:
    for attr in attrs:
        value = getattr(node, attr, None)
        if value is not None and np.any(np.asarray(value) != 0):
            raise UnsupportedError(
                f"NIR node {name!r} ({type(node).__name__}) has a non-zero {attr}; snn_lab's neurons "
                "leak to 0 and reset to 0, so this graph cannot be imported"
            )


def _decay(tau: Any, name: str, dt: float) -> np.ndarray:
    tau = np.asarray(tau, dtype=np.float64)
    # tau = dt is decay 0; an exporter's float32 rounding may put it a hair below dt
    if not np.all(np.isfinite(tau)) or np.any(tau < dt * (1.0 - UNIT_GAIN_TOL)):
        raise UnsupportedError(
            f"NIR node {name!r} has a time constant below dt={dt:g} (or not finite), which Euler at dt "
            "cannot step; pass the dt the graph was made for (model.dt=...)"
        )
    return np.maximum(1.0 - dt / tau, 0.0)


def read_lif(node: Any, name: str, dt: float = DT) -> dict[str, np.ndarray]:
    """``{decay, vth}`` (float64) of a NIR LIF: ``decay = 1 - dt/tau``, ``vth = v_threshold / g``."""
    _zero(node, name, ("v_leak", "v_reset"))
    tau = np.asarray(node.tau, dtype=np.float64)
    gain = _unit(np.asarray(node.r, dtype=np.float64) * dt / tau)
    return {"decay": _decay(tau, name, dt), "vth": np.asarray(node.v_threshold, dtype=np.float64) / gain}


def read_if(node: Any, name: str, dt: float = DT) -> dict[str, np.ndarray]:
    """``{vth}`` of a NIR IF (``dv/dt = r I``; Euler at dt: input gain ``r dt``)."""
    _zero(node, name, ("v_reset",))
    gain = _unit(np.asarray(node.r, dtype=np.float64) * dt)
    return {"vth": np.asarray(node.v_threshold, dtype=np.float64) / gain}


def read_cuba(node: Any, name: str, dt: float = DT) -> dict[str, np.ndarray]:
    """``{alpha, beta, vth}`` of a NIR CubaLIF (the threshold divided by both input gains)."""
    _zero(node, name, ("v_leak", "v_reset"))
    tau_syn = np.asarray(node.tau_syn, dtype=np.float64)
    tau_mem = np.asarray(node.tau_mem, dtype=np.float64)
    g_syn = _unit(np.asarray(node.w_in, dtype=np.float64) * dt / tau_syn)
    g_mem = _unit(np.asarray(node.r, dtype=np.float64) * dt / tau_mem)
    return {
        "alpha": _decay(tau_syn, name, dt),
        "beta": _decay(tau_mem, name, dt),
        "vth": np.asarray(node.v_threshold, dtype=np.float64) / _unit(g_syn * g_mem),
    }


def read_li(node: Any, name: str, dt: float = DT) -> dict[str, np.ndarray]:
    """``{decay, gain}`` of a NIR LI (``gain`` 1 for snn_lab's own graphs)."""
    _zero(node, name, ("v_leak",))
    tau = np.asarray(node.tau, dtype=np.float64)
    return {"decay": _decay(tau, name, dt), "gain": _unit(np.asarray(node.r, dtype=np.float64) * dt / tau)}

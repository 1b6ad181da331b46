"""Fused LIF scan over the whole time axis, with a memory-lean custom backward.

The recurrence is the tutorial's (``neurons/lif.py``), for a sequence of input currents
``x[0..T-1]`` and an initial membrane ``v0`` (``V[-1] := v0``)::

    l_t = H(V[t-1] - vth)                         # the previous step's spike
    V_t = V[t-1] * (1 - l_t) * decay + x_t        # hard reset  (or)
    V_t = (V[t-1] - vth * l_t) * decay + x_t      # reset="subtract"
    s_t = H(V_t - vth)

Forward. On CPU, one pass of the native kernel (``native.lif_fwd``); otherwise four
in-place kernels per step on preallocated ``[T, ...]`` buffers (multiply by the 0/1
"keep" mask, multiply by decay, add the input, compare). Both evaluate the tutorial's
``(V * (1 - l)) * decay + x`` in the tutorial's order without fused multiply-adds, so the
membranes -- hence the spikes -- are bit-identical to looping ``LIF.step``.

Backward. Only the pre-reset membranes ``V`` are saved (one float per neuron and step);
spikes ``S = V > vth`` and the surrogate derivative ``sg = surrogate.grad(V - vth)`` are
recomputed. With ``gV_t = dL/dV_t`` and ``gS_t`` the gradient arriving at ``s_t``::

    gV_t = gS_t * sg_t + gV_{t+1} * A_t
    A_t  = decay * ((1 - S_t) - V_t * sg_t)       # hard reset; the -V*sg term is the
                                                  # surrogate through the delayed reset
    A_t  = decay * (1 - vth * sg_t)               # subtract reset
    (detach_reset drops the sg term of A_t)

so the sequential part is one fused multiply-add per step (``addcmul``) and everything
else is a few whole-sequence elementwise passes. ``dL/dx_t = gV_t``; the gradients of
``v0``, a learnable ``vth`` and ``decay`` (PLIF's ``sigmoid(w)`` upstream) are sums of
the same terms. They equal autograd through the step loop up to float rounding (the
order of additions differs), which ``tests/test_engine.py`` checks.
"""

from __future__ import annotations

import torch

from . import native
from .options import native_runs, options
from .surrogate import SURROGATE_GRADS, SURROGATE_WIDTHS, surrogate_grad

__all__ = ["lif_scan", "lif_scan_reference"]


def _as_scalar(p: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    if isinstance(p, torch.Tensor):
        return p.to(device=like.device, dtype=like.dtype).reshape(())
    return torch.tensor(float(p), device=like.device, dtype=like.dtype)


@torch.no_grad()
def _scan_forward(
    x: torch.Tensor, v0: torch.Tensor, vth: torch.Tensor, decay: torch.Tensor, hard: bool, keep_v: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Returns ``(V[T, ...] or None, spikes[T, ...], v_last)``, spikes in ``x.dtype``.

    The hot loop works on float 0/1 masks: on CPU a float-output comparison costs what a
    multiply does, while bool masks (``masked_fill``, ``where``, bool->float) are 4-20x
    slower. ``keep_v=False`` (inference) keeps only two membrane buffers.
    """
    T = x.shape[0]
    shape = x.shape
    if keep_v:
        V = torch.empty(shape, dtype=x.dtype, device=x.device)
    else:
        ring = torch.empty((2, *shape[1:]), dtype=x.dtype, device=x.device)
    # M[t]: 1 - s_t for the hard reset ("keep"), s_t for subtract; both exact 0/1 floats.
    M = torch.empty(shape, dtype=x.dtype, device=x.device)
    prev_v = v0
    prev_m = (v0 <= vth).to(x.dtype) if hard else (v0 > vth).to(x.dtype)
    for t in range(T):
        vt = V[t] if keep_v else ring[t % 2]
        if hard:
            # tutorial order: (v * (1 - last)) * decay + x
            torch.mul(prev_v, prev_m, out=vt)
        else:
            # (v - vth * last) * decay + x
            torch.mul(prev_m, vth, out=vt)
            torch.sub(prev_v, vt, out=vt)
        vt.mul_(decay)
        vt.add_(x[t])
        if hard:
            torch.le(vt, vth, out=M[t])
        else:
            torch.gt(vt, vth, out=M[t])
        prev_v, prev_m = vt, M[t]
    spikes = torch.sub(1.0, M, out=M) if hard else M
    v_last = prev_v.clone() if T else v0
    return (V if keep_v else None), spikes, v_last


def _scan_forward_functional(x, v0, vth, decay, hard: bool):
    """The same forward without ``out=``/in-place ops: what ``torch.compile`` sees when it
    traces the scan (inductor then fuses the whole time loop into one kernel)."""
    v, vs, ss = v0, [], []
    for t in range(x.shape[0]):
        last = v > vth
        if hard:
            v = torch.where(last, torch.zeros_like(v), v * decay) + x[t]
        else:
            v = (v - last.to(x.dtype) * vth) * decay + x[t]
        vs.append(v)
        ss.append(v > vth)
    return torch.stack(vs), torch.stack(ss)


def _compiled_forward(x, v0, vth, decay, hard: bool):
    V, S = _scan_forward_functional(x, v0, vth, decay, hard)
    return V, S.to(x.dtype)


def _compiled_backward(V, g_spikes, g_vlast, vth, decay, sg_name: str, sg_width: float, hard: bool, detach: bool):
    G, _ = _grad_membrane(V, g_spikes, g_vlast, vth, decay, sg_name, sg_width, hard, detach)
    return G


_COMPILED: dict[str, object] = {}  # "forward" / "backward": the torch.compile'd scans, made on first use


def _compiled(name: str):
    """The ``torch.compile``d forward or backward scan (inductor fuses the whole time loop
    into one pointwise kernel over the neurons; on CUDA a Triton kernel)."""
    if name not in _COMPILED:
        fn = _compiled_forward if name == "forward" else _compiled_backward
        _COMPILED[name] = torch.compile(fn, fullgraph=True)
    return _COMPILED[name]


def _use_compiled(x: torch.Tensor) -> bool:
    """``engine.scan``: compile -- always; auto -- on CUDA (where no native kernel runs)."""
    scan = options().scan
    return not torch.compiler.is_compiling() and (scan == "compile" or (scan == "auto" and x.is_cuda))


def _use_native(*ts: torch.Tensor) -> bool:
    return options().scan == "auto" and native_runs(*ts)


def _native_x(x: torch.Tensor) -> torch.Tensor:
    """``x`` for the native kernel: contiguous, or one contiguous current repeated over
    time (stride 0, as the time-invariant path gives), which the kernel reads in place."""
    if x.shape[0] > 1 and x.stride(0) == 0 and x[0].is_contiguous():
        return x
    return x.contiguous()


def forward_nograd(x, v0, vth, decay, hard: bool):
    """``(spikes, v_last)`` without autograd (inference): compiled scan, native kernel or torch loop."""
    if _use_compiled(x):
        V, S = _compiled("forward")(x, v0, vth, decay, hard)
        return S, V[-1].clone()
    if _use_native(x, v0):
        _, S, v_last = native.lif_fwd(_native_x(x), v0.contiguous(), float(vth), float(decay), hard, keep_v=False)
        return S, v_last
    _, S, v_last = _scan_forward(x, v0, vth, decay, hard, keep_v=False)
    return S, v_last


class _LIFScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v0, vth, decay, sg_name: str, sg_width: float, hard: bool, detach: bool, fresh: bool = False):
        if torch.compiler.is_compiling():
            V, S = _scan_forward_functional(x, v0, vth, decay, hard)
            spikes = S.to(x.dtype)
            v_last = V[-1]
        elif _use_compiled(x):
            V, spikes = _compiled("forward")(x, v0, vth, decay, hard)
            v_last = V[-1].clone()
        elif _use_native(x, v0):
            V, spikes, v_last = native.lif_fwd(
                _native_x(x), v0.contiguous(), float(vth), float(decay), hard, keep_v=True
            )
        else:
            V, spikes, v_last = _scan_forward(x, v0, vth, decay, hard)
        ctx.save_for_backward(V, v0, vth, decay)
        ctx.cfg = (sg_name, sg_width, hard, detach)
        ctx.fresh = fresh
        ctx.compiled = _use_compiled(x)
        return spikes, v_last

    @staticmethod
    def backward(ctx, g_spikes, g_vlast):
        V, v0, vth, decay = ctx.saved_tensors
        sg_name, sg_width, hard, detach = ctx.cfg
        need_x, need_v0, need_vth, need_decay = ctx.needs_input_grad[:4]
        dt = V.dtype
        if ctx.compiled:
            G = _compiled("backward")(V, g_spikes, g_vlast, vth, decay, sg_name, sg_width, hard, detach)
            gd_rest = None
        else:
            G, gd_rest = _grad_membrane(V, g_spikes, g_vlast, vth, decay, sg_name, sg_width, hard, detach, need_decay)

        # The first step's reset involves the initial membrane v0. A fresh (zero) v0
        # adds nothing to the decay gradient (its term is G[0] * 0), so those
        # full-size first-step tensors are only formed when v0 or vth needs them.
        grad_v0 = grad_decay = g_vth = None
        if need_v0 or need_vth or (need_decay and not ctx.fresh):
            l0 = (v0 > vth).to(dt)
            sg0 = surrogate_grad(sg_name, v0 - vth, sg_width)
        if need_v0:
            if hard:  # noqa: SIM108 - one branch per reset rule
                a0 = 1 - l0 if detach else 1 - l0 - v0 * sg0
            else:
                a0 = torch.ones_like(v0) if detach else 1 - vth * sg0
            grad_v0 = G[0] * a0 * decay
        if need_decay:
            # dV_t / d decay: the previous membrane after its reset.
            if gd_rest is None:
                if hard:  # noqa: SIM108 - one branch per reset rule
                    pre = V[:-1] * torch.le(V[:-1], vth).to(dt)
                else:
                    pre = V[:-1] - torch.gt(V[:-1], vth).to(dt) * vth
                rest = (G[1:] * pre).sum()
            else:  # summed by the native backward scan
                rest = torch.tensor(gd_rest, dtype=dt, device=V.device)
            if ctx.fresh:
                grad_decay = rest.reshape(decay.shape)
            else:
                pre0 = v0 * (1 - l0) if hard else v0 - l0 * vth
                grad_decay = ((G[0] * pre0).sum() + rest).reshape(decay.shape)
        if need_vth:
            SG = surrogate_grad(sg_name, V - vth, sg_width, inplace=True)
            # Through the spikes s_t = H(V_t - vth): -sum gS_t * sg_t.
            g_vth = torch.zeros((), dtype=dt, device=V.device) if g_spikes is None else -(g_spikes * SG).sum()
            # Through the reset: l_t = H(V[t-1] - vth) enters V_t.
            if hard:
                if not detach:
                    g_vth = g_vth + decay * ((G[0] * v0 * sg0).sum() + (G[1:] * V[:-1] * SG[:-1]).sum())
            else:
                S_prev = torch.gt(V[:-1], vth).to(dt)
                g_vth = g_vth - decay * ((G[0] * l0).sum() + (G[1:] * S_prev).sum())
                if not detach:
                    g_vth = g_vth + decay * vth * ((G[0] * sg0).sum() + (G[1:] * SG[:-1]).sum())
            g_vth = g_vth.reshape(vth.shape)
        return (G if need_x else None), grad_v0, g_vth, grad_decay, None, None, None, None, None


def _grad_membrane(V, g_spikes, g_vlast, vth, decay, sg_name, sg_width, hard, detach, want_decay=False):
    """``(G, s)``: ``G[t] = dL/dV_t`` (= dL/dx_t), the backward scan; ``s`` the native
    kernel's part of the decay gradient (``want_decay``; None: not computed)."""
    if sg_name in native.SURROGATE_KINDS and _use_native(V) and (g_spikes is None or g_spikes.dtype == torch.float32):
        gS = None if g_spikes is None else g_spikes.contiguous()
        gv = None if g_vlast is None else g_vlast.contiguous()
        kind = native.SURROGATE_KINDS[sg_name]
        return native.lif_bwd(V, gS, gv, float(vth), float(decay), hard, detach, kind, float(sg_width), want_decay)
    T = V.shape[0]
    SG = surrogate_grad(sg_name, V - vth, sg_width, inplace=True)
    # G starts as the direct term gS_t * sg_t and becomes gV_t in place.
    G = torch.zeros_like(V) if g_spikes is None else g_spikes * SG
    # A_t (t = 0..T-2): the coefficient of gV_{t+1} in gV_t (None: the scalar decay).
    A = None
    if T > 1:
        if hard:
            A = torch.empty_like(V[:-1])
            torch.le(V[:-1], vth, out=A)  # 1 - s_t as a float mask (fast on CPU)
            if not detach:
                A.addcmul_(V[:-1], SG[:-1], value=-1.0)
            A.mul_(decay)
        elif not detach:
            A = torch.mul(SG[:-1], -vth).add_(1.0).mul_(decay)
    del SG
    if g_vlast is not None:
        G[-1] += g_vlast
    for t in range(T - 2, -1, -1):
        if A is None:
            G[t].add_(G[t + 1] * decay)
        else:
            G[t].addcmul_(G[t + 1], A[t])
    return G, None


def _layout_perm(x: torch.Tensor) -> list[int] | None:
    """A permutation of ``x``'s dims, time first, under which ``x`` is contiguous when it
    is dense in another order (a channels-last current; or one current repeated over time
    with stride 0, laid out channels-last), else None (contiguous, or not dense)."""
    if x.dim() < 3 or x[0].is_contiguous():
        return None
    inner = x[0]
    strides = [inner.stride(d) for d in range(inner.dim())]
    order = sorted(range(inner.dim()), key=lambda d: (-strides[d], d))
    if not inner.permute(order).is_contiguous():
        return None
    perm = [0, *(d + 1 for d in order)]
    if x.stride(0) != 0 and not x.permute(perm).is_contiguous():
        return None
    return perm


def lif_scan(
    x: torch.Tensor,
    v0: torch.Tensor | None,
    vth: torch.Tensor | float,
    decay: torch.Tensor | float,
    surrogate: str = "rectangle",
    width: float | None = None,
    reset: str = "hard",
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the tutorial LIF over ``x[T, ...]``; returns ``(spikes[T, ...], v_last)``.

    ``vth``/``decay`` are scalars or one-element tensors (learnable ones get gradients);
    ``surrogate``/``width``: a name of :data:`SURROGATE_GRADS` and its width (None: its
    default; the tutorial's is the rectangle of width 0.5).
    """
    if surrogate not in SURROGATE_GRADS:
        raise ValueError(f"surrogate={surrogate!r} is unknown; accepted: {', '.join(SURROGATE_GRADS)}")
    width = SURROGATE_WIDTHS[surrogate] if width is None else float(width)
    if reset not in ("hard", "subtract"):
        raise ValueError(f"reset={reset!r} is unknown; accepted: hard, subtract")
    fresh = v0 is None  # a zero initial membrane: its backward terms vanish
    if v0 is None:
        v0 = torch.zeros(x.shape[1:], device=x.device, dtype=x.dtype)
    elif v0.shape != x.shape[1:]:
        v0 = v0.expand(x.shape[1:])  # e.g. the tutorial's [1, N] membrane for a batch
    vth_t = vth if isinstance(vth, torch.Tensor) else _as_scalar(vth, x)
    decay_t = decay if isinstance(decay, torch.Tensor) else _as_scalar(decay, x)
    vth_t = vth_t.reshape(()).to(x.dtype)
    decay_t = decay_t.reshape(()).to(x.dtype)
    hard = reset == "hard"
    perm = _layout_perm(x)
    if perm is not None:  # e.g. channels-last conv currents: scan in memory order, keep the layout
        inv = [perm.index(d) for d in range(len(perm))]
        s, v = lif_scan(
            x.permute(perm),
            None if fresh else v0.permute([p - 1 for p in perm[1:]]),
            vth_t,
            decay_t,
            surrogate,
            width,
            reset,
            detach_reset,
        )
        return s.permute(inv), v.permute([i - 1 for i in inv[1:]])
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, v0, vth_t, decay_t))
    if not needs_grad:
        return forward_nograd(x, v0, vth_t, decay_t, hard)
    return _LIFScan.apply(x, v0, vth_t, decay_t, surrogate, width, hard, bool(detach_reset), fresh)


def lif_scan_reference(x, v0, vth, decay, surrogate, reset="hard", detach_reset=False):
    """The plain autograd loop over the tutorial's recurrence (what the fused scan must equal)."""
    v = torch.zeros_like(x[0]) if v0 is None else v0
    out = []
    for t in range(x.shape[0]):
        last = surrogate(v - vth)
        if detach_reset:
            last = last.detach()
        if reset == "hard":  # noqa: SIM108 - one branch per reset rule
            v = v * (1 - last) * decay + x[t]
        else:
            v = (v - vth * last) * decay + x[t]
        out.append(surrogate(v - vth))
    return torch.stack(out), v

"""Optional native CPU kernels (``snn_lab/_native/csrc/engine.c``), loaded by ctypes.

Nothing depends on them: without a C compiler (or with ``SNN_LAB_NATIVE=0``) every
caller falls back to the pure-PyTorch path, which gives the same spikes. Building,
caching and the one warning when they are unavailable belong to :mod:`snn_lab._native`.

All functions take contiguous float32 CPU tensors; the wrappers check this.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from .._native import build

__all__ = [
    "SURROGATE_KINDS",
    "available",
    "conv_fwd",
    "conv_wgrad",
    "csr",
    "lif_bwd",
    "lif_fwd",
    "spmm_fwd",
    "spmm_wgrad",
    "status",
    "torch_bernoulli",
    "torch_rand",
]

#: surrogate names the C backward knows (index = kind code)
SURROGATE_KINDS = {"rectangle": 0, "triangle": 1, "sigmoid": 2, "atan": 3}

_loaded: dict[str, ctypes.CDLL] = {}  # "lib": the bound library, once loaded


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, i32, f32, p = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    lib.snn_csr_count.argtypes = [p, i64, i64, p, i32]
    lib.snn_csr_count.restype = i64
    lib.snn_csr_fill.argtypes = [p, i64, i64, p, p, i32]
    lib.snn_pack_tiles.argtypes = [p, p, i64, i64, i32]
    lib.snn_unpack_tiles_t.argtypes = [p, p, i64, i64, i32]
    lib.snn_pack_tiles_t.argtypes = [p, p, i64, i64, i32]
    lib.snn_spmm_fwd.argtypes = [p, p, p, i64, p, p, i64, i64, i32]
    lib.snn_spmm_wgrad.argtypes = [p, p, p, p, i64, i64, i64, i32]
    lib.snn_lif_fwd.argtypes = [p, p, p, p, p, i64, i64, f32, f32, i32, i64, i32]
    lib.snn_lif_bwd.argtypes = [p, p, p, p, i64, i64, f32, f32, i32, i32, i32, f32, p, i32]
    lib.snn_conv_fwd.argtypes = [p, p, p, p, p, i64, p, i32]
    lib.snn_conv_wgrad.argtypes = [p, p, p, p, p, i64, p, i32]
    lib.snn_bn_stats.argtypes = [p, i64, i64, p, i32]
    lib.snn_bn_pool_fwd.argtypes = [p, p, p, p, p, i64, i64, i64, i64, i32]
    lib.snn_bn_pool_bwd_sums.argtypes = [p, p, p, p, p, p, i64, i64, i64, i64, i32]
    lib.snn_bn_pool_bwd_dy.argtypes = [p, p, p, p, p, p, p, p, i64, i64, i64, i64, i32]
    lib.snn_conv1_fwd.argtypes = [p, p, p, p, i64, p, i32]
    lib.snn_conv1_wgrad.argtypes = [p, p, p, p, i64, p, i32]
    lib.snn_cbp_stats.argtypes = [p, p, p, p, i64, p, p, i32]
    lib.snn_cbp_fwd.argtypes = [p, p, p, p, i64, p, p, p, p, p, i32]
    lib.snn_cbp_bwd_sums.argtypes = [p, p, p, p, i64, p, p, p, p, p, p, i32]
    lib.snn_cbp_wgrad.argtypes = [p, p, p, p, i64, p, p, p, p, p, p, p, p, p, p, i32]
    lib.snn_tm_count.argtypes = [p, i64, i64, i64, p, p, p, i32]
    lib.snn_bern_tm_count.argtypes = [p, p, ctypes.c_uint64, i64, i64, i64, p, p, p, i32]
    lib.snn_bern_tm_count.restype = i64
    lib.snn_tm_count.restype = i64
    lib.snn_tm_fill.argtypes = [p, i64, i64, p, p, p, i32]
    lib.snn_tm_fwd.argtypes = [p, p, p, p, i64, p, p, i64, i64, i64, i32, i32, ctypes.c_float, ctypes.c_float, p]
    lib.snn_tm_fwd.restype = i32
    lib.snn_tm_wgrad.argtypes = [p, p, p, p, p, p, i64, i64, i64, i64, i32]
    lib.snn_thin_mm.argtypes = [p, p, p, i64, i64, i64, i32]
    lib.snn_mt_uniform.argtypes = [p, p, p, p, i64]
    lib.snn_mt_uniform.restype = i32
    lib.snn_mt_bernoulli.argtypes = [p, p, p, p, i64, ctypes.c_double]
    lib.snn_mt_bernoulli.restype = i32
    for f in (
        "snn_tm_fill",
        "snn_tm_wgrad",
        "snn_csr_fill",
        "snn_pack_tiles",
        "snn_pack_tiles_t",
        "snn_unpack_tiles_t",
        "snn_spmm_fwd",
        "snn_spmm_wgrad",
        "snn_lif_fwd",
        "snn_lif_bwd",
        "snn_conv_fwd",
        "snn_conv_wgrad",
        "snn_bn_stats",
        "snn_bn_pool_fwd",
        "snn_bn_pool_bwd_sums",
        "snn_bn_pool_bwd_dy",
        "snn_conv1_fwd",
        "snn_conv1_wgrad",
        "snn_cbp_stats",
        "snn_cbp_fwd",
        "snn_cbp_bwd_sums",
        "snn_cbp_wgrad",
        "snn_thin_mm",
    ):
        getattr(lib, f).restype = None
    return lib


def available() -> bool:
    """True when the kernels are built and loaded (builds them on the first call)."""
    if "lib" not in _loaded:
        try:
            _loaded["lib"] = _bind(build.load("engine"))
        except build.NativeUnavailableError:  # already logged once by _native
            return False
    return True


def status() -> dict[str, Any]:
    """Which path the engine's kernels take, for logs and ``bench.json``: ``available``,
    ``kernels`` ("native" or "pytorch"), ``path`` (= ``library``), ``error``, ``disabled``."""
    ok = available()
    st = build.status("engine")
    return {"available": ok, **st, "path": st["library"]}


def _lib_or_raise() -> ctypes.CDLL:
    if not available():
        raise RuntimeError(f"native kernels unavailable: {build.status('engine')['error']}")
    return _loaded["lib"]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(*ts: torch.Tensor | None) -> None:
    for t in ts:
        if t is not None and (t.device.type != "cpu" or not t.is_contiguous()):
            raise ValueError("native kernels take contiguous CPU tensors")


THIN_MAX_K = 32  # thin_mm's use: K up to this (beyond it BLAS's GEMM is the faster)


def thin_mm(G: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``G[M, K] @ W[K, N]`` for a small ``K`` (see ``snn_thin_mm``)."""
    _check(G, W)
    M, K = G.shape
    N = W.shape[1]
    out = torch.empty(M, N, dtype=torch.float32)
    _lib_or_raise().snn_thin_mm(_ptr(G), _ptr(W), _ptr(out), M, K, N, _nt(M * K * N, M))
    return out


def _nt(work: int = 1 << 30, units: int = 1 << 30) -> int:
    """Threads for a kernel doing ``work`` float operations split over ``units``
    independent pieces: one below ~256k (waking a thread costs more than it saves there,
    and far more on an oversubscribed machine), never more than there are pieces."""
    if work < (1 << 18):
        return 1
    return max(1, min(torch.get_num_threads(), units))


def csr(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows of a binary float32 matrix ``X[M, K]`` as ``(row_ptr int64[M+1], col int32[nnz])``;
    ``None`` when ``X`` has an entry other than 0 and 1."""
    _check(X)
    M, K = X.shape
    row_ptr = torch.empty(M + 1, dtype=torch.int64)
    nt = _nt(M * K, M)
    nnz = _lib_or_raise().snn_csr_count(_ptr(X), M, K, _ptr(row_ptr), nt)
    if nnz < 0:
        return None
    col = torch.empty(int(nnz) + 1, dtype=torch.int32)  # one spare slot (see snn_csr_fill)
    _lib_or_raise().snn_csr_fill(_ptr(X), M, K, _ptr(row_ptr), _ptr(col), nt)
    return row_ptr, col


TILE = 64  # must match csrc/common.h


def pack_tiles(A: torch.Tensor) -> torch.Tensor:
    """``A[K, N]`` -> column tiles ``[ceil(N / TILE), K, TILE]`` (zero-padded)."""
    _check(A)
    K, N = A.shape
    Ap = torch.empty((N + TILE - 1) // TILE, K, TILE, dtype=torch.float32)
    _lib_or_raise().snn_pack_tiles(_ptr(A), _ptr(Ap), K, N, _nt(K * N, K))
    return Ap


def pack_weight(W: torch.Tensor) -> torch.Tensor:
    """``pack_tiles(W.t())`` for a Linear weight ``W[N, K]``, without the transpose copy."""
    _check(W)
    N, K = W.shape
    Ap = torch.empty((N + TILE - 1) // TILE, K, TILE, dtype=torch.float32)
    _lib_or_raise().snn_pack_tiles_t(_ptr(W), _ptr(Ap), K, N, _nt(K * N, (N + TILE - 1) // TILE))
    return Ap


def spmm_fwd(row_ptr, col, Wp: torch.Tensor, bias: torch.Tensor | None, M: int, N: int) -> torch.Tensor:
    """``X @ W^T + bias`` from X's rows; ``Wp = pack_tiles(W^T)``."""
    _check(Wp, bias)
    K = Wp.shape[1]
    out = torch.empty(M, N, dtype=torch.float32)
    work = (col.numel() + M) * N
    _lib_or_raise().snn_spmm_fwd(_ptr(row_ptr), _ptr(col), _ptr(Wp), K, _ptr(bias), _ptr(out), M, N, _nt(work, M))
    return out


def _unpack_t(dWp: torch.Tensor, K: int, N: int) -> torch.Tensor:
    """``[N, K]`` (``nn.Linear``'s weight layout) from the tiles of a ``[K, N]`` product."""
    dW = torch.empty(N, K, dtype=torch.float32)
    _lib_or_raise().snn_unpack_tiles_t(_ptr(dWp), _ptr(dW), K, N, _nt(K * N, N))
    return dW


def spmm_wgrad(row_ptr, col, G: torch.Tensor, K: int) -> torch.Tensor:
    """The weight gradient ``G^T @ X`` (``[N, K]``, = ``(X^T @ G)^T``) from X's rows."""
    _check(G)
    M, N = G.shape
    dWp = torch.zeros((N + TILE - 1) // TILE, K, TILE, dtype=torch.float32)
    _lib_or_raise().snn_spmm_wgrad(
        _ptr(row_ptr), _ptr(col), _ptr(G), _ptr(dWp), K, M, N, _nt((col.numel() + M) * N, (N + TILE - 1) // TILE)
    )
    return _unpack_t(dWp, K, N)


MAX_T = 64  # time steps a temporal mask holds


def tmask(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
    """Spike train ``X[T, B, K]`` (binary float32, ``T <= 64``) grouped per sample:
    ``(row_ptr int64[B+1], cols int32[P], masks int64[P], n_spikes)`` with one entry per
    (sample, input) that spikes, bit ``t`` of its mask = ``X[t, b, k]``; ``None`` when
    ``X`` is not binary."""
    _check(X)
    T, B, K = X.shape
    if T > MAX_T:
        raise ValueError(f"temporal masks hold at most {MAX_T} steps, got T={T}")
    Mk = torch.empty(B, K, dtype=torch.int64)
    row_ptr = torch.empty(B + 1, dtype=torch.int64)
    nspk = ctypes.c_int64(0)
    nt = _nt(T * B * K, B)
    npairs = _lib_or_raise().snn_tm_count(_ptr(X), T, B, K, _ptr(Mk), _ptr(row_ptr), ctypes.byref(nspk), nt)
    if npairs < 0:
        return None
    cols = torch.empty(max(int(npairs), 1), dtype=torch.int32)
    masks = torch.empty(max(int(npairs), 1), dtype=torch.int64)
    _lib_or_raise().snn_tm_fill(_ptr(Mk), B, K, _ptr(row_ptr), _ptr(cols), _ptr(masks), nt)
    return row_ptr, cols, masks, int(nspk.value)


def bernoulli_tmask(
    P: torch.Tensor, T: int, U: torch.Tensor | None = None, key: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """:func:`tmask` of the Bernoulli train ``X[t, b, k] = u[t, b, k] < P[b, k]`` without
    forming it: ``u`` from ``U[T, B, K]`` (uniforms in [0, 1)), or when ``U`` is None from
    the kernel's counter-based hash of ``(key, b, t, k)`` (only where ``P > 0``)."""
    _check(P, U)
    B, K = P.shape
    if not 1 <= T <= MAX_T:
        raise ValueError(f"temporal masks hold 1 to {MAX_T} steps, got T={T}")
    if U is not None and tuple(U.shape) != (T, B, K):
        raise ValueError(f"uniforms of shape {tuple(U.shape)} for T={T} and P of shape {tuple(P.shape)}")
    Mk = torch.empty(B, K, dtype=torch.int64)
    row_ptr = torch.empty(B + 1, dtype=torch.int64)
    nspk = ctypes.c_int64(0)
    nt = _nt(T * B * K, B)
    npairs = _lib_or_raise().snn_bern_tm_count(
        _ptr(U), _ptr(P), int(key) & 0xFFFFFFFFFFFFFFFF, T, B, K, _ptr(Mk), _ptr(row_ptr), ctypes.byref(nspk), nt
    )
    cols = torch.empty(max(int(npairs), 1), dtype=torch.int32)
    masks = torch.empty(max(int(npairs), 1), dtype=torch.int64)
    _lib_or_raise().snn_tm_fill(_ptr(Mk), B, K, _ptr(row_ptr), _ptr(cols), _ptr(masks), nt)
    return row_ptr, cols, masks, int(nspk.value)


def tm_fwd(tm, Wp: torch.Tensor, bias: torch.Tensor | None, T: int, B: int, N: int) -> torch.Tensor:
    """``X @ W^T + bias`` as ``[T*B, N]`` from :func:`tmask` pairs; ``Wp = pack_tiles(W^T)``."""
    out = torch.empty(T * B, N, dtype=torch.float32)
    _tm_fwd(tm, Wp, bias, T, B, N, out)
    return out


def tm_fwd_lif(
    tm, Wp: torch.Tensor, bias: torch.Tensor | None, T: int, B: int, N: int, vth: float, decay: float, hard: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(V, S)`` ``[T*B, N]``: :func:`tm_fwd`'s currents scanned by :func:`lif_fwd` from a
    zero membrane (the same floats) in the same pass, the currents never stored. None
    with one column tile (``N <= TILE``): scan :func:`tm_fwd`'s output instead."""
    if N <= TILE:
        return None
    V = torch.empty(T * B, N, dtype=torch.float32)
    S = torch.empty(T * B, N, dtype=torch.float32)
    _tm_fwd(tm, Wp, bias, T, B, N, V, (1 if hard else 2, vth, decay, S))
    return V, S


def _tm_fwd(tm, Wp, bias, T: int, B: int, N: int, out: torch.Tensor, lif: tuple | None = None) -> None:
    _check(Wp, bias)
    row_ptr, cols, masks = tm[:3]
    kind, vth, decay, S = lif if lif is not None else (0, 0.0, 0.0, None)
    rc = _lib_or_raise().snn_tm_fwd(
        _ptr(row_ptr),
        _ptr(cols),
        _ptr(masks),
        _ptr(Wp),
        Wp.shape[1],
        _ptr(bias),
        _ptr(out),
        T,
        B,
        N,
        _nt(cols.numel() * N * 4, B),
        kind,
        vth,
        decay,
        _ptr(S),
    )
    if rc != 0:
        raise MemoryError(f"snn_tm_fwd could not allocate its spike lists ({int(cols.numel())} pairs, T={T})")


def tm_wgrad(tm, G: torch.Tensor, T: int, B: int, K: int, bias_grad: bool = False):
    """The weight gradient ``G^T @ X`` (``[N, K]``) from :func:`tmask` pairs; ``G[T*B, N]``.
    ``bias_grad``: returns ``(dW, G.sum(0))``, the column sums taken in the same pass
    (another summation order than torch's: float rounding)."""
    _check(G)
    row_ptr, cols, masks = tm[:3]
    N = G.shape[1]
    dWp = torch.zeros((N + TILE - 1) // TILE, K, TILE, dtype=torch.float32)
    db = torch.empty(N, dtype=torch.float32) if bias_grad else None
    _lib_or_raise().snn_tm_wgrad(
        _ptr(row_ptr),
        _ptr(cols),
        _ptr(masks),
        _ptr(G),
        _ptr(dWp),
        _ptr(db),
        K,
        T,
        B,
        N,
        _nt(cols.numel() * N * 4, (N + TILE - 1) // TILE),
    )
    dW = _unpack_t(dWp, K, N)
    return (dW, db) if bias_grad else dW


def lif_fwd(
    x: torch.Tensor, v0: torch.Tensor, vth: float, decay: float, hard: bool, keep_v: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(V[T, ...] or None, spikes[T, ...], v_last)`` for currents ``x[T, ...]``. ``x``
    may be one current repeated over time (stride 0 over ``T``, e.g. ``expand``)."""
    T = x.shape[0]
    if T > 1 and x.stride(0) == 0:
        x1, xstride = x[0], 0
    else:
        x1, xstride = x, x[0].numel()
    _check(x1, v0)
    P = x[0].numel()
    V = torch.empty(x.shape, dtype=x.dtype) if keep_v else None
    S = torch.empty(x.shape, dtype=x.dtype)
    vlast = torch.empty_like(v0)
    _lib_or_raise().snn_lif_fwd(
        _ptr(x1), _ptr(v0), _ptr(V), _ptr(S), _ptr(vlast), T, P, vth, decay, int(hard), xstride, _nt(T * P * 4, P // 8)
    )
    return V, S, vlast


def lif_bwd(
    V: torch.Tensor,
    gS: torch.Tensor | None,
    gvlast: torch.Tensor | None,
    vth: float,
    decay: float,
    hard: bool,
    detach: bool,
    kind: int,
    width: float,
    want_decay: bool = False,
) -> tuple[torch.Tensor, float | None]:
    """``(dL/dx, s)`` of :func:`lif_fwd` (``dL/dx`` = ``dL/dV``); with ``want_decay``,
    ``s`` = the sum over ``t >= 1`` of ``dL/dV_t`` times the previous membrane after its
    reset (the decay gradient but for the first step's term), else None."""
    _check(V, gS, gvlast)
    T = V.shape[0]
    P = V[0].numel()
    G = torch.empty_like(V)
    gd = ctypes.c_double(0.0)
    _lib_or_raise().snn_lif_bwd(
        _ptr(V),
        _ptr(gS),
        _ptr(gvlast),
        _ptr(G),
        T,
        P,
        vth,
        decay,
        int(hard),
        int(detach),
        kind,
        width,
        ctypes.byref(gd) if want_decay else None,
        _nt(T * P * 8, P // 8),
    )
    return G, (gd.value if want_decay else None)


def conv_geometry(x_shape, weight_shape, padding) -> tuple[int, ...]:
    """``(H, W, Ci, Ho, Wo, Co, kh, kw, ph, pw)`` of a stride-1 convolution."""
    _, Ci, H, W = x_shape
    Co, _, kh, kw = weight_shape
    ph, pw = padding
    return (H, W, Ci, H + 2 * ph - kh + 1, W + 2 * pw - kw + 1, Co, kh, kw, ph, pw)


def conv_fwd(index, Wt: torch.Tensor, bias: torch.Tensor | None, N: int, geom: tuple[int, ...]) -> torch.Tensor:
    """Channels-last output ``[N, Ho, Wo, Co]`` of a stride-1 conv of binary images given
    as :func:`csr` rows over ``[N, H*W*Ci]`` (channels-last); ``Wt[kh, kw, Ci, Co]``."""
    _check(Wt, bias)
    row_ptr, col = index
    _, _, _, Ho, Wo, Co, kh, kw, _, _ = geom
    out = torch.empty(N, Ho, Wo, Co, dtype=torch.float32)
    g = (ctypes.c_int64 * 10)(*geom)
    work = (col.numel() * kh * kw + N * Ho * Wo) * Co
    _lib_or_raise().snn_conv_fwd(_ptr(row_ptr), _ptr(col), _ptr(Wt), _ptr(bias), _ptr(out), N, g, _nt(work, N))
    return out


def conv_wgrad(index, G: torch.Tensor, N: int, geom: tuple[int, ...]) -> torch.Tensor:
    """``dL/dWt`` ``[kh, kw, Ci, Co]`` from the output gradient ``G[N, Ho, Wo, Co]``
    (contiguous, channels-last) and the input's :func:`csr` rows."""
    _check(G)
    row_ptr, col = index
    _, _, Ci, _, _, Co, kh, kw, _, _ = geom
    nt = _nt(col.numel() * kh * kw * Co, N)
    dW = torch.empty(kh, kw, Ci, Co, dtype=torch.float32)
    parts = torch.zeros(nt, kh, kw, Ci, Co, dtype=torch.float32)
    g = (ctypes.c_int64 * 10)(*geom)
    _lib_or_raise().snn_conv_wgrad(_ptr(row_ptr), _ptr(col), _ptr(G), _ptr(dW), _ptr(parts), N, g, nt)
    return dW


def bn_stats(Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(sum, sum of squares)`` (float64) of a channels-last ``Y[..., C]``
    (contiguous in that order)."""
    _check(Y)
    C = Y.shape[-1]
    rows = Y.numel() // C
    nt = _nt(Y.numel(), rows)
    acc = torch.zeros(nt, 2, C, dtype=torch.float64)
    _lib_or_raise().snn_bn_stats(_ptr(Y), rows, C, _ptr(acc), nt)
    return acc[0, 0], acc[0, 1]


def bn_pool_fwd(Y: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_pool2d(Y * alpha + beta, 2)`` and the winning window entry (uint8, 0..3)
    for ``Y[N, H, W, C]`` (channels-last, contiguous, ``C % 8 == 0``)."""
    _check(Y, alpha, beta)
    N, H, W, C = Y.shape
    out = torch.empty(N, H // 2, W // 2, C, dtype=torch.float32)
    arg = torch.empty(N, H // 2, W // 2, C, dtype=torch.uint8)
    _lib_or_raise().snn_bn_pool_fwd(
        _ptr(Y), _ptr(alpha), _ptr(beta), _ptr(out), _ptr(arg), N, H, W, C, _nt(Y.numel() * 3, N)
    )
    return out, arg


def bn_pool_bwd_sums(Y, arg, gP, mean, invstd) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(sum g, sum g * xhat)`` (float64) over the pooled gradient ``gP``."""
    _check(Y, arg, gP, mean, invstd)
    N, H, W, C = Y.shape
    nt = _nt(gP.numel() * 4, N)
    acc = torch.zeros(nt, 2, C, dtype=torch.float64)
    _lib_or_raise().snn_bn_pool_bwd_sums(
        _ptr(Y), _ptr(arg), _ptr(gP), _ptr(mean), _ptr(invstd), _ptr(acc), N, H, W, C, nt
    )
    return acc[0, 0], acc[0, 1]


def bn_pool_bwd_dy(Y, arg, gP, a, b, k, mean) -> torch.Tensor:
    """``dL/dY`` ``[N, H, W, C]``: ``a * g_full + b + k * (Y - mean)`` per channel."""
    _check(Y, arg, gP, a, b, k, mean)
    N, H, W, C = Y.shape
    dY = torch.empty_like(Y)
    _lib_or_raise().snn_bn_pool_bwd_dy(
        _ptr(Y), _ptr(arg), _ptr(gP), _ptr(a), _ptr(b), _ptr(k), _ptr(mean), _ptr(dY), N, H, W, C, _nt(Y.numel() * 3, N)
    )
    return dY


# -- conv -> BatchNorm -> max-pool on input spikes that need no gradient (recomputing the conv)
def _g(geom: tuple[int, ...]):
    return (ctypes.c_int64 * 10)(*geom)


def cbp_stats(index, Wt, bias, N: int, geom) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(sum, sum of squares)`` (float64) of the conv output, not stored."""
    _check(Wt, bias)
    Co, nt = geom[5], _nt(index[1].numel() * geom[6] * geom[7] * geom[5], N)
    acc = torch.zeros(nt, 2, Co, dtype=torch.float64)
    _lib_or_raise().snn_cbp_stats(_ptr(index[0]), _ptr(index[1]), _ptr(Wt), _ptr(bias), N, _g(geom), _ptr(acc), nt)
    return acc[0, 0], acc[0, 1]


def cbp_fwd(index, Wt, bias, N: int, geom, alpha, beta) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_pool2d(conv * alpha + beta, 2)`` (channels-last ``[N, Ho/2, Wo/2, Co]``) and
    the winning window entries."""
    _check(Wt, bias, alpha, beta)
    Ho, Wo, Co = geom[3], geom[4], geom[5]
    out = torch.empty(N, Ho // 2, Wo // 2, Co, dtype=torch.float32)
    arg = torch.empty(N, Ho // 2, Wo // 2, Co, dtype=torch.uint8)
    nt = _nt(index[1].numel() * geom[6] * geom[7] * Co + N * Ho * Wo * Co, N)
    _lib_or_raise().snn_cbp_fwd(
        _ptr(index[0]),
        _ptr(index[1]),
        _ptr(Wt),
        _ptr(bias),
        N,
        _g(geom),
        _ptr(alpha),
        _ptr(beta),
        _ptr(out),
        _ptr(arg),
        nt,
    )
    return out, arg


def cbp_bwd_sums(index, Wt, bias, N: int, geom, arg, gP, mean, invstd) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(sum g, sum g * xhat)`` (float64) at the winning entries."""
    _check(Wt, bias, arg, gP, mean, invstd)
    Co = geom[5]
    nt = _nt(index[1].numel() * geom[6] * geom[7] * Co + gP.numel() * 4, N)
    acc = torch.zeros(nt, 2, Co, dtype=torch.float64)
    _lib_or_raise().snn_cbp_bwd_sums(
        _ptr(index[0]),
        _ptr(index[1]),
        _ptr(Wt),
        _ptr(bias),
        N,
        _g(geom),
        _ptr(arg),
        _ptr(gP),
        _ptr(mean),
        _ptr(invstd),
        _ptr(acc),
        nt,
    )
    return acc[0, 0], acc[0, 1]


def cbp_wgrad(index, Wt, bias, N: int, geom, arg, gP, a, b, k, mean, want_bias: bool):
    """``(dL/dWt [kh, kw, Ci, Co], dL/dbias [Co] or None)`` of the conv."""
    _check(Wt, bias, arg, gP, a, b, k, mean)
    _, _, Ci, Ho, Wo, Co, kh, kw, _, _ = geom
    nt = _nt(index[1].numel() * kh * kw * Co * 3 + N * Ho * Wo * Co, N)
    dW = torch.empty(kh, kw, Ci, Co, dtype=torch.float32)
    db = torch.empty(Co, dtype=torch.float32) if want_bias else None
    parts = torch.zeros(nt, kh * kw * Ci * Co + Co, dtype=torch.float32)
    _lib_or_raise().snn_cbp_wgrad(
        _ptr(index[0]),
        _ptr(index[1]),
        _ptr(Wt),
        _ptr(bias),
        N,
        _g(geom),
        _ptr(arg),
        _ptr(gP),
        _ptr(a),
        _ptr(b),
        _ptr(k),
        _ptr(mean),
        _ptr(dW),
        _ptr(parts),
        _ptr(db),
        nt,
    )
    return dW, db


CONV1_MAX_TAPS = 64  # kernel taps (kh * kw) conv1_fwd/conv1_wgrad hold (C1_TAPS_MAX)


def conv1_fwd(X: torch.Tensor, Wt: torch.Tensor, bias: torch.Tensor | None, geom) -> torch.Tensor:
    """Channels-last ``[N, Ho, Wo, Co]`` conv of one-channel images ``X[N, H, W]``;
    ``Wt[kh, kw, Co]``."""
    _check(X, Wt, bias)
    N = X.shape[0]
    Ho, Wo, Co = geom[3], geom[4], geom[5]
    out = torch.empty(N, Ho, Wo, Co, dtype=torch.float32)
    nt = _nt(N * Ho * Wo * Co * geom[6] * geom[7], N)
    _lib_or_raise().snn_conv1_fwd(_ptr(X), _ptr(Wt), _ptr(bias), _ptr(out), N, _g(geom), nt)
    return out


def conv1_wgrad(X: torch.Tensor, G: torch.Tensor, geom) -> torch.Tensor:
    """``dL/dWt`` ``[kh, kw, Co]`` of :func:`conv1_fwd` from ``G[N, Ho, Wo, Co]``."""
    _check(X, G)
    N = X.shape[0]
    kh, kw, Co = geom[6], geom[7], geom[5]
    nt = _nt(G.numel() * kh * kw, N)
    dW = torch.empty(kh, kw, Co, dtype=torch.float32)
    parts = torch.zeros(nt, kh * kw * Co, dtype=torch.float32)
    _lib_or_raise().snn_conv1_wgrad(_ptr(X), _ptr(G), _ptr(dW), _ptr(parts), N, _g(geom), nt)
    return dW


# torch's CPU generator state (CPUGeneratorImplState, get_state()): the legacy record's
# int64 seed, int32 left, int32 seeded, uint64 next, uint64[624] MT words, the double
# normal cache (x, y, rho, int32 valid), then the float normal cache
_GEN_STATE_BYTES = 5056
_LEFT, _SEEDED, _NEXT, _WORDS, _DOUBLE_NORMAL_VALID = 8, 12, 16, 24, 5040
_MT_WORDS = 624
_RAND_MIN = 1 << 14  # below this torch's own draw is as fast (the state round trip costs ~10 us)


def _continue_stream(gen: torch.Generator, kernel: str, out: torch.Tensor, *args: Any) -> bool:
    """Run ``kernel(words, &left, &next, out, n, *args)`` on ``gen``'s MT19937 stream and
    write the advanced stream back into ``gen``. Only the MT words and the stream position
    (``left``, ``next``) are rewritten. False (``gen`` untouched) when torch's numbers are
    not assured: no kernels, a non-CPU generator, a state layout other than this torch's,
    or a state that carries a cached double normal sample (left to torch, so that nothing
    but the stream position can change)."""
    if gen.device.type != "cpu" or not available():
        return False
    st = gen.get_state()
    if (
        st.numel() != _GEN_STATE_BYTES
        or int(st[_SEEDED : _SEEDED + 4].view(torch.int32)) != 1
        or int(st[_DOUBLE_NORMAL_VALID : _DOUBLE_NORMAL_VALID + 4].view(torch.int32)) != 0
    ):
        return False
    words = st[_WORDS : _WORDS + 8 * _MT_WORDS].view(torch.int64)
    s = words.to(torch.int32)  # the uint32 words, bit for bit
    left = ctypes.c_int64(int(st[_LEFT : _LEFT + 4].view(torch.int32)))
    nxt = ctypes.c_int64(int(st[_NEXT : _NEXT + 8].view(torch.int64)))
    fn = getattr(_lib_or_raise(), kernel)
    if fn(_ptr(s), ctypes.byref(left), ctypes.byref(nxt), _ptr(out), out.numel(), *args) != 0:
        return False
    words.copy_(s.to(torch.int64) & 0xFFFFFFFF)
    st[_LEFT : _LEFT + 4].view(torch.int32).fill_(left.value)
    st[_NEXT : _NEXT + 8].view(torch.int64).fill_(nxt.value)
    gen.set_state(st)
    return True


def torch_rand(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """``torch.rand(shape, generator=generator)`` (float32, CPU): the same numbers, and the
    generator left in the same state, with the MT19937 stream continued by the kernel
    (``snn_mt_uniform``) instead of one number at a time under torch's lock; ``torch.rand``
    itself where that is not assured (see :func:`_continue_stream`)."""
    out = torch.empty(shape, dtype=torch.float32)
    if out.numel() < _RAND_MIN or not _continue_stream(
        torch.default_generator if generator is None else generator, "snn_mt_uniform", out
    ):
        return torch.rand(shape, generator=generator)
    return out


def torch_bernoulli(shape: tuple[int, ...], p: float, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """``torch.empty(shape).bernoulli_(p, generator=generator)`` as PyTorch's default CPU
    kernel draws it (one 53-bit double per element from two MT19937 outputs, ``u < p``),
    continued by ``snn_mt_bernoulli``. None when the stream cannot be continued here;
    whether this torch build draws that way is the caller's to check (a build may draw
    ``bernoulli_`` with MKL instead)."""
    out = torch.empty(shape, dtype=torch.float32)
    gen = torch.default_generator if generator is None else generator
    if not _continue_stream(gen, "snn_mt_bernoulli", out, ctypes.c_double(float(p))):
        return None
    return out
